"""Running suites for registered models, storing results, and side-by-side reports.

Results go two places: the model's manifest (`metrics["eval:<suite>"]`: numbers + the exact
config), and `LMFORGE_HOME/eval/<model>/<suite>.jsonl` (every item's output, for a look by eye).
`compare` prints one table and writes `report.md`, `report.html` and one PNG bar chart per suite
(matplotlib, Agg backend; the HTML embeds the PNGs so it is one file to share).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.eval.harness import EvalConfig, Scorer, SuiteResult, load_suite, run_suite
from lmforge.home import Registry

LOWER_IS_BETTER = {"perplexity", "bits_per_byte"}


def evaluate_model(registry: Registry, model: str, suites: list[str], cfg: EvalConfig, *,
                   threads: int | None = None, progress: Callable[[str, int, int], None] | None = None,
                   backend: Any = None) -> list[SuiteResult]:  # fmt: skip
    """Run `suites` on `model` and record each result in its manifest."""
    loaded = [load_suite(s) for s in suites]  # bad suite files fail before the model loads
    m = registry.get(model)
    if backend is None:
        from lmforge.infer.loader import LoadConfig, load_backend

        if m.kind == "embedding":
            raise LmforgeError(f"{model} is an embedding model; evaluate a language model")
        backend = load_backend(registry, model, LoadConfig(logits_all=True, n_threads=threads))
    chat = cfg.chat if cfg.chat is not None else m.kind == "chat"
    scorer = Scorer(backend, chat=chat)
    results = []
    out_dir = registry.root / "eval" / model
    out_dir.mkdir(parents=True, exist_ok=True)
    for suite in loaded:
        r = run_suite(
            scorer, suite, model, cfg, (lambda d, t, s=suite.name: progress(s, d, t)) if progress else None
        )
        with (out_dir / f"{suite.name}.jsonl").open("w", encoding="utf-8") as fh:
            for row in r.items:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        registry.update(model, metrics={f"eval:{suite.name}": r.summary()})
        results.append(r)
    return results


def stored(registry: Registry, model: str, suite: str) -> dict[str, Any] | None:
    return registry.get(model).metrics.get(f"eval:{suite}")


def table(rows: dict[str, dict[str, dict[str, float]]], models: list[str]) -> str:
    """rows[suite][model] = metrics → a fixed-width table, best value per row marked with *."""
    lines = [f"{'suite':18} {'metric':14} " + " ".join(f"{m[:22]:>22}" for m in models)]
    lines.append("-" * len(lines[0]))
    for suite, per_model in rows.items():
        names = sorted({k for v in per_model.values() for k in v})
        for metric in names:
            vals = {m: per_model.get(m, {}).get(metric) for m in models}
            best = _best(metric, vals)
            cells = " ".join(
                f"{_fmt(vals[m]) + ('*' if m == best and len(models) > 1 else ' '):>22}" for m in models
            )
            lines.append(f"{suite:18} {metric:14} {cells}")
    return "\n".join(lines)


def _best(metric: str, vals: dict[str, float | None]) -> str | None:
    have = {m: v for m, v in vals.items() if v is not None}
    if not have:
        return None
    return (min if metric in LOWER_IS_BETTER else max)(have, key=lambda m: have[m])


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def chart(suite: str, per_model: dict[str, dict[str, float]], models: list[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted({k for v in per_model.values() for k in v})
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        vals = [per_model.get(m, {}).get(metric) or 0.0 for m in models]
        ax.bar(
            range(len(models)),
            vals,
            color=["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c"][: len(models)] * 5,
        )
        ax.set_xticks(range(len(models)), [m[:14] for m in models], rotation=20, fontsize=7)
        ax.set_title(metric + (" (lower is better)" if metric in LOWER_IS_BETTER else ""), fontsize=8)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=7)
    fig.suptitle(suite, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def compare(registry: Registry, models: list[str], suites: list[str], out: Path) -> tuple[str, Path]:
    """Side-by-side from stored results (run `lmforge eval` first). Writes report.md/.html and PNGs."""
    rows: dict[str, dict[str, dict[str, float]]] = {}
    configs: dict[str, dict[str, Any]] = {}
    tokenizers: dict[str, set[str]] = {}  # suite -> tokenizer fingerprints of the models compared
    for suite in suites:
        name = load_suite(suite).name
        rows[name] = {}
        tokenizers[name] = set()
        for m in models:
            got = stored(registry, m, name)
            if got is not None:
                rows[name][m] = got["metrics"]
                configs.setdefault(name, got["config"])
                if got["config"].get("tokenizer"):
                    tokenizers[name].add(got["config"]["tokenizer"])
        if not rows[name]:
            raise LmforgeError(
                f"no stored results for suite {name!r}: run `lmforge eval MODEL --suite {name}` first"
            )
    text = table(rows, models)
    notes = []
    for suite in rows:
        if len(tokenizers[suite]) > 1:
            notes.append(f"{suite}: the models' tokenizers differ, so perplexity is not comparable across them; "
                         "compare bits_per_byte (per UTF-8 byte, tokenizer-independent)")  # fmt: skip
    if notes:
        text += "\n\nnote: " + "\nnote: ".join(notes)
    out.mkdir(parents=True, exist_ok=True)
    lineage = {m: [a.name for _, a in registry.lineage(m)] for m in models}
    md = ["# Evaluation report", "", "Models: " + ", ".join(f"`{m}` ({' ← '.join(lineage[m])})" for m in models), "",
          "```", text, "```", ""]  # fmt: skip
    body = [
        f"<h1>Evaluation report</h1><p>Models: {html.escape(', '.join(models))}</p><pre>{html.escape(text)}</pre>"
    ]
    for suite, per_model in rows.items():
        png = chart(suite, per_model, models)
        (out / f"{suite}.png").write_bytes(png)
        md += [
            f"## {suite}",
            "",
            f"![{suite}]({suite}.png)",
            "",
            f"prompt: `{configs[suite].get('prompt', '')!r}`",
            "",
        ]
        body.append(f"<h2>{html.escape(suite)}</h2><img alt='{html.escape(suite)}' src='data:image/png;base64,"
                    f"{base64.b64encode(png).decode()}'><p><code>{html.escape(json.dumps(configs[suite], ensure_ascii=False))}</code></p>")  # fmt: skip
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    (out / "report.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>lmforge evaluation</title>"
        "<style>body{font-family:sans-serif;max-width:70rem;margin:2rem auto}pre{background:#f4f4f5;padding:1rem}</style>"
        + "".join(body),
        encoding="utf-8",
    )
    return text, out
