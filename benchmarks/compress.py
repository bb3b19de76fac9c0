"""The compression trade-off table of SmolLM2-135M-Instruct and Qwen2.5-Coder-0.5B-Instruct, every row
measured in the same run on this machine.

For each model: its dequantized HF form (fp32, the reference), the seven `lmforge quantize` types made
from it (gguf-f16 / q8_0 / q5_k_m / q4_k_m / q4_0 through llama.cpp, int8 through torchao, nf4 through
bitsandbytes) and a structured prune at 30% with a short recovery fine-tune — each measured by
compress/measure.py: size on disk, decode tokens/s (greedy, after the first token), perplexity on the
held-out zh+en text. Beside decode tokens/s stands the machine's limit for it: memory read bandwidth
(measured here by `lmforge plan`'s probe, a 512 MiB sum on all threads) / bytes of weights read per token — a decoder reads every weight
once per token, so no engine beats that on a CPU. Also the shipped Q4_K_M/Q4_1 GGUF of the pull, as
the peer tool's (llama.cpp's own quantizer run by the packagers) reference row.

Usage: LMFORGE_HOME=... python benchmarks/compress.py [--models smollm2-135m-instruct,...] [--threads 2]
The models must be pulled (`lmforge pull NAME`). Writes benchmarks/out/compress-*.md/png too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-prune", action="store_true")
    args = ap.parse_args(argv)

    from lmforge.compress.measure import MeasureConfig
    from lmforge.compress.prune import PruneConfig
    from lmforge.compress.prune import main as prune
    from lmforge.compress.report import ReportConfig
    from lmforge.compress.report import main as report
    from lmforge.home import Registry
    from lmforge.plan import measure_memory_bandwidth

    reg = Registry()
    cfg = MeasureConfig(threads=args.threads)
    bw = measure_memory_bandwidth()
    print(f"memory read bandwidth (lmforge plan's probe, all threads): {bw:.1f} GB/s; {args.threads} threads")
    out_dir = Path(__file__).resolve().parent / "out"
    out_dir.mkdir(exist_ok=True)
    say = lambda s: print(s, file=sys.stderr)  # noqa: E731
    for model in args.models.split(","):
        t0 = time.time()
        hf = f"{model}-hf"
        r = report(reg, model, ReportConfig(build=["all"], measure=cfg), say=say)
        if not args.no_prune and not any(row["variant"].startswith("pruned-") for row in r["rows"]):
            prune(
                reg,
                hf,
                PruneConfig(sparsity=0.3, method="structured", recover_steps=20, measure=cfg),
                say=say,
            )
            r = report(reg, model, ReportConfig(measure=cfg), say=say)
        print(f"\n## {model} ({time.time() - t0:.0f} s, reference {r['reference']})\n")
        print(
            "| variant | size MB | decode tok/s | bandwidth limit tok/s | perplexity | Δ perplexity | bits/byte |"
        )
        print("|---|---|---|---|---|---|---|")
        for row in r["rows"]:
            limit = bw * 1e9 / max(1, row["size_bytes"])
            print(f"| {row['variant']} | {row['size_mb']:,} | {row['decode_tps']} | {limit:.0f} | {row['perplexity']} | "
                  f"{row['ppl_increase_pct']:+.2f}% | {row['bits_per_byte']} |")  # fmt: skip
        for suffix in ("md", "png"):
            src = Path(r["markdown" if suffix == "md" else "png"])
            (out_dir / f"compress-{model}.{suffix}").write_bytes(src.read_bytes())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
