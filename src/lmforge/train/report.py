"""The before/after report of a fine-tuning run: Markdown, a one-file HTML page and a PNG chart.

Written into the registered artifact's folder (report.md, report.html, report.png); the numbers are
also in its manifest (metrics.before_after), which `lmforge models show` prints. A general suite
(`--eval-suite`) whose score fell is flagged as forgetting.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from lmforge.train.compare import worse

ROWS = (("val_loss", "held-out loss", False), ("val_ppl", "held-out perplexity", False),
        ("rougeL", "ROUGE-L", True), ("exact_match", "exact match", True), ("chrf", "chrF", True))  # fmt: skip
"""(key, label, higher is better)."""


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def comparison_rows(ba: dict[str, Any]) -> list[tuple[str, Any, Any, str]]:
    """(label, before, after, verdict) for each measured metric."""
    rows = []
    for key, label, higher in ROWS:
        b, a = ba["before"].get(key), ba["after"].get(key)
        if b is None and a is None:
            continue
        verdict = ""
        if isinstance(b, int | float) and isinstance(a, int | float) and a != b:
            verdict = "better" if (a > b) == higher else "worse"
        rows.append((label, b, a, verdict))
    for suite, res in (ba.get("suites") or {}).items():
        for metric, pair in res.items():
            if metric == "general":
                continue
            b, a = pair
            verdict = (
                ""
                if a == b
                else ("worse — forgetting" if res.get("general") else "worse")
                if worse(metric, b, a)
                else "better"
            )
            rows.append((f"{suite}: {metric}", b, a, verdict))
    return rows


def markdown(out: str, base: str, method: str, metrics: dict[str, Any]) -> str:
    ba = metrics["before_after"]
    lines = [f"# {out}: {method} fine-tune of {base}", "",
             f"{metrics['steps']} steps ({metrics['epochs']} epochs of {metrics['train_examples']} examples), "
             f"{metrics['trainable_params']:,} trainable of {metrics['total_params']:,} parameters, "
             f"{metrics['tokens_per_s']} tokens/s, peak memory {metrics['peak_rss_mb']} MB, "
             f"precision {metrics['precision']['used']}.", "",
             f"Held out: {ba['held_out_examples']} examples; {ba['answered']} answered greedily before and after.", "",
             "| metric | base | fine-tuned | |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {label} | {_num(b)} | {_num(a)} | {v} |" for label, b, a, v in comparison_rows(ba)]
    lines += ["", "## Side by side", ""]
    for s in ba["samples"]:
        lines += [f"**Prompt:** {s['prompt']}", "", f"- reference: {s['reference']}", f"- base: {s['before']}",
                  f"- fine-tuned: {s['after']}", ""]  # fmt: skip
    return "\n".join(lines)


def chart(metrics: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(label, b, a) for label, b, a, _ in comparison_rows(metrics["before_after"])
            if isinstance(b, int | float) and isinstance(a, int | float) and "perplexity" not in label]  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 0.6 * max(2, len(rows)) + 1), dpi=110)
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], [b for _, b, _ in rows], height=0.4, color="#9bb7d4", label="base")
    ax.barh([y - 0.2 for y in ys], [a for _, _, a in rows], height=0.4, color="#1f5f9f", label="fine-tuned")
    ax.set_yticks(list(ys), [label for label, _, _ in rows])
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("before / after on the held-out split")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _page(folder: Path, out: str, md: str, images: tuple[str, ...]) -> None:
    """report.md, and report.html: the PNGs of `images` that exist (embedded) above the Markdown's lines."""
    (folder / "report.md").write_text(md, encoding="utf-8")
    imgs = "".join(f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode((folder / name).read_bytes()).decode()}">'
                   for name in images if (folder / name).exists())  # fmt: skip
    body = "\n".join(f"<p>{html.escape(line)}</p>" if not line.startswith(("|", "#")) else
                     f"<pre>{html.escape(line)}</pre>" for line in md.splitlines() if line.strip())  # fmt: skip
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(out)}</title>"
            f"<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}pre{{margin:0}}img{{max-width:48%}}</style>"
            f"{imgs}{body}")  # fmt: skip
    (folder / "report.html").write_text(page, encoding="utf-8")


def write_report(folder: Path, out: str, base: str, method: str, metrics: dict[str, Any]) -> None:
    chart(metrics, folder / "report.png")
    _page(folder, out, markdown(out, base, method, metrics), ("report.png", "loss.png"))


