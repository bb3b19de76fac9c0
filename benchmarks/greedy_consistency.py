"""How often does the company a request keeps change its greedy answer?

    python benchmarks/greedy_consistency.py [--model qwen2.5-coder-0.5b-instruct] [--prompts 16] [--slots 4]

For each prompt (temperature 0, same max_tokens) it compares:
- alone:     the batched engine (the server's) with nothing else running, on a fresh context;
- cli:       `lmforge generate`'s single-sequence engine — must equal `alone` (the test suite checks it);
- repeated:  the same request again right after (the prefix cache re-decodes only the last prompt token);
- loaded:    all prompts at once, `--slots` decoding in the same llama.cpp batches.
It prints how many outputs differ from `alone` and where they part. Floating-point sums depend on the
batch shape (ggml picks kernels by row count), so small differences in the logits can flip a
near-tie; this script measures how often that happens for a model.
"""

from __future__ import annotations

import argparse
import threading

PROMPTS = [
    "Write two sentences about the history of paper.",
    "Explain what a hash map is in one paragraph.",
    "用两句话介绍一下长城。",
    "Give three tips for learning a new language.",
    "What is the difference between a list and a tuple in Python?",
    "请简单解释什么是机器学习。",
    "Describe the water cycle for a ten-year-old.",
    "Write a haiku about autumn rain.",
    "Why is the sky blue? Answer briefly.",
    "写一首关于月亮的四行短诗。",
    "List the planets of the solar system in order.",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "How do I reverse a string in JavaScript?",
    "什么是私有化部署？用一句话回答。",
    "Name three benefits of regular exercise.",
    "Explain recursion with a short example.",
]


def first_diff(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    from lmforge.home import Registry
    from lmforge.infer.batched import BatchedLlamaEngine
    from lmforge.infer.chat import greedy_params
    from lmforge.infer.llamacpp import LlamaCppBackend

    reg = Registry()
    path = reg.model_path(reg.get(args.model))
    prompts = (PROMPTS * (1 + args.prompts // len(PROMPTS)))[: args.prompts]
    params = greedy_params(args.max_tokens)

    def tokens(engine, prompt: str) -> list[int]:
        return [
            c.token_id
            for c in engine.chat([{"role": "user", "content": prompt}], params)
            if c.token_id is not None
        ]

    alone, repeated = [], []
    for p in prompts:  # a fresh context per prompt: nothing cached, nothing else running
        e = BatchedLlamaEngine(path, n_slots=args.slots, n_threads=args.threads)
        alone.append(tokens(e, p))
        repeated.append(tokens(e, p))
        e.close()
    single = LlamaCppBackend(path, n_threads=args.threads)
    cli = []
    for p in prompts:
        single._llama.reset()  # nothing cached from the previous prompt
        cli.append(tokens(single, p))
    single.close()

    engine = BatchedLlamaEngine(path, n_slots=args.slots, n_threads=args.threads)
    loaded: list[list[int]] = [[] for _ in prompts]
    threads = [threading.Thread(target=lambda i=i: loaded.__setitem__(i, tokens(engine, prompts[i])))
               for i in range(len(prompts))]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.close()

    print(f"\n{args.model}: {len(prompts)} prompts, greedy, {args.max_tokens} tokens max, {args.slots} slots")
    for name, runs in (("cli", cli), ("repeated", repeated), ("loaded", loaded)):
        diffs = [first_diff(a, b) for a, b in zip(alone, runs, strict=True)]
        differ = [d for d in diffs if d is not None]
        where = f" (first differing token: {sorted(differ)})" if differ else ""
        print(f"{name:9} {len(differ):>2}/{len(prompts)} outputs differ from running alone{where}")


if __name__ == "__main__":
    main()
