"""lm-evaluation-harness's `local-completions` model against `lmforge serve`, beside `lmforge eval`.

    python benchmarks/lm_eval_completions.py [--model smollm2-135m-instruct] [--limit 40]

What it checks: an evaluation harness that speaks the OpenAI completions API (token-id prompts,
`echo` with `logprobs`, the first prompt token's logprob null) scores a model served by lmforge
exactly as lmforge's own harness does. Steps, all on this machine:
1. `lmforge export MODEL --format hf-tokenizer --out DIR` (lm-eval tokenizes on its side);
2. `lmforge serve --model MODEL` on a free loopback port (the batched llama.cpp engine);
3. lm-eval `simple_evaluate(model="local-completions", tokenized_requests=True)` on the bundled
   multiple-choice suite (mc-mixed, written as an lm-eval task with the same prompt);
4. `lmforge eval MODEL --suite mc-mixed` (the single-sequence llama.cpp scorer) on the same items.
Prints acc and acc_norm from both. Needs `pip install lm-eval` and a pulled GGUF model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lm_eval_task(folder: Path, data: Path, prompt: str) -> None:
    """The suite as an lm-eval task: same data, same prompt, choices after a space (lm-eval's rule)."""
    jinja = prompt.replace("{question}", "{{question}}")
    (folder / "lmf_mc.yaml").write_text(
        "task: lmf_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files: {{test: {data}}}\ntest_split: test\noutput_type: multiple_choice\n"
        f'doc_to_text: {json.dumps(jinja)}\ndoc_to_choice: "{{{{choices}}}}"\ndoc_to_target: "{{{{answer}}}}"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="a registered GGUF model")
    ap.add_argument("--suite", default="mc-mixed")
    ap.add_argument("--limit", type=int, default=None, help="first N items only")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args(argv)
    import lm_eval
    from lm_eval.tasks import TaskManager

    from lmforge.eval.harness import EvalConfig, load_suite
    from lmforge.eval.report import evaluate_model
    from lmforge.home import Registry

    reg = Registry()
    suite = load_suite(args.suite)
    tmp = Path(tempfile.mkdtemp(prefix="lmforge-lmeval-api-"))
    exe = Path(sys.executable).parent / "lmforge"
    server = None
    try:
        items = suite.items[: args.limit] if args.limit else suite.items
        data = tmp / "mc.jsonl"
        data.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items), encoding="utf-8")
        lm_eval_task(tmp, data, suite.prompt)
        tok = tmp / "tokenizer"
        subprocess.run(
            [str(exe), "export", args.model, "--format", "hf-tokenizer", "--out", str(tok)], check=True
        )

        port = free_port()
        log = (tmp / "serve.log").open("wb")
        server = subprocess.Popen([str(exe), "serve", "--model", args.model, "--port", str(port), "--threads",
                                   str(args.threads), "--slots", "2"], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 300
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit(f"lmforge serve did not start: {(tmp / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.5)

        t0 = time.monotonic()
        res = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=f"model={args.model},base_url={base}/v1/completions,tokenizer={tok},"
            "tokenizer_backend=huggingface,tokenized_requests=True,num_concurrent=1,max_retries=1",
            tasks=["lmf_mc"], task_manager=TaskManager(include_path=str(tmp)), batch_size=1,
        )["results"]["lmf_mc"]  # fmt: skip
        t_api = time.monotonic() - t0
        server.terminate()
        server.wait(timeout=60)
        server = None

        t0 = time.monotonic()
        ours = evaluate_model(
            reg, args.model, [args.suite], EvalConfig(limit=args.limit), threads=args.threads
        )[0]
        t_ours = time.monotonic() - t0
        print(f"\n{args.model}, suite {args.suite}, {ours.n} questions")
        print(f"{'metric':10} {'lm-eval via lmforge serve':>26} {'lmforge eval':>13} {'|diff|':>8}")
        for name, theirs in (("acc", res["acc,none"]), ("acc_norm", res["acc_norm,none"])):
            mine = ours.metrics["accuracy" if name == "acc" else "accuracy_norm"]
            print(f"{name:10} {theirs:>26.4f} {mine:>13.4f} {abs(theirs - mine):>8.4f}")
        print(f"time: {t_api:.1f} s through the API, {t_ours:.1f} s in-process")
    finally:
        if server is not None:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
