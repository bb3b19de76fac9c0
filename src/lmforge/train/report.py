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

ROWS = (("val_loss", "held-out loss", False), ("val_ppl", "held-out perplexity", False),
        ("rougeL", "ROUGE-L", True), ("exact_match", "exact match", True), ("chrf", "chrF", True))  # fmt: skip
"""(key, label, higher is better)."""
LOWER_IS_BETTER = frozenset({"perplexity", "bits_per_byte", "loss", "val_loss"})
"""Suite metrics where a fall is an improvement."""


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
            worse = a > b if metric in LOWER_IS_BETTER else a < b
            verdict = (
                ""
                if a == b
                else ("worse — forgetting" if res.get("general") else "worse")
                if worse
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


def write_report(folder: Path, out: str, base: str, method: str, metrics: dict[str, Any]) -> None:
    md = markdown(out, base, method, metrics)
    (folder / "report.md").write_text(md, encoding="utf-8")
    png = chart(metrics, folder / "report.png")
    imgs = "".join(f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
                   for name, p in (("before/after", png), ("loss", folder / "loss.png")) if p.exists())  # fmt: skip
    body = "\n".join(f"<p>{html.escape(line)}</p>" if not line.startswith(("|", "#")) else
                     f"<pre>{html.escape(line)}</pre>" for line in md.splitlines() if line.strip())  # fmt: skip
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(out)}</title>"
            f"<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}pre{{margin:0}}img{{max-width:48%}}</style>"
            f"{imgs}{body}")  # fmt: skip
    (folder / "report.html").write_text(page, encoding="utf-8")


def write_align_report(folder: Path, out: str, base: str, method: str, metrics: dict[str, Any]) -> None:
    """report.md + report.html of an `lmforge align` run: held-out before/after (pairwise accuracy, margin
    and loss for reward/DPO; greedy mean reward for GRPO/RLOO) and the training curve."""
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
    md = "\n".join(lines)
    (folder / "report.md").write_text(md, encoding="utf-8")
    loss = folder / "loss.png"
    img = (f'<img alt="loss" src="data:image/png;base64,{base64.b64encode(loss.read_bytes()).decode()}">'
           if loss.exists() else "")  # fmt: skip
    body = "\n".join(f"<pre>{html.escape(line)}</pre>" if line.startswith("|") else f"<p>{html.escape(line)}</p>"
                     for line in md.splitlines() if line.strip())  # fmt: skip
    (folder / "report.html").write_text(f"<!doctype html><meta charset='utf-8'><title>{html.escape(out)}</title>"
                                        f"<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}"
                                        f"pre{{margin:0}}</style>{img}{body}", encoding="utf-8")  # fmt: skip
