"""`lmforge compress report MODEL`: the trade-off table of a model and its compressed variants.

Rows: the model itself (and, for a GGUF model, its dequantized HF form: the common reference), then
every registered descendant made by `quantize`, `prune` or `export`, each with the three numbers of
compress/measure.py (measured now for a row that has none on this text and thread count) and, with
`--suite`, an `lmforge eval` suite score. `--build TYPES` first makes the missing quantizations
(past the quality gate too: a report row is a measurement, not an endorsement).

Written to LMFORGE_HOME/reports/compress/<model>/ (report.md, report.png: perplexity increase against
size, marker area ∝ decode tokens/s) and stored in the model's manifest (metrics.compress_report),
which `lmforge models show` prints and the console's Models page draws.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.compress.measure import MeasureConfig, check_measurable, measure_model
from lmforge.errors import LmforgeError
from lmforge.home import Registry

MADE_BY = ("quantize:", "prune:", "export:")


@dataclass
class ReportConfig:
    build: list[str] = field(default_factory=list)
    """Quantization types to make first when missing (`all` = every type)."""
    suite: str | None = None
    """An `lmforge eval` suite scored on every row (slow: it generates)."""
    measure: MeasureConfig = field(default_factory=MeasureConfig)


def variant_of(m: Any, registry: Registry) -> str:
    """A row's label: hf, gguf-<type>, int8/nf4, pruned-<method>-<pct>; "(pulled)" for a catalog file."""
    if m.source.startswith("quantize:"):
        return m.source.removeprefix("quantize:")
    if m.source.startswith("prune:"):
        return f"pruned-{m.config.get('method')}-{round(100 * float(m.config.get('sparsity', 0)))}"
    pulled = " (pulled)" if m.source.startswith("pypi:") else ""
    if m.format == "gguf":
        from lmforge.compress.quantize import gguf_file_type

        ftype = m.config.get("file_type") or gguf_file_type(registry.model_path(m)) or "?"
        return f"gguf-{str(ftype).lower()}{pulled}"
    return "hf"


def rows_for(registry: Registry, model: str) -> list[str]:
    """The model, its dequantized HF form, and their compressed descendants, in registration order."""
    names = [model]
    hf = f"{model}-hf"
    if registry.exists(hf) and model in registry.get(hf).parents:
        names.append(hf)
    by_parent: dict[str, list[Any]] = {}
    for m in sorted(registry.list(), key=lambda m: m.created):
        for p in m.parents:
            by_parent.setdefault(p, []).append(m)
    i = 0
    while i < len(names):
        for child in by_parent.get(names[i], []):
            if (
                child.source.startswith(MADE_BY)
                and child.name not in names
                and child.kind in ("chat", "base")
            ):
                names.append(child.name)
        i += 1
    return names


def build(
    registry: Registry, model: str, types: list[str], cfg: MeasureConfig, say: Callable[[str], None]
) -> None:
    from lmforge.compress.quantize import TARGETS, QuantizeConfig
    from lmforge.compress.quantize import main as quantize

    wanted = list(TARGETS) if types == ["all"] else types
    unknown = [t for t in wanted if t not in TARGETS]
    if unknown:
        raise LmforgeError(
            f"--build: unknown type(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)} or all"
        )
    have = {
        variant_of(registry.get(n), registry) for n in rows_for(registry, model)[1:]
    }  # the root is not a product
    m = registry.get(model)
    base = f"{model}-hf" if m.format == "gguf" else model
    for t in wanted:
        if t in have:
            continue
        parent = base if (t.startswith("gguf-") or m.format == "gguf") else model
        if parent == base and not registry.exists(base):
            from lmforge.train.finetune import hf_base

            hf_base(registry, model, say)
        say(f"building {t} of {parent} ...")
        quantize(registry, parent, QuantizeConfig(to=t, force=True, measure=cfg), say=say)


