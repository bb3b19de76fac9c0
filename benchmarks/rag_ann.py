"""Approximate search per shard (issue 17): HNSW (faiss, rag/ann.py) beside exact numpy search, 1M chunks.

    python benchmarks/rag_ann.py [--rows 1000000] [--queries 150] [--rounds 4]
                                 [--cross-sizes 1024 2048 4096 8192 16384 32768 65536] [--quick]

1. A synthetic KB of --rows chunks written through lmforge's Store (SQLite, then `Store.shards()`
   builds every shard's indexes the way a real KB does: BM25, and an HNSW graph for each shard of
   at least AnnConfig.min_rows chunks), at the KB default shard size (65,536). Vectors: 384-dim
   unit vectors (multilingual-e5-small's width) in 1,000 clusters, noise of norm 2 around unit
   centres (nearest neighbour cosine ~0.3, a random pair ~0): clustered, yet hard enough that an
   HNSW graph with a small ef misses neighbours (ef 32 gives recall@10 ~0.95 on one shard). Terms:
   60 per chunk drawn from the real vocabulary of examples/rag/docs, as benchmarks/rag.py does;
   documents of 100 chunks, alternately in groups "even" and "odd" (for the ACL rows). Reported:
   SQLite write time, index build time (per shard), index sizes on disk and the process RSS.
2. Query latency, p50 / p95 ms, every engine answering the same --queries queries (after the same 3
   untimed warm-up queries) in --rounds interleaved rounds: BM25 over all shards; exact dense (the
   numpy scan over all shards, vectors in memory, as the store held them before graphs), also with
   numpy's BLAS held to one thread (on a busy machine a 2-thread BLAS call waits for the other
   core's time slice, and that wait, not the scan, can dominate); HNSW dense
   (`Shard.dense`, 50 candidates per shard as `Retriever` asks); both again with an ACL mask hiding
   half the documents; hybrid retrieval (`Retriever.search`, with a precomputed query vector, so the
   query embedding is excluded) through the graphs, and the same with the graphs set aside (exact),
   both also for a caller who sees half the documents. Recall@10 of the HNSW dense top-10 (merged
   over all shards) against the exact top-10 for the same queries, with and without the mask, and
   the overlap of the hybrids' top-5. Then masks on shard 0 that leave every m-th document visible
   (50% down to 3%): the masked graph search (over-fetch, or the exact scan past max_fetch) vs the
   exact scan, and faiss's own filtered HNSW search (IDSelectorBitmap) as the alternative to
   over-fetching: p50 / p95, recall@10, results shorter than asked.
3. Crossover (sets AnnConfig.min_rows): one shard of N rows (the first N rows of shard 0), exact
   scan (BLAS default threads, and 1 thread) vs HNSW for 50 candidates, interleaved, p50 / p95,
   graph build time and recall@10 per N; then the smallest N from which HNSW's p95 beats each exact
   variant, and from which its recall@10 stays >= 0.95, for every larger N measured.

--quick: 131,072 rows (two full shards), 60 queries, crossover at 2k/8k/64k. Needs faiss-cpu;
faiss builds and searches on 2 OpenMP threads (`faiss.omp_set_num_threads(2)`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

DIM, CLUSTERS, SIGMA, PER_DOC, TERMS, K, CANDIDATES, WARMUP = 384, 1000, 2.0, 100, 60, 10, 50, 3


def _rag_bench():  # noqa: ANN202 - benchmarks/rag.py: vocabulary() and pct()
    spec = importlib.util.spec_from_file_location("rag_bench", Path(__file__).with_name("rag.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def clustered(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    """n unit vectors, each a random centre plus Gaussian noise of norm ~SIGMA. (n, DIM) float32"""
    x = centres[rng.integers(0, len(centres), n)]
    x += SIGMA * rng.standard_normal((n, DIM), dtype=np.float32) / np.float32(DIM**0.5)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def cpu_line() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"


def du(paths: list[Path]) -> int:
    return sum(f.stat().st_size for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


# ------------------------------------------------------------------ 1. the KB


def build_kb(tmp: Path, rows: int, vocab: list[str], centres: np.ndarray):  # noqa: ANN201 - KnowledgeBase
    from lmforge.rag.pipeline import EmbedderCache, KBConfig, KnowledgeBase

    kb = KnowledgeBase("ann", tmp / "kb", KBConfig(embedder="synthetic", shard_size=65536), EmbedderCache())
    store = kb.store
    rng = np.random.default_rng(0)
    words = np.array(vocab, dtype=object)
    t = time.perf_counter()
    with store.connect() as db:
        version = store.begin(db)
        store.set_meta(db, "embedder", "synthetic/384")
        store.set_meta(db, "dim", str(DIM))
        batch_docs = 100  # vectors and terms drawn 10,000 chunks at a time
        for first in range(0, rows // PER_DOC, batch_docs):
            docs = range(first, min(rows // PER_DOC, first + batch_docs))
            vecs = clustered(len(docs) * PER_DOC, rng, centres)
            terms = words[rng.integers(0, len(words), (len(docs) * PER_DOC, TERMS))]
            for j, d in enumerate(docs):
                doc_id = store.insert_doc(db, name=f"doc{d}.txt", sha256=f"{d:064x}", title=f"doc{d}",
                                          groups=("even",) if d % 2 == 0 else ("odd",), pages=None, nbytes=0,
                                          encoding="utf-8", version=version)  # fmt: skip
                chunk_rows = []
                for i in range(PER_DOC):
                    t_row = terms[j * PER_DOC + i]
                    chunk_rows.append((i, " ".join(t_row[:12]), None, "", "text", TERMS, " ".join(t_row)))
                store.insert_chunks(db, doc_id, version, chunk_rows, vecs[j * PER_DOC : (j + 1) * PER_DOC])
        store.commit(db, version)
    write_s = time.perf_counter() - t
    print(f"wrote {rows:,} chunks to SQLite in {write_s:.0f} s", flush=True)
    t = time.perf_counter()
    shards = store.shards()
    build_s = time.perf_counter() - t
    folders = sorted(store.index_dir.glob("s*-v*"))
    sizes = {
        "ann_mb": du([f / "ann.faiss" for f in folders if (f / "ann.faiss").exists()]) / 2**20,
        "vectors_mb": du([f / "vectors.npy" for f in folders]) / 2**20,
        "bm25_mb": du([f / "bm25" for f in folders]) / 2**20,
        "sqlite_mb": du([store.folder / "kb.sqlite"]) / 2**20,
    }
    graphs = sum(s.ann is not None for s in shards)
    print(f"index build (Store.shards(): BM25 + HNSW per shard, from SQLite): {build_s:.0f} s for {len(shards)} "
          f"shards ({graphs} with a graph) = {build_s / len(shards):.1f} s per shard; on disk: ann.faiss "
          f"{sizes['ann_mb']:,.0f} MB, vectors.npy {sizes['vectors_mb']:,.0f} MB, bm25 {sizes['bm25_mb']:,.0f} MB, "
          f"kb.sqlite {sizes['sqlite_mb']:,.0f} MB; process RSS {rss_mb():,.0f} MB", flush=True)  # fmt: skip
    return kb, {"write_s": write_s, "build_s": build_s, "shards": len(shards), "graphs": graphs, **sizes}


# ------------------------------------------------------------------ 2. query latency


def interleave(engines: dict[str, Callable[[int], object]], modes: dict[str, Callable[[bool], None]],
               n_queries: int, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[object]]]:  # fmt: skip
    """Every engine answers queries WARMUP..WARMUP+n_queries-1 in `rounds` blocks; `modes[key](True)`
    runs before an engine's block and `modes[key](False)` after it. Returns times and results."""
    times: dict[str, list[float]] = {key: [] for key in engines}
    results: dict[str, list[object]] = {key: [] for key in engines}
    for key, fn in engines.items():
        modes.get(key, lambda on: None)(True)
        for i in range(WARMUP):
            fn(i)
        modes.get(key, lambda on: None)(False)
    bounds = [WARMUP + (n_queries * r) // rounds for r in range(rounds + 1)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        for key, fn in engines.items():
            modes.get(key, lambda on: None)(True)
            for i in range(lo, hi):
                t = time.perf_counter()
                out = fn(i)
                times[key].append(time.perf_counter() - t)
                results[key].append(out)
            modes.get(key, lambda on: None)(False)
    return times, results


def one_blas_thread() -> Callable[[bool], None]:
    """A mode for `interleave`: numpy's BLAS limited to one thread while on. On a machine whose cores
    are busy, a 2-thread BLAS call waits for the second core's time slice (milliseconds); this
    measures the scan's own cost."""
    from threadpoolctl import threadpool_limits

    held: list = []

    def mode(on: bool) -> None:
        if on:
            held.append(threadpool_limits(limits=1, user_api="blas"))
        else:
            held.pop().restore_original_limits()

    return mode


def top(per_shard: list[list[tuple[int, float]]], k: int) -> list[int]:
    merged = sorted((x for found in per_shard for x in found), key=lambda x: -x[1])
    return [cid for cid, _ in merged[:k]]


def overlap(a: list[list[int]], b: list[list[int]], k: int) -> float:
    return float(
        np.mean([len(set(x[:k]) & set(y[:k])) / max(1, min(k, len(y))) for x, y in zip(a, b, strict=True)])
    )


def recall_rows(got: list, want: list) -> float:
    """recall@K of lists of (row, score) best first, against the same queries' exact lists."""
    return overlap([[r for r, _ in x[:K]] for x in got], [[r for r, _ in x[:K]] for x in want], K)


def bench_queries(kb, n_queries: int, rounds: int, vocab: list[str], centres: np.ndarray, pct) -> dict:  # noqa: ANN001
    from lmforge.rag import ann
    from lmforge.rag.retrieve import Retriever, SearchParams

    store = kb.store
    shards = store.shards()
    ids_of = [s.ids for s in shards]
    # the exact reference holds the vectors in memory, as the store did before graphs
    in_memory = [np.load(store.index_dir / f"s{s.id}-v{s.version}" / "vectors.npy") for s in shards]
    total = WARMUP + n_queries
    qv = clustered(total, np.random.default_rng(1), centres)
    rng = random.Random(1)
    qtexts = [" ".join(rng.choice(vocab) for _ in range(4)) for _ in range(total)]
    qterms = [kb.analyzer.terms(q) for q in qtexts]
    caller = frozenset({"even"})  # sees half the documents
    masks = [store.mask(s, caller) for s in shards]
    graphs = [s.ann for s in shards]
    mapped = [s.vectors for s in shards]

    def exact_mode(on: bool) -> None:  # the same shards without their graphs, vectors in memory
        for s, g, v, m in zip(shards, graphs, in_memory, mapped, strict=True):
            s.ann, s.vectors = (None, v) if on else (g, m)

    def exact_all(i: int, mask: bool) -> list[list[tuple[int, float]]]:
        return [
            [(int(ids[r]), sc) for r, sc in ann.exact(v, qv[i], CANDIDATES, m if mask else None)]
            for ids, v, m in zip(ids_of, in_memory, masks, strict=True)
        ]

    ret_ann, ret_exact, ret_ann_acl, ret_exact_acl = Retriever(), Retriever(), Retriever(), Retriever()
    # the English second opinion reorders 20 candidates whatever the collection's size (its cost: rag_rules.py)
    p = SearchParams(k=5, second_opinion=None)
    tail = [s for s in shards if s.ann is None]  # shards under min_rows: scanned exactly in every engine
    engines: dict[str, Callable[[int], object]] = {
        "bm25": lambda i: [s.lexical_search(qterms[i], CANDIDATES, None) for s in shards],
        "dense_exact": lambda i: exact_all(i, False),
        "dense_exact_1t": lambda i: exact_all(i, False),
        "dense_hnsw": lambda i: [s.dense(qv[i], CANDIDATES, None) for s in shards],
        "dense_tail": lambda i: [s.dense(qv[i], CANDIDATES, None) for s in tail],
        "acl_exact": lambda i: exact_all(i, True),
        "acl_hnsw": lambda i: [s.dense(qv[i], CANDIDATES, m) for s, m in zip(shards, masks, strict=True)],
        "hybrid_exact": lambda i: [h.chunk_id for h in ret_exact.search(kb, qtexts[i], p, qvec=qv[i])],
        "hybrid_hnsw": lambda i: [h.chunk_id for h in ret_ann.search(kb, qtexts[i], p, qvec=qv[i])],
        "hybrid_exact_acl": lambda i: [
            h.chunk_id for h in ret_exact_acl.search(kb, qtexts[i], p, caller=caller, qvec=qv[i])
        ],
        "hybrid_hnsw_acl": lambda i: [
            h.chunk_id for h in ret_ann_acl.search(kb, qtexts[i], p, caller=caller, qvec=qv[i])
        ],
    }
    modes = {"hybrid_exact": exact_mode, "hybrid_exact_acl": exact_mode, "dense_exact_1t": one_blas_thread()}
    times, results = interleave(engines, modes, n_queries, rounds)
    res: dict = {key: (pct(ts, 50), pct(ts, 95)) for key, ts in times.items()}
    tops = {
        key: [top(r, K) for r in results[key]]
        for key in ("dense_exact", "dense_hnsw", "acl_exact", "acl_hnsw")
    }
    res["recall"] = overlap(tops["dense_hnsw"], tops["dense_exact"], K)
    res["recall_acl"] = overlap(tops["acl_hnsw"], tops["acl_exact"], K)
    res["hybrid_overlap"] = overlap(results["hybrid_hnsw"], results["hybrid_exact"], 5)
    res["hybrid_overlap_acl"] = overlap(results["hybrid_hnsw_acl"], results["hybrid_exact_acl"], 5)
    res["tail_rows"] = sum(len(s.ids) for s in tail)
    hidden = {int(c) for ids, m in zip(ids_of, masks, strict=True) for c in ids[~m]}
    res["acl_leaks"] = sum(len(hidden & set(t)) for t in tops["acl_hnsw"])
    return res


LABELS = {
    "bm25": "BM25, all shards (bm25s numba)",
    "dense_exact": "dense exact (numpy), all shards",
    "dense_exact_1t": "the same, BLAS on 1 thread",
    "dense_hnsw": "dense HNSW, all shards",
    "dense_tail": "of which the exact tail shard(s)",
    "acl_exact": "dense exact, ACL mask (half hidden)",
    "acl_hnsw": "dense HNSW, ACL mask (half hidden)",
    "hybrid_exact": "hybrid retrieval, exact dense",
    "hybrid_hnsw": "hybrid retrieval, HNSW dense",
    "hybrid_exact_acl": "hybrid, ACL (half hidden), exact dense",
    "hybrid_hnsw_acl": "hybrid, ACL (half hidden), HNSW dense",
}


def filtered_search(index, q: np.ndarray, k: int, ef: int, mask: np.ndarray) -> list[tuple[int, float]]:  # noqa: ANN001
    """The alternative to over-fetching: faiss's own filtered HNSW search (IDSelectorBitmap), the
    bitmap packed per query as a caller's mask would be."""
    import faiss

    bits = np.packbits(mask, bitorder="little")
    params = faiss.SearchParametersHNSW(
        efSearch=max(ef, k), sel=faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
    )
    scores, rows = index.search(q.reshape(1, -1), k, params=params)
    return [(int(r), float(sc)) for r, sc in zip(rows[0], scores[0], strict=True) if r >= 0]


def bench_masks(kb, n_queries: int, rounds: int, centres: np.ndarray, pct) -> list[dict]:  # noqa: ANN001
    """Shard 0 with masks hiding all but every m-th document: the graph (over-fetch, or the exact
    scan past max_fetch) vs the exact scan, and faiss's filtered search as the alternative; p50 / p95,
    recall@10, short results."""
    from lmforge.rag import ann

    shard = kb.store.shards()[0]
    if shard.ann is None:
        return []
    cfg, n = shard.ann.cfg, len(shard.ids)
    vecs = np.load(kb.store.index_dir / f"s{shard.id}-v{shard.version}" / "vectors.npy")
    qv = clustered(WARMUP + n_queries, np.random.default_rng(3), centres)
    out = []
    for every in (2, 3, 4, 5, 10, 33):
        mask = shard.docs % every == 0
        engines = {
            "exact": lambda i, m=mask: ann.exact(vecs, qv[i], CANDIDATES, m),
            "hnsw": lambda i, m=mask: shard.ann.search(shard.vectors, qv[i], CANDIDATES, m),
            "filtered": lambda i, m=mask: filtered_search(
                shard.ann.index, qv[i], CANDIDATES, cfg.ef_search, m
            ),
        }
        times, results = interleave(engines, {}, n_queries, rounds)
        recall, recall_f = (
            recall_rows(results["hnsw"], results["exact"]),
            recall_rows(results["filtered"], results["exact"]),
        )
        leaks = sum(
            int(np.count_nonzero(~mask[[r for r, _ in x]])) for x in results["hnsw"] + results["filtered"]
        )
        short = sum(len(x) < CANDIDATES for x in results["hnsw"])
        short_f = sum(len(x) < CANDIDATES for x in results["filtered"])
        fetch = int(np.ceil(cfg.overfetch * CANDIDATES * n / np.count_nonzero(mask)))
        path = f"graph, {fetch:,} rows asked" if fetch <= cfg.max_fetch * n else "exact scan (past max_fetch)"
        row = {"visible": float(mask.mean()), "recall": recall, "recall_filtered": recall_f, "path": path,
               **{key: (pct(ts, 50), pct(ts, 95)) for key, ts in times.items()}}  # fmt: skip
        out.append(row)
        print(f"  {100 * row['visible']:5.1f}% visible: exact {row['exact'][0]:6.2f} / {row['exact'][1]:6.2f}, "
              f"masked HNSW {row['hnsw'][0]:6.2f} / {row['hnsw'][1]:6.2f} ms; recall@10 {recall:.3f}; "
              f"{path}; short results {short}. faiss filtered search (ef {cfg.ef_search}) {row['filtered'][0]:6.2f} / "
              f"{row['filtered'][1]:6.2f} ms, recall@10 {recall_f:.3f}, short results {short_f}; hidden rows "
              f"returned by either {leaks}", flush=True)  # fmt: skip
    return out


# ------------------------------------------------------------------ 3. crossover


def bench_crossover(
    kb, sizes: list[int], n_queries: int, rounds: int, centres: np.ndarray, pct
) -> list[dict]:  # noqa: ANN001
    from lmforge.rag import ann

    shard0 = kb.store.shards()[0]
    base = np.load(kb.store.index_dir / f"s{shard0.id}-v{shard0.version}" / "vectors.npy")
    qv = clustered(WARMUP + n_queries, np.random.default_rng(2), centres)
    out = []
    for n in sizes:
        if n > len(base):
            continue
        vecs = np.ascontiguousarray(base[:n])
        t = time.perf_counter()
        # the whole shard: its graph as the store built it (its build time is in the KB's line above)
        graph = shard0.ann if n == len(base) and shard0.ann else ann.AnnIndex.build(vecs, kb.store.ann_cfg)
        build_s = None if graph is shard0.ann else time.perf_counter() - t
        engines = {
            "exact": lambda i, v=vecs: ann.exact(v, qv[i], CANDIDATES, None),
            "exact_1t": lambda i, v=vecs: ann.exact(v, qv[i], CANDIDATES, None),
            "hnsw": lambda i, g=graph, v=vecs: g.search(v, qv[i], CANDIDATES, None),
        }
        times, results = interleave(engines, {"exact_1t": one_blas_thread()}, n_queries, rounds)
        recall = recall_rows(results["hnsw"], results["exact"])
        row = {"rows": n, "build_s": build_s, "recall": recall,
               **{key: (pct(ts, 50), pct(ts, 95)) for key, ts in times.items()}}  # fmt: skip
        out.append(row)
        built = "store's" if build_s is None else f"{build_s:.1f} s"
        print(f"  {n:>7,} rows: exact {row['exact'][0]:6.2f} / {row['exact'][1]:6.2f}, exact 1 BLAS thread "
              f"{row['exact_1t'][0]:6.2f} / {row['exact_1t'][1]:6.2f}, HNSW {row['hnsw'][0]:6.2f} / "
              f"{row['hnsw'][1]:6.2f} ms (p50 / p95); HNSW recall@10 {recall:.3f}, graph build {built}",
              flush=True)  # fmt: skip

    def from_on(ok: list[bool]) -> int | None:
        """The smallest size from which `ok` holds for it and every larger size measured."""
        return next((r["rows"] for j, r in enumerate(out) if all(ok[j:])), None)

    for what, ok in (
        ("HNSW p95 < exact p95", [r["hnsw"][1] < r["exact"][1] for r in out]),
        ("HNSW p95 < exact (1 BLAS thread) p95", [r["hnsw"][1] < r["exact_1t"][1] for r in out]),
        ("HNSW recall@10 >= 0.95", [r["recall"] >= 0.95 for r in out]),
    ):
        first = from_on(ok)
        print(f"  {what}: from {first:,} rows on" if first else f"  {what}: not from any size measured")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="chunks in the synthetic KB")
    ap.add_argument("--queries", type=int, default=150, help="timed queries per engine")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds the queries are split into")
    ap.add_argument(
        "--cross-sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768, 65536]
    )
    ap.add_argument("--quick", action="store_true", help="131,072 rows, 60 queries, 3 crossover sizes")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.queries, args.cross_sizes = 131_072, 60, [2048, 8192, 65536]
    if args.rows < PER_DOC or not 1 <= args.rounds <= args.queries:
        ap.error(f"need --rows >= {PER_DOC} and 1 <= --rounds <= --queries")
    import faiss

    faiss.omp_set_num_threads(2)
    rag_bench = _rag_bench()
    pct = rag_bench.pct
    print(f"machine: {cpu_line()}; faiss {faiss.__version__}", flush=True)
    centres = np.random.default_rng(123).standard_normal((CLUSTERS, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    tmp = Path(tempfile.mkdtemp(prefix="lmforge-rag-ann-"))
    t0 = time.perf_counter()
    try:
        vocab = rag_bench.vocabulary()
        kb, built = build_kb(tmp, args.rows, vocab, centres)
        cfg = kb.store.ann_cfg
        print(f"AnnConfig: min_rows {cfg.min_rows}, M {cfg.m}, ef_construction {cfg.ef_construction}, "
              f"ef_search {cfg.ef_search}, overfetch {cfg.overfetch}, max_fetch {cfg.max_fetch}", flush=True)  # fmt: skip
        res = bench_queries(kb, args.queries, args.rounds, vocab, centres, pct)
        print(f"\n{args.rows:,} chunks in {built['shards']} shards, p50 / p95 ms, {args.queries} queries per "
              f"engine in {args.rounds} interleaved rounds ({CANDIDATES} candidates per shard; hybrid k=5, "
              "query embedding excluded):", flush=True)  # fmt: skip
        for key, label in LABELS.items():
            print(f"  {key:16} {label:38} {res[key][0]:8.2f} / {res[key][1]:8.2f}")
        print(f"recall@10 of HNSW dense vs exact (top-10 merged over all shards): {res['recall']:.3f}; with the "
              f"ACL mask {res['recall_acl']:.3f} (hidden chunks returned: {res['acl_leaks']}); hybrid top-5 "
              f"overlap, HNSW vs exact: {res['hybrid_overlap']:.3f}")  # fmt: skip
        print(f"hybrid p95 through HNSW: {res['hybrid_hnsw'][1]:.2f} ms (target < 50 ms) vs "
              f"{res['hybrid_exact'][1]:.2f} ms exact; with the ACL mask {res['hybrid_hnsw_acl'][1]:.2f} vs "
              f"{res['hybrid_exact_acl'][1]:.2f} ms (top-5 overlap {res['hybrid_overlap_acl']:.3f}); exact tail "
              f"shard(s): {res['tail_rows']:,} rows", flush=True)  # fmt: skip
        print(f"\nACL masks on shard 0 ({CANDIDATES} candidates; every m-th document visible):", flush=True)
        bench_masks(kb, min(args.queries, 100), args.rounds, centres, pct)
        print("\ncrossover on one shard (first N rows of shard 0), 50 candidates:", flush=True)
        bench_crossover(kb, args.cross_sizes, min(args.queries, 100), args.rounds, centres, pct)
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB; wall "
              f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
        kb.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
