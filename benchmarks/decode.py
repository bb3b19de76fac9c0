"""Decode speed of the default model against the machine's memory-bandwidth ceiling.

In one run:
1. memory bandwidth: best of several full reads of a 1 GiB float32 tensor, on all threads;
2. the default model (GGUF) on lmforge's llamacpp backend: time-to-first-token and decode tok/s;
3. the reference: a bare llama-cpp-python loop (llama_decode + greedy llama_sampler_sample
   through the low-level C API, no Python wrapper) on the same file, same prompt, same threads;
4. the same model on lmforge's transformers backend (GGUF dequantized to float32 by transformers);
each decode rate printed beside its ceiling = bandwidth / bytes of weights read per token.

Run alone (no other busy process): `python benchmarks/decode.py [--model NAME] [--tokens 128]`.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PROMPT = "Write a Python class for a bank account with deposit, withdraw and a transaction history, with docstrings."


@dataclass
class Run:
    ttft_s: float
    decode_tok_s: float
    tokens: int


def memory_bandwidth_gbs(threads: int, gib: float = 1.0, repeats: int = 7) -> float:
    import torch

    torch.set_num_threads(threads)
    x = torch.ones(int(gib * (1 << 30)) // 4, dtype=torch.float32)
    x.sum()  # fault the pages in
    best = min(_timed(lambda: x.sum()) for _ in range(repeats))
    return x.numel() * 4 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def gguf_bytes_per_token(path: Path) -> int:
    """Weight bytes a decode step reads: every tensor except the token-embedding table
    (one row of it is gathered per token), unless the output layer reuses that table."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    names = {t.name for t in reader.tensors}
    tied = "output.weight" not in names
    return sum(int(t.n_bytes) for t in reader.tensors if t.name != "token_embd.weight" or tied)


def lmforge_run(backend, ids: list[int], n: int) -> tuple[Run, int]:
    from lmforge.infer.sampling import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=n)
    t0 = time.perf_counter()
    stamps = []
    for chunk in backend.generate(ids, params):
        if chunk.token_id is not None:
            stamps.append(time.perf_counter())
    k = len(stamps)
    return Run(stamps[0] - t0, (k - 1) / (stamps[-1] - stamps[0]), k), k


def bare_llamacpp_run(llm, ids: list[int], n: int) -> Run:
    """The reference: llama.cpp's C API driven directly, greedy, exactly n tokens."""
    import llama_cpp

    ctx = llm._ctx.ctx
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    smpl = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(smpl, llama_cpp.llama_sampler_init_greedy())
    arr = (llama_cpp.llama_token * len(ids))(*ids)
    one = (llama_cpp.llama_token * 1)()
    t0 = time.perf_counter()
    llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(ids)))
    stamps = []
    for _ in range(n):
        tok = llama_cpp.llama_sampler_sample(smpl, ctx, -1)
        stamps.append(time.perf_counter())
        one[0] = tok
        llama_cpp.llama_decode(
            ctx, llama_cpp.llama_batch_get_one(ctypes.cast(one, ctypes.POINTER(llama_cpp.llama_token)), 1)
        )
    llama_cpp.llama_sampler_free(smpl)
    return Run(stamps[0] - t0, (n - 1) / (stamps[-1] - stamps[0]), n)


def median_run(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.ttft_s for r in runs),
        statistics.median(r.decode_tok_s for r in runs),
        runs[0].tokens,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--hf-tokens", type=int, default=32, help="tokens for the (slow) transformers run; 0 skips it"
    )
    args = ap.parse_args(argv)

    from lmforge.data.chat_template import render
    from lmforge.home import Registry
    from lmforge.hub import pull
    from lmforge.infer.llamacpp import LlamaCppBackend

    reg = Registry()
    manifest = pull(args.model, reg)  # no-op when already pulled
    path = reg.model_path(manifest)
    print(f"model: {args.model} ({path.name}, {manifest.size_bytes / 1e6:.0f} MB), threads: {args.threads}")

    bw = max(memory_bandwidth_gbs(args.threads) for _ in range(2))
    per_tok = gguf_bytes_per_token(path)
    ceiling = bw * 1e9 / per_tok
    print(
        f"memory bandwidth: {bw:.1f} GB/s; weights read per token: {per_tok / 1e6:.0f} MB; ceiling {ceiling:.1f} tok/s"
    )

    backend = LlamaCppBackend(path, n_ctx=2048, n_threads=args.threads)
    text = render(
        backend.chat_template, [{"role": "user", "content": PROMPT}], special_tokens=backend.special_tokens
    )
    ids = backend.tokenize(text, add_special=False)
    ours, refs = [], []
    for _ in range(args.repeats):  # interleave so drift hits both sides alike; both start cold
        backend._llama.reset()
        run, n = lmforge_run(backend, ids, args.tokens)
        ours.append(run)
        refs.append(bare_llamacpp_run(backend._llama, ids, n))
        backend._llama.reset()  # the bare loop cleared the KV memory behind Llama's back
    # a follow-up turn reuses the cached prompt prefix (multi-turn chat): time-to-first-token then
    lmforge_run(backend, ids, 2)
    warm, _ = lmforge_run(backend, ids, 2)
    print(
        f"time-to-first-token with the prompt already in the KV cache (next chat turn): {warm.ttft_s * 1000:.0f} ms"
    )
    ours_m, ref_m = median_run(ours), median_run(refs)
    backend.close()

    rows = [
        ("bare llama-cpp-python loop (reference)", ref_m, ceiling),
        ("lmforge llamacpp backend", ours_m, ceiling),
    ]
    if args.hf_tokens:
        from lmforge.infer.hf import TransformersBackend

        t = time.perf_counter()
        hf = TransformersBackend(path, n_threads=args.threads)
        print(f"transformers loaded the GGUF in {time.perf_counter() - t:.0f} s (dequantized to float32)")
        hf_params = sum(p.numel() for n_, p in hf.model.named_parameters() if "embed_tokens" not in n_)
        tied = hf.model.config.tie_word_embeddings
        hf_bytes = (hf_params + (hf.model.get_input_embeddings().weight.numel() if tied else 0)) * 4
        hf_run, _ = lmforge_run(hf, hf.tokenize(text, add_special=False), args.hf_tokens)
        rows.append(("lmforge transformers backend (fp32)", hf_run, bw * 1e9 / hf_bytes))

    print(f"\n{'engine':40} {'TTFT s':>7} {'decode tok/s':>13} {'ceiling tok/s':>14} {'% of ceiling':>13}")
    for label, r, ceil in rows:
        print(f"{label:40} {r.ttft_s:7.2f} {r.decode_tok_s:13.1f} {ceil:14.1f} {r.decode_tok_s / ceil:13.0%}")
    print(
        f"\nlmforge llamacpp backend vs bare loop: {ours_m.decode_tok_s / ref_m.decode_tok_s:.1%} of reference decode speed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
