"""Serving throughput under concurrent streaming clients: lmforge vs llama-cpp-python's own server.

In one run, against the same GGUF on loopback, one server at a time (they would share the 2 cores):
1, 4 and 8 concurrent streaming clients send a fixed number of chat requests each; we report total
generated tokens/s, p50/p95 time-to-first-token and errors. The reference is
`python -m llama_cpp.server` (one request at a time). Optionally a soak at concurrency 8 with the
server's RSS sampled every 5 s.

    python benchmarks/serve_load.py [--model NAME] [--requests-per-client 2] [--max-tokens 64] [--soak 600]

Needs the `bench` extra (sse-starlette, starlette-context, pydantic-settings) for the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TOPICS = [
    "rivers",
    "bridges",
    "bread",
    "compilers",
    "mountains",
    "tea",
    "trains",
    "libraries",
    "kites",
    "glaciers",
]


@dataclass
class Result:
    tokens: int = 0
    errors: int = 0
    ttft: list[float] = field(default_factory=list)
    seconds: float = 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(cmd: list[str], url: str, log: Path) -> subprocess.Popen:
    # a file, not a pipe: a server that logs a lot would block on a full pipe
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not come up")


async def one_request(
    client: httpx.AsyncClient, url: str, model: str, i: int, max_tokens: int, res: Result
) -> None:
    body = {
        "model": model,
        "messages": [
            {"role": "user", "content": f"Write a long, detailed essay about {TOPICS[i % len(TOPICS)]}."}
        ],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "seed": i,
        "stream": True,
    }
    t0 = time.perf_counter()
    first = None
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
            if r.status_code != 200:
                res.errors += 1
                await r.aread()
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                ev = json.loads(line[6:])
                if "error" in ev:
                    res.errors += 1
                    return
                for ch in ev.get("choices", []):
                    if (ch.get("delta") or {}).get("content"):
                        res.tokens += 1  # both servers send one chunk per generated token
                        if first is None:
                            first = time.perf_counter() - t0
    except httpx.HTTPError:
        res.errors += 1
        return
    if first is not None:
        res.ttft.append(first)


async def load(url: str, model: str, concurrency: int, per_client: int, max_tokens: int) -> Result:
    res = Result()
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency + 2)) as client:

        async def worker(c: int) -> None:
            for k in range(per_client):
                await one_request(client, url, model, c * per_client + k, max_tokens, res)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in range(concurrency)))
        res.seconds = time.perf_counter() - t0
    return res


async def soak(url: str, model: str, pid: int, seconds: float, max_tokens: int) -> tuple[Result, list[float]]:
    res, rss = Result(), []
    stop = time.time() + seconds

    async def sampler() -> None:
        while time.time() < stop:
            rss.append(rss_mb(pid))
            await asyncio.sleep(5)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=10)) as client:

        async def worker(c: int) -> None:
            i = c
            while time.time() < stop:
                await one_request(client, url, model, i, max_tokens, res)
                i += 8

        t0 = time.perf_counter()
        await asyncio.gather(sampler(), *(worker(c) for c in range(8)))
        res.seconds = time.perf_counter() - t0
    return res, rss


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--requests-per-client", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--soak", type=float, default=0.0, help="seconds of soak at concurrency 8 on lmforge (0 = skip)"
    )
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args(argv)

    from lmforge.home import Registry

    reg = Registry()
    manifest = reg.get(args.model)
    path = reg.model_path(manifest)
    levels = [int(x) for x in args.concurrency.split(",")]
    servers = {
        "lmforge": lambda port: [
            sys.executable,
            "-m",
            "lmforge",
            "serve",
            "-m",
            args.model,
            "--port",
            str(port),
            "--slots",
            str(max(levels)),
            "--threads",
            str(args.threads),
            "--ctx",
            "2048",
            "--max-queue",
            "64",
        ],  # fmt: skip
        "llama_cpp.server (reference)": lambda port: [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(path),
            "--model_alias",
            args.model,
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            str(args.threads),
            "--n_threads_batch",
            str(args.threads),
            "--interrupt_requests",  # queue overlapping requests instead of aborting the running one
            "False",
        ],  # fmt: skip
    }
    if args.skip_reference:
        servers.pop("llama_cpp.server (reference)")
    table: dict[str, dict[int, Result]] = {}
    soak_out = None
    for label, cmd in servers.items():
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start(cmd(port), url, Path(tempfile.gettempdir()) / f"serve_load-{port}.log")
        try:
            asyncio.run(load(url, args.model, 1, 1, 8))  # warm-up
            table[label] = {}
            for c in levels:
                r = asyncio.run(load(url, args.model, c, args.requests_per_client, args.max_tokens))
                table[label][c] = r
                print(f"{label:30} c={c}: {r.tokens / r.seconds:6.1f} tok/s, TTFT p50 {pct(r.ttft, 50):.2f}s "
                      f"p95 {pct(r.ttft, 95):.2f}s, errors {r.errors}", flush=True)  # fmt: skip
            if label == "lmforge" and args.soak > 0:
                soak_out = asyncio.run(soak(url, args.model, proc.pid, args.soak, args.max_tokens))
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    print(f"\nmodel {args.model}, {args.threads} threads, {args.requests_per_client} requests per client, "
          f"max_tokens {args.max_tokens}\n")  # fmt: skip
    print(
        f"{'server':30} {'clients':>7} {'tok/s':>7} {'TTFT p50':>9} {'TTFT p95':>9} {'errors':>6} {'vs ref':>7}"
    )
    ref = table.get("llama_cpp.server (reference)", {})
    for label, rows in table.items():
        for c, r in rows.items():
            tps = r.tokens / r.seconds
            ratio = f"{tps / (ref[c].tokens / ref[c].seconds):.2f}x" if c in ref and ref[c].tokens else "-"
            print(
                f"{label:30} {c:>7} {tps:>7.1f} {pct(r.ttft, 50):>8.2f}s {pct(r.ttft, 95):>8.2f}s {r.errors:>6} {ratio:>7}"
            )
    if soak_out:
        r, rss = soak_out
        print(f"\nsoak {r.seconds:.0f} s at 8 clients: {r.tokens / r.seconds:.1f} tok/s, {len(r.ttft)} requests, "
              f"errors {r.errors}; RSS MB first/max/last: {rss[0]:.0f}/{max(rss):.0f}/{rss[-1]:.0f} "
              f"(median of first third {statistics.median(rss[: max(1, len(rss) // 3)]):.0f}, "
              f"last third {statistics.median(rss[-max(1, len(rss) // 3):]):.0f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
