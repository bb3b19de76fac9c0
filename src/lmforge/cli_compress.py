"""The commands that shrink models — `quantize`, `prune`, `compress report` — mounted by cli.py.

Thin wrappers over lmforge.compress (cli.py's docstring): defaults come from the config dataclasses.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from lmforge.compress.measure import MeasureConfig
from lmforge.compress.prune import PruneConfig, PruneMethod
from lmforge.compress.quantize import Engine, QuantizeConfig

_Q = QuantizeConfig()
_M = MeasureConfig()
_P = PruneConfig()

EvalText = Annotated[Path | None, typer.Option("--eval-text", help="Held-out text for perplexity (default: a zh+en text shipped with lmforge).")]  # fmt: skip
Threads = Annotated[
    int | None, typer.Option(help="CPU threads for quantizing and measuring (default: all cores).")
]


def _registry():
    from lmforge.home import Registry

    return Registry()


def say(msg: str) -> None:
    print(msg, file=sys.stderr)


def _numbers(met: dict[str, Any]) -> str:
    c = met["compress"]
    d = c.get("delta") or {}
    line = (f"size {c['size_bytes'] / 1e6:,.1f} MB, decode {c['decode_tps']:.1f} tokens/s ({c['engine']}, "
            f"{c['threads']} threads), perplexity {c['perplexity']} ({c['bits_per_byte']} bits/byte)")  # fmt: skip
    if d:
        line += (f"; vs {c['parent']}: size ×{d['size_ratio']}, speed ×{d['speed_ratio']}, "
                 f"perplexity {d['ppl_increase']:+.2%}")  # fmt: skip
    return line


def quantize(
    model: Annotated[str, typer.Argument(help="A registered chat/base model (HF folder or GGUF).")],
    to: Annotated[str, typer.Option("--to", help="gguf-f16 | gguf-q8_0 | gguf-q5_k_m | gguf-q4_k_m | gguf-q4_0 | int8 | nf4.")],
    out: Annotated[str | None, typer.Option("--out", help="Registry name (default MODEL-TYPE).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Register past the quality limit; requantize a quantized GGUF.")] = False,
    max_ppl_increase: Annotated[float, typer.Option(help="Largest perplexity increase registered without --force (0.05 = 5%).")] = _Q.max_ppl_increase,
    engine: Annotated[Engine, typer.Option(help="int8: torchao (default) or bitsandbytes.")] = _Q.engine,
    eval_text: EvalText = None,
    max_eval_tokens: Annotated[int, typer.Option(help="Tokens of the held-out text scored.")] = _M.max_tokens,
    threads: Threads = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the registered manifest as JSON.")] = False,
) -> None:  # fmt: skip
    """Quantize a model and register it with its measured size, speed and quality (量化)."""
    from lmforge.compress.quantize import main as run

    cfg = QuantizeConfig(to=to, out=out, force=force, max_ppl_increase=max_ppl_increase, engine=engine,
                         measure=MeasureConfig(eval_text=eval_text, max_tokens=max_eval_tokens, threads=threads))  # fmt: skip
    m = run(_registry(), model, cfg, say=say)
    if as_json:
        print(json.dumps(asdict(m), ensure_ascii=False, indent=2))
        return
    print(f"registered {m.name} ({m.format}, {to} of {m.parents[0]}): {_numbers(m.metrics)}")


def prune(
    model: Annotated[str, typer.Argument(help="A registered chat/base model (GGUF: its dequantized HF form).")],
    sparsity: Annotated[float, typer.Option(help="Fraction removed (0-1): weights (magnitude) or neurons and KV groups (structured).")] = _P.sparsity,
    method: Annotated[PruneMethod, typer.Option(help="magnitude (zeros, file stays dense) | structured (really smaller).")] = _P.method,
    out: Annotated[str | None, typer.Option("--out", help="Registry name of the result.")] = None,
    heads: Annotated[int | None, typer.Option(help="structured: KV groups removed per layer (default floor(sparsity × kv heads)).")] = None,
    recover_steps: Annotated[int, typer.Option(help="Language-modelling steps after pruning to recover quality.")] = _P.recover_steps,
    data: Annotated[str | None, typer.Option(help="Calibration/recovery text (.txt/.md, or JSONL with text); default the bundled corpus.")] = None,
    lr: Annotated[float, typer.Option(help="Recovery learning rate.")] = _P.lr,
    eval_text: EvalText = None,
    max_eval_tokens: Annotated[int, typer.Option(help="Tokens of the held-out text scored.")] = _M.max_tokens,
    threads: Threads = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the registered manifest as JSON.")] = False,
) -> None:  # fmt: skip
    """Prune a model: unstructured magnitude, or structured (heads and neurons removed) (剪枝)."""
    from lmforge.compress.prune import main as run

    cfg = PruneConfig(sparsity=sparsity, method=method, out=out, heads=heads, recover_steps=recover_steps, data=data,
                      lr=lr, measure=MeasureConfig(eval_text=eval_text, max_tokens=max_eval_tokens, threads=threads))  # fmt: skip
    m = run(_registry(), model, cfg, say=say)
    if as_json:
        print(json.dumps(asdict(m), ensure_ascii=False, indent=2))
        return
    print(
        f"registered {m.name} ({method} pruning of {m.parents[0]}, {m.params:,} parameters): {_numbers(m.metrics)}"
    )


compress_app = typer.Typer(no_args_is_help=True, help="Compression trade-offs of a model (压缩 · 量化对比).")


@compress_app.command("report")
def compress_report(
    model: Annotated[str, typer.Argument(help="A registered chat/base model.")],
    build: Annotated[str, typer.Option(help="Make these quantizations first when missing: all, or a comma list (gguf-q8_0,int8).")] = "",
    suite: Annotated[str | None, typer.Option(help="An `lmforge eval` suite scored on every row (slow).")] = None,
    eval_text: EvalText = None,
    max_eval_tokens: Annotated[int, typer.Option(help="Tokens of the held-out text scored.")] = _M.max_tokens,
    threads: Threads = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:  # fmt: skip
    """The trade-off table (size, decode tokens/s, perplexity delta) of a model and its compressed variants."""
    from lmforge.compress.report import ReportConfig
    from lmforge.compress.report import main as run

    cfg = ReportConfig(build=[t.strip() for t in build.split(",") if t.strip()], suite=suite,
                       measure=MeasureConfig(eval_text=eval_text, max_tokens=max_eval_tokens, threads=threads))  # fmt: skip
    report = run(_registry(), model, cfg, say=say)
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return
    print(Path(report["markdown"]).read_text(encoding="utf-8"))
    print(f"report: {report['markdown']}  chart: {report['png']}")


def mount(app: typer.Typer) -> None:
    app.command("quantize")(quantize)
    app.command("prune")(prune)
    app.add_typer(compress_app, name="compress")
