"""Serving throughput under concurrent streaming clients: lmforge vs llama-cpp-python's own server.

In one run, against the same GGUF on loopback, with the same threads:
1. the ceiling: a bare llama.cpp loop (llama-cpp-python's C API) decoding 1, 4, 8 sequences in one
   batch, greedy — what continuous batching can reach on this machine, with no server around it;
2. both servers started side by side (the idle one is checked to use no CPU: printed), then, per
   client level (1, 4, 8 streaming clients), rounds that alternate lmforge and the reference
   (A B A B, as decode.py does), so drift on a shared machine hits both alike. In a round each
   client sends --requests-per-client chat requests one after another; both servers get exactly
   the same requests (same prompts, max_tokens, temperature 0 = greedy), and every prompt of the
   run is distinct (no prefix-cache hit from an earlier request except the chat template's own
   prefix). Reported per engine and level: aggregate tok/s (all generated tokens ÷ all round wall
   time), the median of the rounds, TTFT p50/p95, errors, the ratio to the reference and the
   spread of the per-round ratios (a stable run has a narrow spread), and how many greedy answers
   are identical between the two servers;
3. optionally (--soak S) lmforge alone at 8 looping clients, its RSS sampled every 5 s.

The reference is `python -m llama_cpp.server --interrupt_requests False` (one request at a time,
the others queue). Run alone (no other busy process):

    python benchmarks/serve_load.py [--model NAME] [--rounds 4] [--requests-per-client 2] [--max-tokens 64]
                                    [--soak 600]

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

LMFORGE = "lmforge"
REFERENCE = "llama_cpp.server (reference)"
TOPICS = [
    "rivers", "bridges", "bread", "compilers", "mountains", "tea", "trains", "libraries", "kites",
    "glaciers", "lighthouses", "bees", "paper", "clocks", "deserts", "violins", "harbors", "salt",
    "telescopes", "forests",
]  # fmt: skip
ASPECTS = [
    "its history",
    "how it works",
    "its role in daily life",
    "its future",
    "the people behind it",
    "its place in literature",
    "common misconceptions about it",
    "what a child should know about it",
]
CEILING_PROMPT = "Write a long, detailed essay about the history of paper."


def prompt(i: int) -> str:
    """The i-th prompt of the run: 160 distinct ones, then they repeat; -1 is the warm-up."""
    if i < 0:
        return "Say hello in one short sentence."
    i %= len(TOPICS) * len(ASPECTS)
    return f"Write a long, detailed essay about {TOPICS[i % len(TOPICS)]}, focusing on {ASPECTS[i // len(TOPICS)]}."


@dataclass
class Round:
    tokens: int = 0
    errors: int = 0
    seconds: float = 0.0
    ttft: list[float] = field(default_factory=list)
    texts: dict[int, str] = field(default_factory=dict)
    """prompt index → generated text (greedy: comparable between servers)."""
    other_cpu: float = 0.0
    """CPU share (of one core) the other, idle server used during this round."""

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


@dataclass
class Level:
    rounds: list[Round] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.rounds)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.rounds)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def ttft(self) -> list[float]:
        return [t for r in self.rounds for t in r.ttft]

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)

    @property
    def texts(self) -> dict[int, str]:
        return {i: t for r in self.rounds for i, t in r.texts.items()}

    @property
    def requests(self) -> int:
        return sum(len(r.texts) + r.errors for r in self.rounds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its descendants (all threads), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, (0, 0.0))[1]
        todo += [c for c, (ppid, _) in stats.items() if ppid == p]
    return total


def start(cmd: list[str], url: str, log: Path) -> subprocess.Popen:
    # a file, not a pipe: a server that logs a lot would block on a full pipe
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    deadline = time.time() + 300
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
    raise RuntimeError(f"server did not come up: {' '.join(cmd)}")


async def one_request(
    client: httpx.AsyncClient, url: str, model: str, i: int, max_tokens: int, res: Round
) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt(i)}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "repeat_penalty": 1.0,  # llama_cpp.server's own default is 1.1; lmforge's is 1.0 (it ignores this name)
        "stream": True,
    }
    t0 = time.perf_counter()
    first = None
    parts: list[str] = []
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body, timeout=900) as r:
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
                    content = (ch.get("delta") or {}).get("content")
                    if content:
                        res.tokens += 1  # both servers send one chunk per generated token
                        parts.append(content)
                        if first is None:
                            first = time.perf_counter() - t0
    except httpx.HTTPError:
        res.errors += 1
        return
    if first is not None:
        res.ttft.append(first)
    res.texts[i] = "".join(parts)


async def run_round(url: str, model: str, clients: int, per_client: int, base: int, max_tokens: int) -> Round:
    """`clients` concurrent clients, each sending `per_client` requests in a row; prompts base, base+1, ..."""
    res = Round()
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients + 2)) as client:

        async def worker(c: int) -> None:
            for k in range(per_client):
                await one_request(client, url, model, base + c * per_client + k, max_tokens, res)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in range(clients)))
        res.seconds = time.perf_counter() - t0
    return res


async def soak(url: str, model: str, pid: int, seconds: float, max_tokens: int) -> tuple[Round, list[float]]:
    res, rss = Round(), []
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


# ------------------------------------------------------------------ bare batched-decode ceiling


def batch_ceiling(path: Path, threads: int, levels: list[int], steps: int, repeats: int) -> dict[int, float]:
    """Greedy decode of n sequences in one llama.cpp batch per step, driven through the C API with
    no server, scheduler or sampling chain around it: tokens/s for each n (median of `repeats`)."""
    import llama_cpp
    from llama_cpp import _internals

    llm = llama_cpp.Llama(
        str(path), n_ctx=512, n_threads=threads, n_threads_batch=threads, flash_attn=False, verbose=False
    )
    ids = llm.tokenize(CEILING_PROMPT.encode(), add_bos=True)
    nmax = max(levels)
    per_seq = -(-(len(ids) + steps + 1) // 256) * 256
    cp = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
    cp.n_ctx = per_seq * nmax
    cp.n_batch = cp.n_ubatch = max(512, nmax)
    cp.n_seq_max = nmax
    cp.kv_unified = False
    cp.n_threads = cp.n_threads_batch = threads
    ctx = _internals.LlamaContext(model=llm._model, params=cp, verbose=False)
    batch = llama_cpp.llama_batch_init(max(len(ids), nmax), 0, 1)
    smpl = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(smpl, llama_cpp.llama_sampler_init_greedy())

    def decode(items: list[tuple[int, int, int, bool]]) -> None:
        batch.n_tokens = len(items)
        for k, (tok, pos, seq, logits) in enumerate(items):
            batch.token[k], batch.pos[k], batch.n_seq_id[k] = tok, pos, 1
            batch.seq_id[k][0], batch.logits[k] = seq, logits
        if llama_cpp.llama_decode(ctx.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    out: dict[int, float] = {}
    try:
        for n in levels:
            rates = []
            for _ in range(repeats):
                llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx.ctx), True)
                last = []
                for s in range(n):  # prompts, untimed
                    decode([(t, p, s, p == len(ids) - 1) for p, t in enumerate(ids)])
                    last.append(llama_cpp.llama_sampler_sample(smpl, ctx.ctx, -1))
                t0 = time.perf_counter()
                for step in range(steps):
                    decode([(last[s], len(ids) + step, s, True) for s in range(n)])
                    last = [llama_cpp.llama_sampler_sample(smpl, ctx.ctx, s) for s in range(n)]
                rates.append(n * steps / (time.perf_counter() - t0))
            out[n] = statistics.median(rates)
            print(
                f"bare llama.cpp batch of {n}: {out[n]:6.1f} tok/s "
                f"(one step costs {n / out[n] * out[levels[0]] / levels[0]:.2f}x a step of {levels[0]})",
                flush=True,
            )
    finally:
        llama_cpp.llama_sampler_free(smpl)
        llama_cpp.llama_batch_free(batch)
        ctx.close()
        llm.close()
    return out


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--rounds", type=int, default=4, help="A/B rounds per client level")
    ap.add_argument(
        "--requests-per-client",
        type=int,
        default=2,
        help="requests each client sends per round (requests per engine and level = rounds x clients x this)",
    )
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--ceiling-steps", type=int, default=32, help="decode steps of the bare batch loop (0 = skip)"
    )
    ap.add_argument("--ceiling-repeats", type=int, default=3)
    ap.add_argument(
        "--soak", type=float, default=0.0, help="seconds of soak at concurrency 8 on lmforge (0 = skip)"
    )
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument(
        "--reference-interrupts",
        action="store_true",
        help="run the reference with its default --interrupt_requests True (a new request aborts the running "
        "stream: the errors column counts them) instead of False",
    )
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.requests_per_client < 1:
        ap.error("--rounds and --requests-per-client must be >= 1")

    from lmforge.home import Registry

    reg = Registry()
    manifest = reg.get(args.model)
    path = reg.model_path(manifest)
    levels = [int(x) for x in args.concurrency.split(",")]
    print(f"model {args.model} ({path.name}), {args.threads} threads, max_tokens {args.max_tokens}, greedy; "
          f"{args.rounds} rounds x {args.requests_per_client} requests per client per level", flush=True)  # fmt: skip

    ceiling = {}
    if args.ceiling_steps > 0:
        ceiling = batch_ceiling(path, args.threads, levels, args.ceiling_steps, args.ceiling_repeats)

    commands = {
        LMFORGE: lambda port: [
            sys.executable, "-m", "lmforge", "serve", "-m", args.model, "--port", str(port),
            "--slots", str(max(levels)), "--threads", str(args.threads), "--ctx", "2048",
            "--max-queue", "256", "--keep-alive", "0",
        ],
        REFERENCE: lambda port: [
            sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", args.model,
            "--port", str(port), "--n_ctx", "2048", "--n_threads", str(args.threads),
            "--n_threads_batch", str(args.threads),
            "--interrupt_requests", str(args.reference_interrupts),  # False: queue overlapping requests
        ],
    }  # fmt: skip
    if args.skip_reference:
        commands.pop(REFERENCE)
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    table: dict[str, dict[int, Level]] = {label: {c: Level() for c in levels} for label in commands}
    soak_out = None
    try:
        for label, cmd in commands.items():  # one after the other: loading is not measured
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            servers[label] = (
                start(cmd(port), url, Path(tempfile.gettempdir()) / f"serve_load-{port}.log"),
                url,
            )
            r = asyncio.run(run_round(url, args.model, 1, 1, -1, 8))  # warm-up, a prompt not used below
            if r.errors:
                raise RuntimeError(f"{label}: warm-up request failed")
        cpu0 = {label: cpu_seconds(p.pid) for label, (p, _) in servers.items()}
        time.sleep(5)
        idle = {label: (cpu_seconds(p.pid) - cpu0[label]) / 5 for label, (p, _) in servers.items()}
        print("idle CPU over 5 s (share of one core): "
              + ", ".join(f"{label} {v:.1%}" for label, v in idle.items()), flush=True)  # fmt: skip

        base = 0
        for c in levels:
            per_round = c * args.requests_per_client
            for rnd in range(args.rounds):
                for label, (_proc, url) in servers.items():  # A B A B: same prompts to each
                    others = [p.pid for lab, (p, _) in servers.items() if lab != label]
                    o0 = sum(cpu_seconds(p) for p in others)
                    r = asyncio.run(
                        run_round(url, args.model, c, args.requests_per_client, base, args.max_tokens)
                    )
                    r.other_cpu = (sum(cpu_seconds(p) for p in others) - o0) / r.seconds if others else 0.0
                    table[label][c].rounds.append(r)
                    print(f"{label:30} c={c} round {rnd + 1}: {r.tok_s:6.1f} tok/s, {r.tokens} tokens in "
                          f"{r.seconds:.1f} s, TTFT p50 {pct(r.ttft, 50):.2f} s, errors {r.errors}, "
                          f"idle server CPU {r.other_cpu:.1%}", flush=True)  # fmt: skip
                base += per_round

        if args.soak > 0:
            proc, url = servers[LMFORGE]
            soak_out = asyncio.run(soak(url, args.model, proc.pid, args.soak, args.max_tokens))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    report(args, levels, table, ceiling, soak_out)
    return 0


def report(args, levels, table, ceiling, soak_out) -> None:
    print(f"\nmodel {args.model}, {args.threads} threads, max_tokens {args.max_tokens}, temperature 0; "
          f"{args.rounds} interleaved rounds (lmforge, reference, lmforge, ...) x {args.requests_per_client} "
          "requests per client per level\n")  # fmt: skip
    ref = table.get(REFERENCE, {})
    ref1 = ref[levels[0]].tok_s if ref else 0.0
    head = (f"{'server':30} {'clients':>7} {'requests':>8} {'tok/s':>7} {'round med':>9} {'TTFT p50':>9} "
            f"{'TTFT p95':>9} {'errors':>6} {'vs ref':>7} {'rounds vs ref':>14} {f'vs ref@{levels[0]}':>9}")  # fmt: skip
    if ceiling:
        head += f" {'% of bare batch':>15}"
    print(head)
    for label, rows in table.items():
        for c, lv in rows.items():
            ratio = spread = vs1 = "-"
            if c in ref and ref[c].tok_s:
                ratio = f"{lv.tok_s / ref[c].tok_s:.2f}x"
                rr = [a.tok_s / b.tok_s for a, b in zip(lv.rounds, ref[c].rounds, strict=True) if b.tok_s]
                spread = f"{min(rr):.2f}-{max(rr):.2f}x" if rr else "-"
            if ref1:
                vs1 = f"{lv.tok_s / ref1:.2f}x"
            med = statistics.median(r.tok_s for r in lv.rounds) if lv.rounds else 0.0
            line = (f"{label:30} {c:>7} {lv.requests:>8} {lv.tok_s:>7.1f} {med:>9.1f} {pct(lv.ttft, 50):>8.2f}s "
                    f"{pct(lv.ttft, 95):>8.2f}s {lv.errors:>6} {ratio:>7} {spread:>14} {vs1:>9}")  # fmt: skip
            if ceiling and c in ceiling:
                line += f" {lv.tok_s / ceiling[c]:>15.0%}"
            print(line)
    if ceiling:
        print("\nbare llama.cpp batched decode (no server), tok/s: "
              + ", ".join(f"{n} seq {v:.1f}" for n, v in ceiling.items()))  # fmt: skip
    if LMFORGE in table and REFERENCE in table:
        print("\nidentical greedy answers, lmforge vs reference (same prompt): "
              + ", ".join(f"{c} clients {_same(table[LMFORGE][c], ref[c])}" for c in levels))  # fmt: skip
    worst = max(
        (r.other_cpu for rows in table.values() for lv in rows.values() for r in lv.rounds), default=0.0
    )
    print(f"most CPU the idle server used during the other's round: {worst:.1%} of one core")
    if soak_out:
        r, rss = soak_out
        print(f"\nsoak {r.seconds:.0f} s at 8 clients: {r.tok_s:.1f} tok/s, {len(r.ttft)} requests, "
              f"errors {r.errors}; RSS MB first/max/last: {rss[0]:.0f}/{max(rss):.0f}/{rss[-1]:.0f} "
              f"(median of first third {statistics.median(rss[: max(1, len(rss) // 3)]):.0f}, "
              f"last third {statistics.median(rss[-max(1, len(rss) // 3):]):.0f})")  # fmt: skip


def _same(a: Level, b: Level) -> str:
    ta, tb = a.texts, b.texts
    both = [i for i in ta if i in tb]
    return f"{sum(ta[i] == tb[i] for i in both)}/{len(both)}"


if __name__ == "__main__":
    sys.exit(main())
