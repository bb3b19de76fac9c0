"""Pointwise reranking speed: p(yes) for 20 candidates, beside the machine's prefill limit.

    LMFORGE_HOME=... python benchmarks/rerank.py [--model qwen2.5-coder-0.5b-instruct] [--candidates 20]
                                                 [--rounds 3] [--passage-tokens 48] [--extra-gguf MODEL ...]
                                                 [--hf MODEL]

Candidates: the longest chunks of examples/rag/docs (so each is cut to the reranker's --passage-tokens, default
PointwiseConfig's), three questions, each timed from a cold question prefix. What is compared, in one run on the same model:
- `next_logprobs` (the `judge` capability, what the reranker uses): one position's logits per candidate, the
  question's KV cache reused;
- the previous path, `prompt_logprobs` on a context that keeps logits for every position (logits_all);
- the limit: the same new tokens (every candidate's passage and tail) evaluated as one long prefill on a
  fresh context, i.e. what the hardware does at best with these tokens, without and with logits_all;
- `--extra-gguf`: the prefill rate of other registered GGUF models (e.g. the f16 export);
- `--hf`: a registered transformers model (e.g. the default model's dequantized `-hf` copy) scoring the
  candidates as one batch, in bf16 and fp32, with the shared question prefix evaluated once (what the reranker
  does) and, for reference, every row whole.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "私有化大模型和RAG文档的方案里，用什么模型来生成中文向量？",
    "What must a redistributed modified file carry under the Apache licence?",
    "哪首诗写山中空寂、一个人影都看不到，只隐约传来有人交谈的声音？",
]


def passages(n: int) -> list[str]:
    from lmforge.rag.chunking import ChunkConfig, chunk_blocks
    from lmforge.rag.loaders import load

    chunks = []
    for path in sorted((ROOT / "examples" / "rag" / "docs").glob("*")):
        chunks += [c.text for c in chunk_blocks(load(path).blocks, ChunkConfig())]
    return sorted(chunks, key=len, reverse=True)[:n]


def prefill_rate(backend, ids: list[int]) -> float:  # noqa: ANN001 - LlamaCppBackend
    """Tokens/s of one long evaluation of `ids` on a fresh context."""
    llama = backend._llama
    llama.reset()
    t = time.perf_counter()
    llama.eval(ids)
    return len(ids) / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> None:
    from lmforge.home import Registry
    from lmforge.infer.loader import LoadConfig, load_backend
    from lmforge.rag.rerank import PointwiseConfig, PointwiseReranker

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="questions timed (of the 3 bundled ones)")
    ap.add_argument("--extra-gguf", nargs="*", default=[], help="other registered GGUF models: prefill rate")
    ap.add_argument(
        "--hf", default=None, help="a registered transformers model: batched scoring, bf16 and fp32"
    )
    ap.add_argument("--passage-tokens", type=int, default=PointwiseConfig.max_passage_tokens)
    args = ap.parse_args(argv)
    reg = Registry()
    texts = passages(args.candidates)
    questions = QUESTIONS[: args.rounds]
    judge = load_backend(reg, args.model, LoadConfig())
    full = load_backend(reg, args.model, LoadConfig(logits_all=True))
    cfg = PointwiseConfig(max_passage_tokens=args.passage_tokens)
    rr, old = PointwiseReranker(judge, cfg), PointwiseReranker(full, cfg)
    # the new tokens of each candidate: its prompt past the shared question prefix
    prompts = {q: rr.prompts(q, texts) for q in questions}
    head = {q: len(rr.backend.tokenize(rr._head.format(q=q), add_special=False)) for q in questions}
    new_tokens = {q: [i for p in prompts[q] for i in p[head[q] :]] for q in questions}
    print(f"model {args.model}; {len(texts)} candidates (passages cut to {rr.cfg.max_passage_tokens} tokens); "
          f"new tokens per question: {', '.join(str(len(v)) for v in new_tokens.values())}")  # fmt: skip
    rr.scores("warm-up", texts[:2])
    rows = {"next_logprobs (judge, the reranker)": [], "prompt_logprobs on logits_all (before)": []}
    for q in questions:
        judge._llama.reset()
        t = time.perf_counter()
        rr.scores(q, texts)
        rows["next_logprobs (judge, the reranker)"].append(time.perf_counter() - t)
        full._llama.reset()
        t = time.perf_counter()
        [old._scored(p) for p in prompts[q]]
        rows["prompt_logprobs on logits_all (before)"].append(time.perf_counter() - t)
    limit = {q: statistics.median(prefill_rate(judge, new_tokens[q]) for _ in range(2)) for q in questions}
    limit_all = {q: prefill_rate(full, new_tokens[q]) for q in questions}
    for name, ts in rows.items():
        print(f"  {name:42} median {statistics.median(ts):6.2f} s for {len(texts)} candidates")
    rate, rate_all = statistics.median(limit.values()), statistics.median(limit_all.values())
    floor = statistics.median(len(new_tokens[q]) / limit[q] for q in questions)
    print(f"  {'limit: the new tokens as one prefill':42} median {floor:6.2f} s ({rate:.0f} tokens/s; "
          f"{rate_all:.0f} tokens/s with logits_all)")  # fmt: skip
    print(f"  under 2 s for {len(texts)} candidates at {rate:.0f} tokens/s: at most "
          f"{2 * rate / len(texts):.0f} new tokens per candidate")  # fmt: skip
    sample = new_tokens[questions[0]]
    judge.close()
    full.close()
    for name in args.extra_gguf:
        b = load_backend(reg, name, LoadConfig())
        prefill_rate(b, sample[:64])
        print(f"  prefill {name}: {prefill_rate(b, sample):.0f} tokens/s")
        b.close()
    if args.hf:
        n = sum(len(p) for p in prompts[questions[0]])
        for dtype in ("bfloat16", "float32"):
            hf = load_backend(reg, args.hf, LoadConfig(dtype=dtype))
            hr = PointwiseReranker(hf, cfg)
            hr.scores("warm-up", texts[:2])
            for share in (True, False):
                ts = []
                for q in questions:
                    hp = hr.prompts(q, texts)
                    t = time.perf_counter()
                    hf.next_logprobs(hp, hr._yes + hr._no, share_prefix=share)
                    ts.append(time.perf_counter() - t)
                how = "question prefix shared (the reranker)" if share else "every row whole"
                print(f"  transformers {dtype}, one batch, {how} ({args.hf}): median {statistics.median(ts):.2f} s "
                      f"({n} prompt tokens)")  # fmt: skip
            hf.close()


if __name__ == "__main__":
    main()