def _suite_lines(suites: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    """A Markdown table of suite scores: one row per suite metric, one column per model."""
    if not suites:
        return []
    lines = ["", "## Generation suites", "", "| suite: metric | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]  # fmt: skip
    first = suites.get(names[0], {})
    for suite, res in first.items():
        for metric in res:
            vals = [suites.get(n, {}).get(suite, {}).get(metric) for n in names]
            lines.append(f"| {suite}: {metric} | " + " | ".join(_num(v) for v in vals) + " |")
    return lines


def _judged_lines(judged: dict[str, Any] | None, tuned: str) -> list[str]:
    if not judged:
        return []
    lines = ["", f"## Win rate judged by {judged['judge']}", "",
             f"{tuned} against its base on {judged['prompts']} prompts (greedy answers, each scored by the "
             f"reward model): **{judged['win_rate']:.0%}** ({judged['wins']} wins, {judged['ties']} ties, "
             f"{judged['losses']} losses); mean score {judged['mean_score_base']} → {judged['mean_score_tuned']}.",
             ""]  # fmt: skip
    for r in judged["samples"]:
        lines += [f"**Prompt:** {r['prompt']}", "", f"- base ({r['base_score']}): {r['base']}",
                  f"- tuned ({r['tuned_score']}): {r['tuned']}", ""]  # fmt: skip
    return lines


def write_align_report(folder: Path, out: str, base: str, method: str, metrics: dict[str, Any]) -> None:
    """report.md + report.html of an `lmforge align` run: held-out before/after (pairwise accuracy, margin
    and loss for reward/DPO; greedy mean reward for GRPO/RLOO), the win rate judged by a reward model,
    the generation suites, and the training curve."""
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    lines = [f"# {out}: {method} on {base}", "",
             f"{metrics['steps']} steps, {metrics['trainable_params']:,} trainable of {metrics['total_params']:,} "
             f"parameters, peak memory {metrics['peak_rss_mb']} MB, {metrics['train_seconds']} s.", "",
             "| held out | base | aligned |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {k} | {_num(before.get(k))} | {_num(after.get(k))} |" for k in ("accuracy", "margin", "loss", "mean_reward")
              if k in after or k in before]  # fmt: skip
    if "sampled_reward_first" in metrics:
        lines += ["", f"Sampled mean reward: first fifth of the steps {metrics['sampled_reward_first']}, "
                      f"last fifth {metrics['sampled_reward_last']}."]  # fmt: skip
    lines += _judged_lines(metrics.get("judged"), out)
    lines += _suite_lines(metrics.get("suites") or {}, (base, out))
    if metrics.get("forgetting"):
        lines += ["", f"Forgetting: {', '.join(metrics['forgetting'])} fell after alignment."]
    _page(folder, out, "\n".join(lines), ("loss.png",))


def write_distill_report(folder: Path, out: str, metrics: dict[str, Any], names: dict[str, str]) -> None:
    """report.md + report.html of `lmforge distill`: the student against its teacher and against the
    same student trained without the teacher (held-out perplexity, generation suites), and the curves.
    `names`: {"teacher", "student", "baseline"} → registry names (the baseline's may be gone)."""
    c = metrics["comparison"]
    lines = [f"# {out}: distilled from {names['teacher']} ({metrics['mode']} mode)", "", metrics.get("why", ""), "",
             f"{metrics.get('steps', '-')} steps, {metrics.get('train_seconds', '-')} s, peak memory "
             f"{metrics.get('peak_rss_mb', '-')} MB.", "",
             f"Held out: {c['held_out_examples']} examples; perplexity per {c['per']}.", "",
             "| held out | teacher | student (distilled) | student without teacher |", "|---|---|---|---|",
             f"| perplexity | {_num(c['teacher_ppl'])} | {_num(c['student_ppl'])} | {_num(c['baseline_ppl'])} |"]  # fmt: skip
    if c.get("student_val_kl") is not None:
        lines.append(f"| KL(teacher ‖ student) | 0 | {_num(c['student_val_kl'])} | - |")
    if isinstance(c.get("student_ppl"), float) and isinstance(c.get("baseline_ppl"), float):
        gain = "beats" if c["student_ppl"] < c["baseline_ppl"] else "does not beat"
        lines += ["", f"The distilled student {gain} the one trained without the teacher on the same budget."]
    suites = metrics.get("suites") or {}
    cols = tuple(n for n in (names["teacher"], out, names.get("baseline", "")) if n in suites)
    lines += _suite_lines(suites, cols)
    _page(folder, out, "\n".join(lines), ("loss.png",))
