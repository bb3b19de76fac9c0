"""Alignment on CPU: DPO and GRPO steps/s and peak RSS on SmolLM2-135M, LoRA and full.

Each configuration runs as its own process (`lmforge align ... --json`) so its peak RSS is its own;
steps/s is measured from the run's events.jsonl over steps 2..N (the first step warms up). DPO uses
examples/align/pairs_toy.jsonl (batch 4 pairs = 8 sequences per step), GRPO
examples/align/arithmetic.jsonl with the exact-answer rule (batch 2 prompts x 4 samples, 8 new tokens).

Distillation: a fresh `new:tiny` student with the model's tokenizer learns from the model's logits on
examples/sft/lmforge_assistant.jsonl; tokens/s without the teacher-logit cache, while filling it, and
reusing it (the teacher's forward pass skipped).

Usage: LMFORGE_HOME=... python benchmarks/align.py [--model smollm2-135m-instruct] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "align"


def run(model: str, method: str, lora: bool, steps: int, home: Path) -> dict:
    out = f"bench-align-{method}-{'lora' if lora else 'full'}"
    data = EXAMPLES / ("pairs_toy.jsonl" if method == "dpo" else "arithmetic.jsonl")
    cmd = [sys.executable, "-m", "lmforge", "align", model, "--method", method, "--data", str(data), "--out", out,
           "--steps", str(steps), "--batch-size", "4" if method == "dpo" else "2", "--max-length", "256",
           "--save-every", "100000", "--json", "--restart"]  # fmt: skip
    if method == "grpo":
        cmd += ["--reward", "exact-answer", "--generations", "4", "--max-new-tokens", "8"]
    if lora:
        cmd.append("--lora")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return {"method": method, "lora": lora, "error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    m = json.loads(p.stdout)["metrics"]
    ev = [
        json.loads(x)
        for x in (home / "runs" / out / "events.jsonl").read_text().splitlines()
        if '"loss"' in x
    ]
    rate = (len(ev) - 1) / (ev[-1]["elapsed_s"] - ev[0]["elapsed_s"]) if len(ev) > 1 else None
    return {"method": method, "lora": lora, "steps_per_s": round(rate, 3) if rate else None,
            "peak_rss_mb": m["peak_rss_mb"], "trainable": m["trainable_params"]}  # fmt: skip


def distill_rate(model: str, steps: int, cache: bool, out: str) -> dict:
    """Logit distillation of a fresh tiny student from MODEL on the bundled SFT examples: tokens/s."""
    data = EXAMPLES.parent / "sft" / "lmforge_assistant.jsonl"
    cmd = [sys.executable, "-m", "lmforge", "distill", "--teacher", model, "--student", "new:tiny", "--data", str(data),
           "--out", out, "--steps", str(steps), "--batch-size", "4", "--max-length", "256", "--no-baseline",
           "--save-every", "100000", "--json", "--cache" if cache else "--no-cache"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return {"cache": cache, "error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    m = json.loads(p.stdout)["metrics"]
    return {"cache": cache, "tok_s": m.get("tokens_per_s"), "peak_rss_mb": m.get("peak_rss_mb")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    from lmforge.home import Registry

    reg = Registry()
    rows = []
    for method in ("dpo", "grpo"):
        for lora in (True, False):
            name = f"bench-align-{method}-{'lora' if lora else 'full'}"
            if reg.exists(name):
                reg.remove(name)
            rows.append(run(args.model, method, lora, args.steps, reg.root))
    print(f"{args.model}, {args.steps} steps each, {os.cpu_count()} cores")
    print(f"{'method':16} {'steps/s':>8} {'peak RSS MB':>12} {'trainable':>12}")
    for r in rows:
        label = f"{r['method']} {'LoRA' if r['lora'] else 'full'}"
        if "error" in r:
            print(f"{label:16} error: {r['error']}")
        else:
            print(f"{label:16} {r['steps_per_s']:>8} {r['peak_rss_mb']:>12} {r['trainable']:>12}")
    dist = []
    for i, cache in enumerate((False, True, True)):  # no cache; cache filled; cache reused
        name = f"bench-distill-{i}"
        if reg.exists(name):
            reg.remove(name)
        dist.append(
            distill_rate(args.model, args.steps, cache, name) | {"run": ["no cache", "filling", "reused"][i]}
        )
    for d in dist:
        print(
            f"distill ({d['run']}): "
            + (f"{d['tok_s']} tok/s, peak RSS {d['peak_rss_mb']} MB" if "tok_s" in d else d["error"])
        )
    print(json.dumps({"align": rows, "distill": dist}))


if __name__ == "__main__":
    main()
