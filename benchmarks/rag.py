"""Knowledge-base benchmark: ingestion throughput, query latency at 10k/100k chunks, retrieval quality.

    python benchmarks/rag.py [--sizes 10000 100000] [--queries 200] [--skip-ingest] [--skip-quality]

1. Ingestion of a mixed zh/en folder (examples/rag/docs plus HTML, DOCX and PDF renderings of
   some of them): documents/s, PDF pages/s, chunks/s, beside the embedder alone on the same chunk
   texts (the pipeline's ceiling: embedding dominates on CPU).
2. Query latency on synthetic KBs of N chunks × 384 dims (random unit vectors; term lists drawn
   from the real vocabulary of the example corpus): BM25 (bm25s numba), exact dense (numpy), the
   whole hybrid retrieval (both + RRF + metadata fetch, excluding the query's embedding) and a
   cached repeat, through lmforge's own code. Alternatives measured on the same vectors in the
   same run: faiss IndexFlatIP, qdrant-client local mode, bm25s with its numpy backend.
3. Quality on examples/rag/qa.jsonl: hit@5 and MRR for dense-only, BM25-only and hybrid.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "rag"


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, q))


def timed(fn, n: int) -> tuple[float, float]:
    ts = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        ts.append(time.perf_counter() - t)
    return pct(ts, 50), pct(ts, 95)


# ------------------------------------------------------------------ 1. ingestion


def mixed_folder(dest: Path) -> tuple[Path, int]:
    """examples/rag/docs + HTML, DOCX and PDF renderings; returns (folder, PDF pages)."""
    import docx
    from fpdf import FPDF

    shutil.copytree(EXAMPLES / "docs", dest)
    src = sorted((EXAMPLES / "docs").glob("*.md"))
    for p in src[:4]:  # HTML
        body = "".join(
            f"<h2>{line[3:]}</h2>" if line.startswith("## ") else f"<p>{line}</p>"
            for line in p.read_text(encoding="utf-8").splitlines()
            if line.strip()
        )
        (dest / f"{p.stem}.html").write_text(
            f"<html><head><title>{p.stem}</title></head><body>{body}</body></html>", encoding="utf-8"
        )
    for p in src[4:8]:  # DOCX
        d = docx.Document()
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                d.add_heading(line.lstrip("# "), level=min(3, len(line) - len(line.lstrip("#"))))
            elif line.strip():
                d.add_paragraph(line)
        d.save(str(dest / f"{p.stem}-copy.docx"))
    pages = 0
    for p in sorted((EXAMPLES / "docs").glob("license-*.txt")):  # PDF (English: the core fonts have no CJK)
        pdf = FPDF()
        pdf.set_font("helvetica", size=10)
        pdf.add_page()
        text = p.read_text(encoding="utf-8").encode("latin-1", "replace").decode("latin-1")
        pdf.multi_cell(0, 5, text)
        pdf.output(str(dest / f"{p.stem}.pdf"))
        pages += pdf.page_no()
    return dest, pages


def bench_ingest(tmp: Path) -> dict:
    from lmforge.rag.pipeline import EmbedderCache, KnowledgeBases, embed_text

    folder, pdf_pages = mixed_folder(tmp / "mixed")
    embedders = EmbedderCache()
    kbs = KnowledgeBases(tmp / "kb", embedders)
    kb = kbs.create("ingest")
    kb.analyzer  # noqa: B018 - load jieba's dictionary outside the timing
    t = time.perf_counter()
    report = kb.add([folder])
    wall = time.perf_counter() - t
    texts = [
        embed_text(c.title, (c.heading,), c.text) for d in kb.documents() for c in kb.store.doc_chunks(d.name)
    ]
    t = time.perf_counter()
    kb.embedder.passages(texts)
    embed_only = time.perf_counter() - t
    n_docs = len(report.added)
    out = {"docs": n_docs, "pdf_pages": pdf_pages, "chunks": report.chunks, "seconds": wall,
           "docs_per_s": n_docs / wall, "chunks_per_s": report.chunks / wall, "embed_only_chunks_per_s": len(texts) / embed_only,
           "failed": report.failed}  # fmt: skip
    print(f"ingest: {n_docs} docs ({pdf_pages} PDF pages), {report.chunks} chunks in {wall:.1f} s = "
          f"{out['docs_per_s']:.2f} docs/s, {out['chunks_per_s']:.1f} chunks/s; embedder alone on the same "
          f"texts {out['embed_only_chunks_per_s']:.1f} chunks/s → pipeline at "
          f"{100 * out['chunks_per_s'] / out['embed_only_chunks_per_s']:.0f}% of the embedding ceiling")  # fmt: skip
    kbs.close()
    return out


# ------------------------------------------------------------------ 2. latency


def vocabulary() -> list[str]:
    from lmforge.rag.lexical import Analyzer

    a = Analyzer()
    words: list[str] = []
    for p in sorted((EXAMPLES / "docs").iterdir()):
        words += a.terms(p.read_text(encoding="utf-8"))
    return words


def synthetic_kb(tmp: Path, n: int, vocab: list[str], rng: random.Random):
    from lmforge.rag.pipeline import EmbedderCache, KBConfig, KnowledgeBase

    kb = KnowledgeBase(
        f"s{n}", tmp / f"s{n}", KBConfig(embedder="synthetic", shard_size=65536), EmbedderCache()
    )
    nrng = np.random.default_rng(0)
    store = kb.store
    with store.connect() as db:
        version = store.begin(db)
        store.set_meta(db, "embedder", "synthetic/384")
        store.set_meta(db, "dim", "384")
        per_doc = 100
        for d in range(n // per_doc):
            doc_id = store.insert_doc(db, name=f"doc{d}.txt", sha256=f"{d:064x}", title=f"doc{d}", groups=(),
                                      pages=None, nbytes=0, encoding="utf-8", version=version)  # fmt: skip
            vecs = nrng.standard_normal((per_doc, 384)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            rows = []
            for i in range(per_doc):
                terms = [rng.choice(vocab) for _ in range(60)]
                rows.append((i, " ".join(terms), None, "", "text", 60, " ".join(terms)))
            store.insert_chunks(db, doc_id, version, rows, vecs)
        store.commit(db, version)
    t = time.perf_counter()
    store.shards()
    build = time.perf_counter() - t
    return kb, build


def bench_size(tmp: Path, n: int, n_queries: int, vocab: list[str], rng: random.Random) -> dict:
    from lmforge.rag.retrieve import Retriever, SearchParams

    kb, build = synthetic_kb(tmp, n, vocab, rng)
    shards = kb.store.shards()
    all_vecs = np.concatenate([s.vectors for s in shards])
    qv = np.random.default_rng(1).standard_normal((n_queries, 384)).astype(np.float32)
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    qtexts = [" ".join(rng.choice(vocab) for _ in range(4)) for _ in range(n_queries)]
    qterms = [kb.analyzer.terms(q) for q in qtexts]
    res = {"chunks": n, "index_build_s": build}

    res["bm25"] = timed(lambda i: [s.lexical_search(qterms[i], 50, None) for s in shards], n_queries)
    res["dense"] = timed(lambda i: [s.dense(qv[i], 50, None) for s in shards], n_queries)
    ret = Retriever()
    res["hybrid"] = timed(lambda i: ret.search(kb, qtexts[i], SearchParams(k=5), qvec=qv[i]), n_queries)
    res["cached"] = timed(lambda i: ret.search(kb, qtexts[i], SearchParams(k=5), qvec=qv[i]), n_queries)
    mask = np.ones(len(shards[0].ids), dtype=bool)
    mask[::2] = False  # a caller who may see half the documents
    res["dense_acl"] = timed(lambda i: shards[0].dense(qv[i], 50, mask), n_queries)
    # alternatives on the same vectors / terms
    try:
        import faiss

        faiss.omp_set_num_threads(2)
        index = faiss.IndexFlatIP(384)
        index.add(all_vecs)
        res["faiss_flat"] = timed(lambda i: index.search(qv[i : i + 1], 50), n_queries)
    except ImportError:
        res["faiss_flat"] = None
    try:
        from qdrant_client import QdrantClient, models

        client = QdrantClient(path=str(tmp / f"qdrant{n}"))
        client.create_collection(
            "c", vectors_config=models.VectorParams(size=384, distance=models.Distance.DOT)
        )
        for s in range(0, n, 2000):
            client.upsert(
                "c",
                models.Batch(ids=list(range(s, min(n, s + 2000))), vectors=all_vecs[s : s + 2000].tolist()),
            )
        res["qdrant_local"] = timed(
            lambda i: client.query_points("c", query=qv[i].tolist(), limit=50), min(n_queries, 50)
        )
        client.close()
    except ImportError:
        res["qdrant_local"] = None
    import bm25s

    numpy_bm25 = bm25s.BM25(backend="numpy")
    terms = kb.store.read("SELECT terms FROM chunks ORDER BY id")
    numpy_bm25.index([t[0].split(" ") for t in terms], show_progress=False)
    res["bm25_numpy"] = timed(
        lambda i: numpy_bm25.retrieve([qterms[i] or ["x"]], k=50, show_progress=False, n_threads=1),
        min(n_queries, 50),
    )
    kb.close()
    return res


def bench_latency(tmp: Path, sizes: list[int], n_queries: int) -> list[dict]:
    rng = random.Random(0)
    vocab = vocabulary()
    rows = []
    for n in sizes:
        res = bench_size(tmp, n, n_queries, vocab, rng)
        rows.append(res)

        def f(x):
            return "     -" if x is None else f"{x[0]:6.2f} / {x[1]:6.2f}"

        print(
            f"\n{n} chunks (index build {res['index_build_s']:.1f} s), p50 / p95 ms over {n_queries} queries:"
        )
        for key in (
            "bm25",
            "dense",
            "dense_acl",
            "hybrid",
            "cached",
            "faiss_flat",
            "qdrant_local",
            "bm25_numpy",
        ):
            print(f"  {key:13} {f(res[key])}")
    return rows


# ------------------------------------------------------------------ 3. quality


def bench_quality(tmp: Path) -> list:
    from lmforge.eval.rag import evaluate, load_qa, table
    from lmforge.rag.pipeline import EmbedderCache, KnowledgeBases

    kbs = KnowledgeBases(tmp / "kbq", EmbedderCache())
    kb = kbs.create("examples")
    kb.add([EXAMPLES / "docs"])
    items = load_qa(EXAMPLES / "qa.jsonl")
    results = evaluate(kb, items, k=5)
    print("\nretrieval quality on examples/rag/qa.jsonl (all questions)")
    print(table(results, 5))
    for lang in ("zh", "en"):
        sub = [i for i in items if i.lang == lang]
        print(f"\n{lang} questions ({len(sub)})")
        print(table(evaluate(kb, sub, k=5), 5))
    kbs.close()
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="lmforge-rag-bench-"))
    try:
        if not args.skip_ingest:
            bench_ingest(tmp)
        bench_latency(tmp, args.sizes, args.queries)
        if not args.skip_quality:
            bench_quality(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
