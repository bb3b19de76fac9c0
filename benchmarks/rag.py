"""Knowledge-base benchmark: ingestion throughput, query latency at 10k/100k chunks, retrieval quality.

    python benchmarks/rag.py [--sizes 10000 100000] [--queries 200] [--rounds 4] [--ingest-rounds 1]
                             [--skip-ingest] [--skip-quality]

1. Ingestion of a mixed zh/en folder (examples/rag/docs plus HTML, DOCX and PDF renderings of
   some of them): documents/s, PDF pages/s, chunks/s, beside the embedder alone on the same chunk
   texts (the pipeline's ceiling: embedding dominates on CPU); the two alternate (A B A B) for
   --ingest-rounds rounds, each into a fresh KB, and the medians are reported.
2. Query latency on synthetic KBs of N chunks x 384 dims (random unit vectors; term lists drawn
   from the real vocabulary of the example corpus): BM25 (bm25s numba), exact dense (numpy), the
   whole hybrid retrieval (both + RRF + metadata fetch, excluding the query's embedding) and a
   cached repeat, through lmforge's own code. Alternatives measured on the same vectors in the
   same run: faiss IndexFlatIP, qdrant-client local mode, bm25s with its numpy backend. Every
   engine answers exactly the same --queries queries (after the same 3 untimed warm-up queries),
   in --rounds rounds that interleave the engines (each round: a block of queries on every
   engine in turn), so drift on a shared machine hits all of them alike.
3. Quality on examples/rag/qa.jsonl: hit@5 and MRR for dense-only, BM25-only and hybrid (every
   mode answers all 70 questions), after ingesting examples/rag/docs with the default embedder
   (the line `lmforge kb add` prints for it is printed too), and the query-embedding latency the
   figures of 2. leave out (each question embedded alone).
4. The hard set (examples/rag/qa-hard.jsonl: paraphrase, cross-language, multi-passage, unanswerable), on
   two KBs of examples/rag/docs, one without chunk headers (baseline) and one with contextual chunk headers
   (title and heading path embedded and indexed with every chunk): baseline hybrid / + headers / + the retrieval
   rules / + dictionary translation / + query rewrite / the rewrite with HyDE / pointwise rerank / all three,
   each with chunk-level hit@5 and MRR overall and per question type and language pair, and p50/p95 latency
   per question (rewrite and rerank run the --model, default the packaged chat model); with --answers the
   model also answers (accuracy, abstention, the verifier's catch rate). `--hard-only` runs just this part
   (`--kb NAME` reuses a registered KB of examples/rag/docs instead of ingesting it again).
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "rag"


HARD_CONFIGS = (
    "baseline",
    "headers",
    "names",
    "dictionary",
    "opinion",
    "rewrite",
    "rewrite-no-retry",
    "rewrite-hyde",
    "rerank",
    "all",
)
"""baseline: no chunk headers, none of the rules below; headers: contextual chunk headers alone; names: + pinyin
names, cross-language fusion and boilerplate copies collapsed; dictionary: + the question's words translated by
dictionary; opinion: + the English embedder's second opinion (all-minilm-l6-v2, pulled; the default without a
model); rewrite: + the model's rewrites (the default of kb ask); rewrite-no-retry: the same, an answer that is only
a citation kept as it is (AnswerConfig.retry_bare off: the reference for --answers); rewrite-hyde: with a hypothetical answer (HyDE)
among them; rerank: opinion + the pointwise reranker; all: everything."""


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, q))


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


def bench_ingest(tmp: Path, rounds: int = 1) -> dict:
    import statistics

    from lmforge.rag.pipeline import EmbedderCache, KnowledgeBases, embed_text

    folder, pdf_pages = mixed_folder(tmp / "mixed")
    embedders = EmbedderCache()
    kbs = KnowledgeBases(tmp / "kb", embedders)
    walls, embed_walls = [], []
    for r in range(rounds):  # A B A B: the pipeline, then the embedder alone on the same texts
        kb = kbs.create(f"ingest{r}")
        kb.analyzer  # noqa: B018 - load jieba's dictionary and the embedder outside the timing
        kb.embedder  # noqa: B018
        t = time.perf_counter()
        report = kb.add([folder])
        walls.append(time.perf_counter() - t)
        texts = [
            embed_text(c.title, (c.heading,), c.text)
            for d in kb.documents()
            for c in kb.store.doc_chunks(d.name)
        ]
        t = time.perf_counter()
        kb.embedder.passages(texts)
        embed_walls.append(time.perf_counter() - t)
        print(f"ingest round {r + 1}: pipeline {report.chunks / walls[-1]:.1f} chunks/s, embedder alone "
              f"{len(texts) / embed_walls[-1]:.1f} chunks/s", flush=True)  # fmt: skip
    wall, embed_only = statistics.median(walls), statistics.median(embed_walls)
    n_docs = len(report.added)
    out = {"docs": n_docs, "pdf_pages": pdf_pages, "pages": report.pages, "chunks": report.chunks, "seconds": wall,
           "docs_per_s": n_docs / wall, "chunks_per_s": report.chunks / wall, "embed_only_chunks_per_s": len(texts) / embed_only,
           "failed": report.failed}  # fmt: skip
    print(f"ingest (median of {rounds}): {n_docs} docs ({pdf_pages} PDF pages, {report.pages} pages in all), "
          f"{report.chunks} chunks in {wall:.1f} s = {out['docs_per_s']:.2f} docs/s, "
          f"{report.pages / wall:.2f} pages/s, {out['chunks_per_s']:.1f} chunks/s; embedder alone on the same "
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
    from lmforge.rag.ann import AnnConfig

    nrng = np.random.default_rng(0)
    store = kb.store
    store.ann_cfg = AnnConfig(
        min_rows=2**62
    )  # this part measures the exact scan: no HNSW graphs (rag_ann.py does)
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


ENGINES = {  # key: label; the first five are lmforge's own code
    "bm25": "BM25 (bm25s numba)",
    "dense": "exact dense (numpy)",
    "dense_shard0": "dense, first shard only",
    "dense_acl": "dense, ACL mask on",
    "hybrid": "hybrid retrieval",
    "cached": "cached repeat",
    "faiss_flat": "faiss IndexFlatIP",
    "qdrant_local": "qdrant-client local",
    "bm25_numpy": "bm25s numpy backend",
}
WARMUP = 3


def bench_size(tmp: Path, n: int, n_queries: int, rounds: int, vocab: list[str], rng: random.Random) -> dict:
    from lmforge.rag.retrieve import Retriever, SearchParams

    kb, build = synthetic_kb(tmp, n, vocab, rng)
    shards = kb.store.shards()
    all_vecs = np.concatenate([s.vectors for s in shards])
    total = WARMUP + n_queries  # the first WARMUP queries warm every engine up and are not timed
    qv = np.random.default_rng(1).standard_normal((total, 384)).astype(np.float32)
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    qtexts = [" ".join(rng.choice(vocab) for _ in range(4)) for _ in range(total)]
    qterms = [kb.analyzer.terms(q) for q in qtexts]
    res: dict = {"chunks": n, "index_build_s": build, "shard0_chunks": len(shards[0].ids)}

    ret = Retriever()
    mask = np.ones(len(shards[0].ids), dtype=bool)
    mask[::2] = False  # a caller who may see half the documents
    engines = {
        "bm25": lambda i: [s.lexical_search(qterms[i], 50, None) for s in shards],
        "dense": lambda i: [s.dense(qv[i], 50, None) for s in shards],
        "dense_shard0": lambda i: shards[0].dense(qv[i], 50, None),  # the ACL row's baseline
        "dense_acl": lambda i: shards[0].dense(qv[i], 50, mask),
        # (the English second opinion reorders 20 candidates whatever the KB's size: timed in rag_rules.py)
        "hybrid": lambda i: ret.search(kb, qtexts[i], SearchParams(k=5, second_opinion=None), qvec=qv[i]),
        "cached": lambda i: ret.search(kb, qtexts[i], SearchParams(k=5, second_opinion=None), qvec=qv[i]),
    }
    # alternatives on the same vectors / terms
    try:
        import faiss

        faiss.omp_set_num_threads(2)
        index = faiss.IndexFlatIP(384)
        index.add(all_vecs)
        engines["faiss_flat"] = lambda i: index.search(qv[i : i + 1], 50)
    except ImportError:
        res["faiss_flat"] = None
    client = None
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
        engines["qdrant_local"] = lambda i: client.query_points("c", query=qv[i].tolist(), limit=50)
    except ImportError:
        res["qdrant_local"] = None
    import bm25s

    numpy_bm25 = bm25s.BM25(backend="numpy")
    terms = kb.store.read("SELECT terms FROM chunks ORDER BY id")
    numpy_bm25.index([t[0].split(" ") for t in terms], show_progress=False)
    engines["bm25_numpy"] = lambda i: numpy_bm25.retrieve(
        [qterms[i] or ["x"]], k=50, show_progress=False, n_threads=1
    )

    for fn in engines.values():
        for i in range(WARMUP):
            fn(i)
    times: dict[str, list[float]] = {key: [] for key in engines}
    bounds = [WARMUP + (n_queries * r) // rounds for r in range(rounds + 1)]
    for lo, hi in zip(
        bounds, bounds[1:], strict=False
    ):  # each round: the same block of queries, every engine
        for key, fn in engines.items():
            for i in range(lo, hi):
                t = time.perf_counter()
                fn(i)
                times[key].append(time.perf_counter() - t)
    for key, ts in times.items():
        assert len(ts) == n_queries, (key, len(ts))
        res[key] = (pct(ts, 50), pct(ts, 95))
    if client is not None:
        client.close()
    kb.close()
    return res


def bench_latency(tmp: Path, sizes: list[int], n_queries: int, rounds: int) -> list[dict]:
    rng = random.Random(0)
    vocab = vocabulary()
    rows = []
    for n in sizes:
        res = bench_size(tmp, n, n_queries, rounds, vocab, rng)
        rows.append(res)

        def f(x):
            return "     -" if x is None else f"{x[0]:6.2f} / {x[1]:6.2f}"

        print(
            f"\n{n} chunks (index build {res['index_build_s']:.1f} s), p50 / p95 ms, {n_queries} queries per engine "
            f"in {rounds} interleaved rounds:",
            flush=True,
        )
        for key, label in ENGINES.items():
            print(f"  {key:13} {label:24} {f(res.get(key))}", flush=True)
    for r in rows:
        print(f"{r['chunks']} chunks: the ACL mask (half the documents hidden) adds "
              f"{r['dense_acl'][0] - r['dense_shard0'][0]:.2f} ms p50 to a dense search of the same shard "
              f"({r['shard0_chunks']:,} chunks)")  # fmt: skip
    dense = {r["chunks"]: r["dense"][0] for r in rows}
    for r in rows:
        for alt in ("faiss_flat", "qdrant_local"):
            if r.get(alt):
                print(f"{r['chunks']} chunks: {ENGINES[alt]} takes {r[alt][0] / dense[r['chunks']]:.1f}x the "
                      "time of exact numpy dense (p50)")  # fmt: skip
    return rows


# ------------------------------------------------------------------ 3. quality


def bench_quality(tmp: Path) -> list:
    from lmforge.eval.rag import evaluate, load_qa, table
    from lmforge.rag.pipeline import EmbedderCache, KnowledgeBases

    kbs = KnowledgeBases(tmp / "kbq", EmbedderCache())
    kb = kbs.create("examples")
    report = kb.add([EXAMPLES / "docs"])
    print(f"\nlmforge kb add <kb> examples/rag/docs (fresh KB, default embedder; the line the CLI prints):\n"
          f"{len(report.added)} added, {len(report.replaced)} replaced, {len(report.unchanged)} unchanged, "
          f"{len(report.failed)} failed; {report.chunks} chunks from {report.pages} pages in {report.seconds:.1f} s "
          f"({report.chunks / max(report.seconds, 1e-9):.1f} chunks/s); version {report.version}")  # fmt: skip
    items = load_qa(EXAMPLES / "qa.jsonl")
    kb.embedder.queries(["warm-up"])
    ts = []
    for item in items:  # the query embedding, which the latency figures above leave out
        t = time.perf_counter()
        kb.embedder.queries([item.question])
        ts.append(time.perf_counter() - t)
    print(f"query embedding ({kb.embedder.identity}), one question at a time, {len(ts)} questions: "
          f"p50 {pct(ts, 50):.1f} ms, p95 {pct(ts, 95):.1f} ms")  # fmt: skip
    results = evaluate(kb, items, k=5)
    print("\nretrieval quality on examples/rag/qa.jsonl (all questions)")
    print(table(results, 5))
    for lang in ("zh", "en"):
        sub = [i for i in items if i.lang == lang]
        print(f"\n{lang} questions ({len(sub)})")
        print(table(evaluate(kb, sub, k=5), 5))
    kbs.close()
    return results


def bench_hard(tmp: Path, model: str, kb_name: str | None, answers: bool, configs: list[str],
               rerank_weight: float, rerank_model: str | None = None, rerank_dtype: str = "float32",
               ) -> dict:  # fmt: skip
    from lmforge.eval.rag import evaluate, group_table, load_qa, table
    from lmforge.home import Registry
    from lmforge.infer.loader import LoadConfig, load_backend
    from lmforge.rag.answer import AnswerConfig, ask, backend_generator
    from lmforge.rag.pipeline import EmbedderCache, KBConfig, KnowledgeBases
    from lmforge.rag.rerank import PointwiseConfig, PointwiseReranker
    from lmforge.rag.retrieve import Retriever, SearchParams
    from lmforge.rag.rewrite import QueryRewriter, RewriteConfig

    reg = Registry()
    if "opinion" in configs and not reg.exists(SearchParams.second_opinion):
        raise SystemExit(
            f"configuration 'opinion' needs {SearchParams.second_opinion}: lmforge pull it first"
        )
    local = KnowledgeBases(tmp / "kbh", EmbedderCache())
    kbs_by_context = {}
    for context in ("none", "title"):
        if context == "none" and "baseline" not in configs:
            continue
        if context == "title" and kb_name:
            kbs_by_context[context] = KnowledgeBases(reg).open(kb_name)
            continue
        t = time.perf_counter()
        kbs_by_context[context] = kb = local.create(f"hard-{context}", KBConfig(context=context))
        kb.add([EXAMPLES / "docs"])
        print(f"KB of examples/rag/docs with chunk context {context!r}: {time.perf_counter() - t:.0f} s")
    items = load_qa(EXAMPLES / "qa-hard.jsonl")
    backend = load_backend(reg, model, LoadConfig())
    rewriters = {
        hyde: QueryRewriter(model, backend_generator(backend, max_tokens=RewriteConfig().max_tokens),
                            RewriteConfig(hyde=hyde))
        for hyde in (False, True)
    }  # fmt: skip
    judge = backend
    if rerank_model and rerank_model != model and {"rerank", "all"} & set(configs):
        judge = load_backend(reg, rerank_model, LoadConfig(dtype=rerank_dtype))
    reranker = PointwiseReranker(judge, PointwiseConfig(retrieval_weight=rerank_weight))
    rerank_s: list[float] = []
    langs = next(iter(kbs_by_context.values())).languages()
    generate = backend_generator(backend)
    out = {}
    for name in configs:
        kb = kbs_by_context["none" if name == "baseline" else "title"]
        ret = Retriever(rerankers=lambda _m: reranker)
        times: list[float] = []

        def search(q, params, name=name, ret=ret, times=times, kb=kb):
            t = time.perf_counter()
            rerank, rewrite = (
                name in ("rerank", "all"),
                name in ("rewrite", "rewrite-no-retry", "rewrite-hyde", "all"),
            )
            params = replace(params, rerank=model if rerank else None)
            if name in ("baseline", "headers"):
                params = params.plain()
            elif name == "names":
                params = replace(params, translate=False, second_opinion=None)
            elif name == "dictionary":
                params = replace(params, second_opinion=None)
            if rewrite:
                rr = reranker if rerank else None
                hits = rewriters[name == "rewrite-hyde"].search(
                    lambda x, p: ret.search(kb, x, p), q, langs, params, rr
                )[0]
            else:
                hits = ret.search(kb, q, params)
            times.append(time.perf_counter() - t)
            if rerank:
                rerank_s.append(reranker.last_seconds)
            return hits

        answer_s: list[float] = []

        def answer(q, hits, kb=kb, cfg=AnswerConfig(retry_bare=name != "rewrite-no-retry"), spent=answer_s):
            t = time.perf_counter()
            r = ask(q, hits, generate, kb.analyzer, kb.embedder, model, cfg, kb.term_weights)
            spent.append(
                time.perf_counter() - t
            )  # generation(s) and checks; the retry's second call included
            return r

        (res,) = evaluate(
            kb, items, k=5, modes=("hybrid",), search=search, answer=answer if answers else None
        )
        res.mode = name
        print(f"\n[{name}] hybrid, {len(items)} questions; search latency p50 {pct(times, 50):.0f} ms, "
              f"p95 {pct(times, 95):.0f} ms (query embedding included)"
              + (f"; rerank of 10 candidates p50 {pct(rerank_s, 50) / 1000:.2f} s" if rerank_s else "")
              + (f"; answer p50 {pct(answer_s, 50) / 1000:.2f} s, p95 {pct(answer_s, 95) / 1000:.2f} s, mean "
                 f"{sum(answer_s) / len(answer_s):.2f} s" if answer_s else ""))  # fmt: skip
        rerank_s.clear()
        print(table([res], 5))
        print(group_table(res, 5))
        out[name] = {"hit@5": res.hit_at_k, "mrr": res.mrr, "p50_ms": pct(times, 50), "p95_ms": pct(times, 95),
                     "accuracy": res.contains, "abstention": res.abstention, "flag_recall": res.flag_recall,
                     "groups": res.groups}  # fmt: skip
    backend.close()
    local.close()
    return out


def main(argv: list[str] | None = None) -> None:
    from lmforge.rag.rerank import PointwiseConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200, help="timed queries per engine and size")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds the queries are split into")
    ap.add_argument("--ingest-rounds", type=int, default=1, help="A/B rounds of pipeline vs embedder alone")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--hard-only", action="store_true", help="only part 4 (the hard set)")
    ap.add_argument("--skip-hard", action="store_true")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="rewrite / rerank / answer model")
    ap.add_argument("--kb", default=None, help="a registered KB of examples/rag/docs to reuse (part 4)")
    ap.add_argument("--answers", action="store_true", help="part 4: the model answers too")
    ap.add_argument("--configs", nargs="+", default=list(HARD_CONFIGS), choices=HARD_CONFIGS,
                    help="baseline: no chunk headers; headers: + contextual headers; names: + pinyin names, "
                    "cross-language fusion, copies collapsed; dictionary: + dictionary translation (the default); "
                    "rewrite / rerank: dictionary + that; rewrite-hyde: the rewrite with a hypothetical answer "
                    "(HyDE); all: everything")  # fmt: skip
    ap.add_argument(
        "--rerank-model", default=None, help="rerank with this model instead of --model (e.g. its -hf copy)"
    )
    ap.add_argument(
        "--rerank-dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="weights of a transformers rerank model",
    )
    ap.add_argument("--rerank-weight", type=float, default=PointwiseConfig.retrieval_weight,
                    help="PointwiseConfig.retrieval_weight: > 0 fuses the retrieval order with the judge's")  # fmt: skip
    args = ap.parse_args(argv)
    if not 1 <= args.rounds <= args.queries or args.ingest_rounds < 1:
        ap.error("need 1 <= --rounds <= --queries and --ingest-rounds >= 1")
    tmp = Path(tempfile.mkdtemp(prefix="lmforge-rag-bench-"))
    hard = partial(bench_hard, tmp, args.model, args.kb, args.answers, args.configs, args.rerank_weight,
                   args.rerank_model, args.rerank_dtype)  # fmt: skip
    try:
        if args.hard_only:
            hard()
            return
        if not args.skip_ingest:
            bench_ingest(tmp, args.ingest_rounds)
        bench_latency(tmp, args.sizes, args.queries, args.rounds)
        if not args.skip_quality:
            bench_quality(tmp)
        if not args.skip_hard:
            hard()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
