"""Bundled evaluation suites on real models, through the CLI exactly as docs/eval.md shows it.

For each model: `lmforge eval MODEL --suite ... --limit 40 --window 512` (its wall time printed),
then `lmforge eval compare MODEL1 MODEL2 ... --suite ...` over the stored results, and with
--bias `lmforge eval bias` on the first model. The results are stored in the models' manifests
under LMFORGE_HOME, as any `lmforge eval` run stores them.

    python benchmarks/eval_models.py [--models qwen2.5-coder-0.5b-instruct smollm2-135m-instruct]
                                     [--suites zh-sentiment mc-mixed en-ppl zh-ppl] [--limit 40] [--bias]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time


def lmforge(*args: str) -> float:
    """Run one lmforge command, its output passed through; returns its wall time in seconds."""
    cmd = [sys.executable, "-m", "lmforge", *args]
    print("$ lmforge " + " ".join(args), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"])
    ap.add_argument("--suites", nargs="+", default=["zh-sentiment", "mc-mixed", "en-ppl", "zh-ppl"])
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--bias", action="store_true", help="also run `lmforge eval bias` on the first model")
    args = ap.parse_args(argv)

    suites = [a for s in args.suites for a in ("--suite", s)]
    walls = {}
    for model in args.models:
        walls[model] = lmforge(
            "eval", model, *suites, "--limit", str(args.limit), "--window", str(args.window)
        )
    if len(args.models) > 1:
        lmforge("eval", "compare", *args.models, *suites)
    if args.bias:
        lmforge("eval", "bias", args.models[0])
    print("\nwall time of `lmforge eval` (" + ", ".join(args.suites) + f", --limit {args.limit}): "
          + ", ".join(f"{m} {s / 60:.1f} min" for m, s in walls.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
