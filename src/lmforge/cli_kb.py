"""`lmforge kb ...`: knowledge bases (RAG over your documents), mounted by cli.py under `kb`.

Thin wrappers over lmforge.rag, like every command (cli.py's docstring); the shared option types
and the model loader come from cli.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from lmforge.cli import Threads, _human, _load, _registry
from lmforge.errors import LmforgeError
from lmforge.hub import DEFAULT_CHAT_MODEL, DEFAULT_EMBEDDER
from lmforge.rag.chunking import ChunkConfig
from lmforge.rag.pipeline import KBConfig
from lmforge.rag.retrieve import Mode as SearchMode
from lmforge.rag.rewrite import RewriteConfig

kb_app = typer.Typer(no_args_is_help=True, help="Knowledge bases: RAG over your documents (知识库).")


def _kbs():
    from lmforge.rag.pipeline import KnowledgeBases

    return KnowledgeBases()


Groups = Annotated[str, typer.Option(help="Comma-separated groups allowed to see these documents.")]
K = Annotated[int, typer.Option("-k", help="How many results.")]
Mode = Annotated[SearchMode, typer.Option(help="Dense (vectors), lexical (BM25) or both.")]


def _upgrade_note(kb) -> None:  # noqa: ANN001 - rag.pipeline.KnowledgeBase
    """Say how to upgrade a KB built before the current index format."""
    hint = kb.upgrade_hint()
    if hint:
        print(f"note: {hint}", file=sys.stderr)


def _open(name: str):  # noqa: ANN202 - rag.pipeline.KnowledgeBase
    kb = _kbs().open(name)
    _upgrade_note(kb)
    return kb


def _groups(text: str) -> frozenset[str]:
    return frozenset(g.strip() for g in text.split(",") if g.strip())


@kb_app.command("create")
def kb_create(
    name: str,
    embed: Annotated[str, typer.Option("--embed", help="Embedding model.")] = DEFAULT_EMBEDDER,
    chunk_size: Annotated[int, typer.Option(help="Tokens per chunk (estimated).")] = ChunkConfig.size,
    chunk_overlap: Annotated[int, typer.Option(help="Tokens repeated between chunks.")] = ChunkConfig.overlap,
    store: Annotated[
        str | None, typer.Option(help="embedded (default) | qdrant:local | qdrant:http://host:6333")
    ] = None,
    redact_pii: Annotated[bool, typer.Option("--redact-pii", help="Replace ID numbers, phones, emails, bank cards and IPs by tags before indexing (脱敏).")] = False,
    context: Annotated[str, typer.Option(help="Contextual chunk header embedded and indexed with each chunk: title (document title + heading path) | headings | none.")] = KBConfig.context,
) -> None:  # fmt: skip
    """Create an empty knowledge base (a registry artifact: `lmforge models show NAME`)."""
    chosen = {"store": store} if store is not None else {}  # else KBConfig's default
    kb = _kbs().create(
        name,
        KBConfig(
            embedder=embed,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            redact_pii=redact_pii,
            context=context,
            **chosen,
        ),
    )
    print(f"created knowledge base {name!r} (embedder {kb.embedder.identity})")


@kb_app.command("add")
def kb_add(name: str, paths: list[str], groups: Groups = "") -> None:
    """Add files, folders or globs (re-adding a changed file replaces it; unchanged files are skipped)."""
    from lmforge.progress import steps_progress

    kb = _kbs().open(name)
    with steps_progress() as bar:
        task = bar.add_task("ingesting", total=None)

        def show(p) -> None:
            rate = f"{p.chunks} chunks, {p.chunks_per_s:.1f} chunks/s"
            bar.update(
                task, completed=p.files_done, total=p.files_total, description=f"{rate} {p.current[-40:]}"
            )

        report = kb.add(paths, groups=_groups(groups), progress=show)
    for doc, err in report.failed:
        print(f"failed {doc}: {err}", file=sys.stderr)
    for doc, twin in report.duplicates:
        print(f"skipped {doc}: duplicate of {twin!r} (same content)", file=sys.stderr)
    print(f"{len(report.added)} added, {len(report.replaced)} replaced, {len(report.unchanged)} unchanged, "
          f"{len(report.duplicates)} duplicates skipped, {len(report.failed)} failed"
          + (f", {report.redacted} personal-data spans redacted" if report.redacted else "")
          + f"; {report.chunks} chunks from {report.pages} pages in {report.seconds:.1f} s "
          f"({report.chunks / max(report.seconds, 1e-9):.1f} chunks/s); version {report.version}")  # fmt: skip
    if report.failed and not (report.added or report.replaced or report.unchanged or report.duplicates):
        raise LmforgeError(f"nothing was added to {name!r}: every file failed")


@kb_app.command("reindex")
def kb_reindex(
    name: str,
    context: Annotated[str | None, typer.Option(help="title (document title + heading path, the default) | headings | none.")] = None,
) -> None:  # fmt: skip
    """Embed and index every chunk again from the text the KB holds (no source files needed): upgrades a KB built
    before contextual chunk headers, or switches its --context. Readers keep the old index until it finishes."""
    from lmforge.progress import steps_progress

    kb = _kbs().open(name)
    with steps_progress() as bar:
        task = bar.add_task("re-embedding chunks", total=None)
        report = kb.reindex(
            context, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    print(f"reindexed {report.chunks} chunks of {name!r} with chunk context {report.context!r} (was "
          f"{report.previous!r}) in {report.seconds:.1f} s ({report.chunks / max(report.seconds, 1e-9):.1f} "
          f"chunks/s); version {report.version}")  # fmt: skip


@kb_app.command("rm")
def kb_rm(name: str, doc: str) -> None:
    """Remove one document from every index."""
    version = _kbs().open(name).remove(doc)
    print(f"removed {doc} from {name} (version {version})")


@kb_app.command("ls")
def kb_ls(name: Annotated[str | None, typer.Argument()] = None) -> None:
    """List knowledge bases, or the documents of one."""
    kbs = _kbs()
    if name is None:
        print(f"{'NAME':24} {'DOCS':>6} {'CHUNKS':>8} {'VERSION':>7}  EMBEDDER")
        for n in kbs.names():
            i = kbs.open(n).info()
            print(f"{n:24} {i['documents']:>6} {i['chunks']:>8} {i['version']:>7}  {i['embedder']}")
        return
    print(f"{'DOCUMENT':44} {'PAGES':>5} {'CHUNKS':>6} {'SIZE':>9}  GROUPS")
    for d in kbs.open(name).documents():
        print(
            f"{d.name:44} {d.pages or '-':>5} {d.chunks:>6} {_human(d.bytes):>9}  {','.join(d.groups) or '(all)'}"
        )


def _rewritten(kb, ret, rewriter, query: str, params) -> tuple[list, object | None]:  # noqa: ANN001
    """Hits for `query`: searched as it is, or with the rewriter's queries fused (falling back, and saying so,
    when the rewriter fails)."""
    from lmforge.rag.rewrite import language_note

    if not query.strip():
        raise LmforgeError("empty query: give the question to search for")
    notes = [language_note(query, kb.languages(), rewriter is not None), *ret.notes(kb, query, params)]
    for note in filter(None, notes):
        print(f"note: {note}", file=sys.stderr)
    if rewriter is None:
        return ret.search(kb, query, params), None
    rerank = ret.rerankers(params.rerank) if params.rerank and ret.rerankers else None
    hits, rw = rewriter.search(lambda q, p: ret.search(kb, q, p), query, kb.languages(), params, rerank)
    if rw.fallback:
        print(f"rewrite skipped: {rw.fallback}; searched the question as it is", file=sys.stderr)
    else:
        print(f"rewrite ({'cached' if rw.cached else f'{rw.seconds:.1f} s'}): " + " | ".join(rw.queries[1:]),
              file=sys.stderr)  # fmt: skip
    return hits, rw


def _rewriter(model: str | None, backend=None, hyde: bool = RewriteConfig.hyde):  # noqa: ANN001, ANN202
    """A QueryRewriter on `model` (a loaded backend may be shared with the answering model); a model that is
    not registered or does not load leaves the search unrewritten, with the reason."""
    if not model:
        return None
    from lmforge.rag.answer import backend_generator
    from lmforge.rag.rewrite import QueryRewriter

    cfg = RewriteConfig(hyde=hyde)
    if backend is None:
        try:
            backend = _load(model, "auto", None, None)
        except LmforgeError as e:
            print(f"rewrite skipped: {e}; searching the question as it is", file=sys.stderr)
            return None
    return QueryRewriter(model, backend_generator(backend, max_tokens=cfg.max_tokens), cfg)


RerankMode = Annotated[Literal["pointwise", "listwise"], typer.Option(
    help="pointwise: p(yes) per passage, one scoring pass each with the question's prefix cached (local models); "
         "listwise: the model orders the list in one generation (any model).")]  # fmt: skip


RerankOpt = Annotated[
    str | None, typer.Option("--rerank", help="Rerank the candidates with this chat model.")
]
RerankDtype = Annotated[Literal["auto", "float32", "bfloat16"], typer.Option(
    help="Weights of a transformers (HF) rerank model: auto = whichever judges faster on this machine, measured "
         "once (bfloat16 is ~3.6x faster on CPUs with AVX512-BF16, slower on others).")]  # fmt: skip


def _rerankers(how: str, dtype: str = "auto"):  # noqa: ANN202
    """model name -> reranker, each model loaded once."""
    loaded: dict = {}

    def get(model: str):  # noqa: ANN202
        if model not in loaded:
            loaded[model] = _reranker(model, how, dtype)
        return loaded[model]

    return get


def _reranker(model: str, how: str, dtype: str):  # noqa: ANN202
    from lmforge.rag.answer import backend_generator
    from lmforge.rag.retrieve import LLMReranker

    if how == "pointwise":
        from lmforge.rag.rerank import PointwiseReranker, load_judge

        return PointwiseReranker(
            load_judge(_registry(), model, dtype, say=lambda m: print(m, file=sys.stderr))
        )
    return LLMReranker(backend_generator(_load(model, "auto", None, None), max_tokens=32))


HydeOpt = Annotated[bool, typer.Option("--hyde/--no-hyde", help="With a rewrite: also search a one-sentence "
                                       "hypothetical answer written by the model (HyDE).")]  # fmt: skip
PlainFusion = Annotated[bool, typer.Option("--plain-fusion", help="Hybrid search without the cross-language rule, "
                                           "pinyin names and boilerplate collapse (as before them; for comparison).")]  # fmt: skip
NoTranslate = Annotated[bool, typer.Option("--no-translate", help="Hybrid search without the zh-en dictionary "
                                           "translation of the question (for comparison).")]  # fmt: skip
NoRetry = Annotated[bool, typer.Option("--no-retry", help="Keep an answer that is only a citation ('[1]') instead "
                                       "of asking the model once more for the answer itself.")]  # fmt: skip
NoOpinion = Annotated[bool, typer.Option("--no-second-opinion", help="Hybrid search without the English "
                                         "embedder's second opinion on English passages (for comparison).")]  # fmt: skip
RewriteOpt = Annotated[str | None, typer.Option("--rewrite", help="Rewrite the query with this chat model "
                                                "(translated into the KB's languages, key terms, a paraphrase; fused by RRF).")]  # fmt: skip


@kb_app.command("search")
def kb_search(
    name: str, query: str, k: K = 5, mode: Mode = "hybrid",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    rerank: RerankOpt = None,
    rerank_mode: RerankMode = "pointwise",
    rerank_dtype: RerankDtype = "auto",
    rewrite: RewriteOpt = None,
    hyde: HydeOpt = RewriteConfig.hyde,
    plain_fusion: PlainFusion = False,
    no_translate: NoTranslate = False,
    no_second_opinion: NoOpinion = False,
) -> None:  # fmt: skip
    """Search a knowledge base (no model call unless --rerank or --rewrite)."""
    import json as _json
    from dataclasses import replace

    from lmforge.rag.retrieve import Retriever, SearchParams

    ret = Retriever(rerankers=_rerankers(rerank_mode, rerank_dtype))
    kb = _open(name)
    params = SearchParams(k=k, mode=mode, rerank=rerank, translate=not no_translate)
    params = replace(params, second_opinion=None) if no_second_opinion else params
    hits, rw = _rewritten(
        kb, ret, _rewriter(rewrite, hyde=hyde), query, params.plain() if plain_fusion else params
    )
    if as_json:
        out = [h.to_dict() for h in hits]
        print(
            _json.dumps({"hits": out, "rewrite": rw.to_dict()} if rw else out, ensure_ascii=False, indent=2)
        )
        return
    for i, h in enumerate(hits, start=1):
        where = h.document + (f" p.{h.page}" if h.page else "") + (f" · {h.heading}" if h.heading else "")
        print(f"[{i}] {h.score:.4f}  {where}")
        print("    " + h.text[:240].replace("\n", " "))


@kb_app.command("ask")
def kb_ask(
    name: str, question: str, model: Annotated[str, typer.Option("--model", "-m", help="Chat model.")] = DEFAULT_CHAT_MODEL,
    k: K = 5, mode: Mode = "hybrid", threads: Threads = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole response as JSON.")] = False,
    rewrite: RewriteOpt = None,
    hyde: HydeOpt = RewriteConfig.hyde,
    no_rewrite: Annotated[bool, typer.Option("--no-rewrite", help="Search the question as it is.")] = False,
    rerank: RerankOpt = None,
    rerank_mode: RerankMode = "pointwise",
    rerank_dtype: RerankDtype = "auto",
    no_retry: NoRetry = False,
) -> None:  # fmt: skip
    """Answer from the knowledge base with numbered, checked citations; the question is rewritten for search by
    the answering model unless --no-rewrite (or by --rewrite MODEL), and the candidates reranked with --rerank."""
    import json as _json

    from lmforge.rag.answer import AnswerConfig, ask, backend_generator
    from lmforge.rag.retrieve import Retriever, SearchParams

    kb = _open(name)
    backend = _load(model, "auto", None, threads)
    rewriter = (
        None
        if no_rewrite
        else _rewriter(rewrite or model, backend if (rewrite or model) == model else None, hyde)
    )
    ret = Retriever(rerankers=_rerankers(rerank_mode, rerank_dtype))
    hits, rw = _rewritten(kb, ret, rewriter, question, SearchParams(k=k, mode=mode, rerank=rerank))
    generate = backend_generator(backend)
    r = ask(question, hits, generate, kb.analyzer, kb.embedder, model, AnswerConfig(retry_bare=not no_retry),
            kb.term_weights)  # fmt: skip
    if rw is not None:
        r["rewrite"] = rw.to_dict()
    if as_json:
        print(_json.dumps(r, ensure_ascii=False, indent=2))
        return
    print(r["answer"])
    for s in r["sources"]:
        print(
            f"  [{s['n']}] {s['document']}"
            + (f" p.{s['page']}" if s["page"] else "")
            + f"  {s['snippet'][:80]!r}"
        )
    for c in r["claims"]:
        if not c["supported"]:
            print(f"  ! {c['problem']}: {c['text'][:100]}", file=sys.stderr)
    if "retried" in r:
        print(f"  ! the first answer was only a citation ({r['retried']['first_answer']!r}): asked again",
              file=sys.stderr)  # fmt: skip
    check = r.get("addresses_question") or {}
    if check.get("restates_question"):
        print("  ! the answer only restates the question", file=sys.stderr)
    elif check.get("bare_citation"):
        print("  ! the answer is only a citation", file=sys.stderr)
    elif check.get("no_quantity"):
        print("  ! the question asks how many / how long, and the answer states no quantity", file=sys.stderr)
    elif check.get("addresses") is False:
        rel = "" if check["relevance"] is None else f"; relevance {check['relevance']}"
        withheld = f": withheld {r['off_topic_answer'][:100]!r}" if "off_topic_answer" in r else ""
        missing = ", ".join(check["missing"]) or "-"
        print(
            f"  ! the answer does not address the question (missing: {missing}{rel}){withheld}",
            file=sys.stderr,
        )
    for f in r["filtered"]:
        print(f"  ! removed instruction-like text from [{f['n']}] {f['document']}", file=sys.stderr)


@kb_app.command("drop")
def kb_drop(name: str) -> None:
    """Delete a knowledge base: its registry entry and all its indexes."""
    _kbs().drop(name)
    print(f"dropped {name}")


@kb_app.command("eval")
def kb_eval(
    name: str, qa: Annotated[Path, typer.Option("--qa", help="QA JSONL file.")], k: K = 5,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Also score answers with this chat model.")] = None,
    threads: Threads = None,
    modes: Annotated[list[str] | None, typer.Option("--mode", help="Retrieval modes to run (repeatable; default dense, lexical, hybrid).")] = None,
    rewrite: RewriteOpt = None,
    hyde: HydeOpt = RewriteConfig.hyde,
    rerank: RerankOpt = None,
    rerank_mode: RerankMode = "pointwise",
    rerank_dtype: RerankDtype = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the results (overall and per group) as JSON.")] = False,
    plain_fusion: PlainFusion = False,
    no_translate: NoTranslate = False,
    no_second_opinion: NoOpinion = False,
    no_retry: NoRetry = False,
) -> None:  # fmt: skip
    """Chunk-level hit@k and MRR (with --model: answer accuracy, EM, F1, citation precision, abstention on
    unanswerable questions, the verifier's precision/recall on wrong answers), overall, per question type and
    per language pair."""
    import json as _json
    from dataclasses import asdict, replace

    from lmforge.data.lang import query_language
    from lmforge.eval.rag import MODES, evaluate, group_table, load_qa, table
    from lmforge.progress import steps_progress
    from lmforge.rag.answer import AnswerConfig, ask, backend_generator
    from lmforge.rag.retrieve import Retriever, SearchParams

    chosen = tuple(modes or MODES)
    bad = [m for m in chosen if m not in MODES]
    if bad:
        raise LmforgeError(f"--mode {', '.join(bad)}: choose from {', '.join(MODES)}")
    kbs = _kbs()
    kb = kbs.open(name)
    _upgrade_note(kb)
    items = load_qa(qa)
    ret, langs = Retriever(rerankers=_rerankers(rerank_mode, rerank_dtype)), kb.languages()
    english = next((i.question for i in items if query_language(i.question) == "en"), None)
    noted = (
        SearchParams().plain() if plain_fusion else SearchParams()
    )  # --plain-fusion turns the opinion off too
    for note in ret.notes(kb, english, noted) if english and not no_second_opinion else []:
        print(f"note: {note}", file=sys.stderr)
    answer = None
    backend = _load(model, "auto", None, threads) if model else None
    if backend is not None:
        generate = backend_generator(backend)

        def answer(question, hits):
            return ask(question, hits, generate, kb.analyzer, kb.embedder, model,
                       AnswerConfig(retry_bare=not no_retry), kb.term_weights)  # fmt: skip

    search = None
    rewriter = _rewriter(rewrite, backend if rewrite == model else None, hyde)
    if rewriter is not None or rerank or plain_fusion or no_translate or no_second_opinion:

        def search(q, params):
            base = params.plain() if plain_fusion else params
            params = replace(base, rerank=rerank, translate=base.translate and not no_translate,
                             second_opinion=None if no_second_opinion else base.second_opinion)  # fmt: skip
            if rewriter is None:
                return ret.search(kb, q, params)
            rr = ret.rerankers(rerank) if rerank else None
            return rewriter.search(lambda x, p: ret.search(kb, x, p), q, langs, params, rr)[0]

    with steps_progress() as bar:
        task = bar.add_task("evaluating", total=len(items) * len(chosen))
        results = evaluate(kb, items, k=k, answer=answer, modes=chosen, search=search, retriever=ret,
                           progress=lambda d, t: bar.update(task, completed=d))  # fmt: skip
    if as_json:
        print(_json.dumps([{kk: v for kk, v in asdict(r).items() if kk != "per_question"} for r in results],
                          ensure_ascii=False, indent=2))  # fmt: skip
    else:
        print(table(results, k))
        groups = group_table(results[-1], k)
        if groups:
            print("\n" + groups)
    kbs.update_metrics(name, {f"eval:{qa.name}" + (f"+rewrite:{rewrite}" if rewrite else "") + ("+hyde" if rewrite and hyde else "")
                              + ("+plain-fusion" if plain_fusion else "") + ("+no-translate" if no_translate else "")
                              + ("+no-second-opinion" if no_second_opinion else "")
                              + ("+no-retry" if no_retry and model else ""): {
        r.mode: {"hit@k": r.hit_at_k, "mrr": r.mrr, "k": k, "n": r.n, "f1": r.f1, "accuracy": r.contains,
                 "citation_precision": r.citation_precision, "abstention": r.abstention,
                 "flag_precision": r.flag_precision, "flag_recall": r.flag_recall, "retried": r.retried,
                 "groups": r.groups}
        for r in results}})  # fmt: skip


# -- data -------------------------------------------------------------------------------------
