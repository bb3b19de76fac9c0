"""Fine-tuning on CPU: full vs LoRA vs QLoRA vs prefix tuning, and lmforge's run vs a plain
transformers + peft loop on the same data.

Each configuration runs as its own process (`lmforge finetune ... --json`), so its peak RSS is its
own: tokens/s over the optimizer steps (lmforge's figure, no setup), peak RSS, trainable parameters.
The plain loop (LoRA, same model, data, batch, max length, steps): apply_chat_template, pad, forward
with labels, backward, AdamW, zero_grad — nothing else; its tokens/s counts the same non-pad tokens.

Usage: LMFORGE_HOME=... python benchmarks/finetune.py [--model smollm2-135m-instruct] [--steps 12]
       [--methods full,lora,qlora,prefix]   (the models must be pulled: `lmforge pull NAME`)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "examples" / "sft" / "lmforge_assistant.jsonl"


def run_lmforge(model: str, method: str, steps: int, batch: int, max_length: int, out: str) -> dict:
    cmd = [sys.executable, "-m", "lmforge", "finetune", model, "--data", str(DATA), "--method", method,
           "--steps", str(steps), "--batch-size", str(batch), "--max-length", str(max_length), "--out", out,
           "--report-eval", "2", "--gen-tokens", "8", "--val-frac", "0.05", "--save-every", "100000", "--json",
           "--precision", "fp32", "--restart"]  # fmt: skip
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return {
            "method": method,
            "error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed",
        }
    m = json.loads(p.stdout)["metrics"]
    home = Path(os.environ.get("LMFORGE_HOME", Path.home() / ".lmforge"))
    steps_ev = [
        json.loads(x)
        for x in (home / "runs" / out / "events.jsonl").read_text().splitlines()
        if '"loss"' in x
    ]
    # like the plain loop: the first step warms up, time the rest (from the per-step event clock)
    warm = steps_ev[0]
    rate = (steps_ev[-1]["tokens"] - warm["tokens"]) / (steps_ev[-1]["elapsed_s"] - warm["elapsed_s"])
    return {"method": method, "tok_s": round(rate, 1), "peak_rss_mb": m["peak_rss_mb"],
            "trainable": m["trainable_params"], "wall_s": round(time.perf_counter() - t0, 1),
            "final_loss": m.get("final_loss")}  # fmt: skip


def plain_loop(model_dir: str, steps: int, batch: int, max_length: int) -> dict:
    """A minimal transformers + peft LoRA loop (runs in a child process: `--plain DIR`)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"]))  # fmt: skip
    rows = [json.loads(x) for x in DATA.read_text(encoding="utf-8").splitlines() if x.strip()]
    texts = [tok.apply_chat_template([{"role": "user", "content": r["prompt"]},
                                      {"role": "assistant", "content": r["response"]}], tokenize=False)
             for r in rows]  # fmt: skip
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.train()
    tokens, t0 = 0, None
    for step in range(steps + 1):
        chunk = texts[(step * batch) % len(texts) : (step * batch) % len(texts) + batch]
        enc = tok(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step == 0:
            t0 = time.perf_counter()  # the first step warms up; time the rest
        else:
            tokens += int(enc["attention_mask"].sum())
    return {"method": "plain transformers+peft LoRA", "tok_s": round(tokens / (time.perf_counter() - t0), 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--methods", default="full,lora,qlora,prefix")
    ap.add_argument("--plain", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain:
        print(json.dumps(plain_loop(args.plain, args.steps, args.batch, args.max_length)))
        return

    from lmforge.home import Registry
    from lmforge.train.finetune import hf_base

    reg = Registry()
    base = hf_base(reg, args.model)
    for m in args.methods.split(","):  # a fresh run each time
        if reg.exists(f"bench-{args.model}-{m}"):
            reg.remove(f"bench-{args.model}-{m}")
    rows = [run_lmforge(args.model, m, args.steps, args.batch, args.max_length, f"bench-{args.model}-{m}")
            for m in args.methods.split(",")]  # fmt: skip
    p = subprocess.run([sys.executable, __file__, "--plain", str(reg.model_path(base)), "--steps", str(args.steps),
                        "--batch", str(args.batch), "--max-length", str(args.max_length)],
                       capture_output=True, text=True, env=os.environ)  # fmt: skip
    plain = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {"error": p.stderr[-300:]}
    print(f"{args.model}: {args.steps} steps x batch {args.batch}, max length {args.max_length}, fp32, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"{'method':34} {'tok/s':>8} {'peak RSS MB':>12} {'trainable':>12}")
    for r in [*rows, plain]:
        if "error" in r:
            print(f"{r.get('method', '?'):34} error: {r['error']}")
            continue
        print(f"{r['method']:34} {r['tok_s']:>8} {r['peak_rss_mb']:>12} {r.get('trainable', '-'):>12}")
    lora = next((r for r in rows if r["method"] == "lora" and "tok_s" in r), None)
    if lora and "tok_s" in plain:
        print(f"lmforge LoRA / plain loop: {lora['tok_s'] / plain['tok_s']:.3f} (target >= 0.9)")
    print(json.dumps({"model": args.model, "rows": rows, "plain": plain}))


if __name__ == "__main__":
    main()