def main(
    registry: Registry, model: str, cfg: ReportConfig, *, say: Callable[[str], None] = print
) -> dict[str, Any]:
    check_measurable(registry.get(model))
    if cfg.build:
        build(registry, model, cfg.build, cfg.measure, say)
    rows = []
    for name in rows_for(registry, model):
        m = registry.get(name)
        say(f"measuring {name} ...")
        got = measure_model(registry, name, cfg.measure)
        rows.append({"model": name, "variant": variant_of(m, registry), "format": m.format, "params": m.params,
                     "size_bytes": got.size_bytes, "size_mb": round(got.size_bytes / 1e6, 1), "decode_tps": got.decode_tps,
                     "perplexity": got.perplexity, "bits_per_byte": got.bits_per_byte, "engine": got.engine})  # fmt: skip
    ref = next((r for r in rows if r["format"] == "hf" and r["variant"] == "hf"), rows[0])
    for r in rows:
        r["ppl_increase_pct"] = round(100 * (r["perplexity"] / ref["perplexity"] - 1), 2)
    if cfg.suite:
        from lmforge.eval.harness import EvalConfig
        from lmforge.eval.report import evaluate_model

        for r in rows:
            say(f"suite {cfg.suite} on {r['model']} ...")
            res = evaluate_model(
                registry, r["model"], [cfg.suite], EvalConfig(), threads=cfg.measure.threads
            )[0]
            r["suite"] = {"name": cfg.suite, **res.metrics}
    folder = registry.root / "reports" / "compress" / model
    folder.mkdir(parents=True, exist_ok=True)
    text = markdown(model, ref["model"], rows, cfg)
    (folder / "report.md").write_text(text, encoding="utf-8")
    chart(model, rows, folder / "report.png")
    report = {"rows": rows, "reference": ref["model"], "markdown": str(folder / "report.md"),
              "png": str(folder / "report.png"), "created": time.time(),
              "threads": cfg.measure.threads or os.cpu_count(), "eval_tokens": cfg.measure.max_tokens}  # fmt: skip
    registry.update(model, metrics={"compress_report": report})
    return report


def markdown(model: str, ref: str, rows: list[dict[str, Any]], cfg: ReportConfig) -> str:
    suite = f" | {cfg.suite}" if cfg.suite else ""
    lines = [f"# Compression trade-offs: {model}", "",
             f"Measured on this machine; perplexity on the held-out zh+en text ({cfg.measure.max_tokens} tokens), "
             f"increase against {ref}. Decode tokens/s: greedy, after the first token.", "",
             f"| variant | model | size MB | decode tok/s | perplexity | Δ perplexity | bits/byte{suite} |",
             "|---|---|---|---|---|---|---|" + ("---|" if cfg.suite else "")]  # fmt: skip
    for r in rows:
        extra = ""
        if cfg.suite:
            score = {k: v for k, v in r["suite"].items() if k != "name"}
            extra = " | " + ", ".join(f"{k} {v:.3g}" for k, v in score.items())
        lines.append(f"| {r['variant']} | {r['model']} | {r['size_mb']:,} | {r['decode_tps']} | {r['perplexity']} | "
                     f"{r['ppl_increase_pct']:+.2f}% | {r['bits_per_byte']}{extra} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def chart(model: str, rows: list[dict[str, Any]], path: Path) -> Path:
    """Quality vs size vs speed: x size (MB, log), y perplexity increase (%), marker area ∝ tokens/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    top = max(r["decode_tps"] for r in rows) or 1
    for i, r in enumerate(sorted(rows, key=lambda r: r["size_mb"])):
        ax.scatter(r["size_mb"], r["ppl_increase_pct"], s=40 + 500 * r["decode_tps"] / top, alpha=0.6,
                   color="#1f5f9f" if r["format"] == "gguf" else "#d4861f", edgecolor="black")  # fmt: skip
        ax.annotate(
            f"{r['variant']}\n{r['decode_tps']:.0f} tok/s",
            (r["size_mb"], r["ppl_increase_pct"]),
            fontsize=7,
            xytext=(6, (4, -16, 14)[i % 3]),
            textcoords="offset points",
        )  # neighbours apart
    ax.set_xscale("log")
    ax.set_xlabel("size on disk (MB, log scale)")
    ax.set_ylabel("perplexity increase vs reference (%)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.grid(alpha=0.3)
    ax.set_title(
        f"{model}: quality vs size (marker area ∝ decode tokens/s; blue GGUF, orange HF)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def png_base64(report: dict[str, Any]) -> str:
    p = Path(report["png"])
    return base64.b64encode(p.read_bytes()).decode() if p.is_file() else ""
