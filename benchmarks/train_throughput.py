"""Pretraining throughput: lmforge's loop beside a minimal plain-PyTorch loop, same model and data.

Prints, in one run on this machine:
- tokens/s of `lmforge pretrain` (its own figure: optimizer steps only, no setup) and of a nanoGPT-style
  loop (random batch, forward, cross-entropy, backward, clip, AdamW step) on the same Llama config,
  tokenizer, sequence length and batch — and the ratio (target >= 0.9);
- model FLOPs utilisation: 6 x params + attention FLOPs per token (nanoGPT's estimate) x tokens/s,
  against the matmul FLOP/s this machine reaches in fp32 and bf16 (torch.mm, measured here);
- fp32 vs bf16 autocast for both loops;
- the 2-process data-parallel run (`accelerate launch --num_processes 2`, gloo) tokens/s.

Usage: python benchmarks/train_throughput.py [--steps 30] [--size tiny] [--seq 128] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def matmul_flops(dtype, n: int = 2048, reps: int = 5) -> float:
    """The machine's reachable matmul FLOP/s at this dtype: best of 3 timings of `reps` torch.mm."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 * reps / best


def flops_per_token(model, seq: int) -> float:
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    return 6 * n + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq


def plain_loop(model, stream, seq: int, batch: int, steps: int, bf16: bool) -> float:
    """nanoGPT's loop: random offsets, forward, loss, backward, clip, AdamW. Returns tokens/s."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    data = torch.as_tensor(stream)
    gen = torch.Generator().manual_seed(0)
    model.train()

    def step() -> None:
        ix = torch.randint(len(data) - seq - 1, (batch,), generator=gen)
        x = torch.stack([data[i : i + seq] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + seq] for i in ix])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch * seq / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=6000)
    ap.add_argument("--skip-ddp", action="store_true")
    args = ap.parse_args()

    import torch

    from lmforge.data.bundled import write_bundled_corpus
    from lmforge.data.prepare import PrepareConfig, dataset_texts, prepare
    from lmforge.home import Registry
    from lmforge.infer.hf import load_tokenizer
    from lmforge.tokenizer.bpe import BPEConfig, train_registered
    from lmforge.train.args import PretrainConfig, resolve_size
    from lmforge.train.pretrain import build_model, token_stream
    from lmforge.train.pretrain import main as pretrain

    threads = torch.get_num_threads()
    home = Path(tempfile.mkdtemp(prefix="lmforge-bench-"))
    os.environ["LMFORGE_HOME"] = str(home)
    reg = Registry(home)
    corpus = write_bundled_corpus(home / "corpus", max_docs_per_source=300)
    prepare(reg, [corpus.out_dir], "data", PrepareConfig(dedup="none"))
    train_registered(reg, "data", "bpe", BPEConfig(vocab_size=args.vocab))
    tok = load_tokenizer(reg.artifact_dir("bpe"))
    stream = token_stream(tok, dataset_texts(reg, "data", "train"))
    size = resolve_size("clm", args.size)
    print(f"machine: {threads} torch threads; corpus {len(stream):,} tokens; model size {args.size} {size}")

    peak = {"fp32": matmul_flops(torch.float32), "bf16": matmul_flops(torch.bfloat16)}
    print(
        f"matmul peak measured: fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s"
    )
    rows = []
    for prec in ("fp32", "bf16"):
        model = build_model("clm", size, tok, 0.0, 0)
        fpt = flops_per_token(model, args.seq)
        plain = plain_loop(model, stream, args.seq, args.batch, args.steps, prec == "bf16")
        cfg = PretrainConfig(size=args.size, tokenizer="bpe", data="data", steps=args.steps + 2,
                             batch_size=args.batch, seq_len=args.seq, eval_every=10**6, save_every=10**6,
                             precision=prec)  # fmt: skip
        m = pretrain(reg, f"lm-{prec}", cfg, progress=False)
        ours = m.metrics["tokens_per_s"]
        rows.append((prec, ours, plain, fpt))
        print(f"{prec}: lmforge {ours:,.0f} tok/s   plain loop {plain:,.0f} tok/s   ratio {ours / plain:.3f}   "
              f"MFU lmforge {ours * fpt / peak[prec]:.1%} / plain {plain * fpt / peak[prec]:.1%} "
              f"of measured {prec} matmul peak")  # fmt: skip
    if not args.skip_ddp:
        accelerate = str(Path(sys.executable).with_name("accelerate"))
        cmd = [accelerate, "launch", "--num_processes", "2", "-m", "lmforge", "pretrain", "--out", "lm-ddp",
               "--data", "data", "--tokenizer", "bpe", "--size", args.size, "--steps", str(args.steps + 2),
               "--batch-size", str(args.batch // 2), "--seq-len", str(args.seq), "--eval-every", "1000000",
               "--save-every", "1000000", "--precision", "fp32", "--threads", str(max(1, threads // 2))]  # fmt: skip
        subprocess.run(cmd, check=True, env=os.environ | {"LMFORGE_HOME": str(home)}, capture_output=True)
        ddp = reg.get("lm-ddp").metrics["tokens_per_s"]
        print(f"DDP 2 processes x batch {args.batch // 2} (gloo, fp32): {ddp:,.0f} tok/s vs 1 process x batch "
              f"{args.batch}: {rows[0][1]:,.0f} tok/s (same global batch; 2 cores either way)")  # fmt: skip
    print(json.dumps({"peak_gflops": {k: round(v / 1e9, 1) for k, v in peak.items()},
                      "rows": [{"precision": p, "lmforge_tok_s": o, "plain_tok_s": round(pl, 1),
                                "ratio": round(o / pl, 3)} for p, o, pl, _ in rows]}))  # fmt: skip


if __name__ == "__main__":
    main()
