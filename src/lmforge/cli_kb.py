"""`lmforge kb ...`: knowledge bases (RAG over your documents), mounted by cli.py under `kb`.

Thin wrappers over lmforge.rag, like every command (cli.py's docstring); the shared option types
and the model loader come from cli.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lmforge.cli import Threads, _human, _load
from lmforge.errors import LmforgeError
from lmforge.hub import DEFAULT_CHAT_MODEL, DEFAULT_EMBEDDER
from lmforge.rag.chunking import ChunkConfig
from lmforge.rag.retrieve import Mode as SearchMode

kb_app = typer.Typer(no_args_is_help=True, help="Knowledge bases: RAG over your documents (知识库).")


def _kbs():
    from lmforge.rag.pipeline import KnowledgeBases

    return KnowledgeBases()


Groups = Annotated[str, typer.Option(help="Comma-separated groups allowed to see these documents.")]
K = Annotated[int, typer.Option("-k", help="How many results.")]
Mode = Annotated[SearchMode, typer.Option(help="Dense (vectors), lexical (BM25) or both.")]


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
) -> None:  # fmt: skip
    """Create an empty knowledge base (a registry artifact: `lmforge models show NAME`)."""
    from lmforge.rag.pipeline import KBConfig

    chosen = {"store": store} if store is not None else {}  # else KBConfig's default
    kb = _kbs().create(
        name,
        KBConfig(
            embedder=embed,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            redact_pii=redact_pii,
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


@kb_app.command("search")
def kb_search(
    name: str, query: str, k: K = 5, mode: Mode = "hybrid",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    rerank: Annotated[str | None, typer.Option(help="Rerank the candidates with this chat model.")] = None,
) -> None:  # fmt: skip
    """Search a knowledge base (no model call unless --rerank)."""
    import json as _json

    from lmforge.rag.answer import backend_generator
    from lmforge.rag.retrieve import LLMReranker, Retriever, SearchParams

    ret = Retriever(
        rerankers=lambda m: LLMReranker(backend_generator(_load(m, "auto", None, None), max_tokens=32))
    )
    hits = ret.search(_kbs().open(name), query, SearchParams(k=k, mode=mode, rerank=rerank))
    if as_json:
        print(_json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=2))
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
) -> None:  # fmt: skip
    """Answer from the knowledge base with numbered, checked citations."""
    import json as _json

    from lmforge.rag.answer import ask, backend_generator
    from lmforge.rag.retrieve import Retriever, SearchParams

    kb = _kbs().open(name)
    hits = Retriever().search(kb, question, SearchParams(k=k, mode=mode))
    generate = backend_generator(_load(model, "auto", None, threads))
    r = ask(question, hits, generate, kb.analyzer, kb.embedder, model)
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
) -> None:  # fmt: skip
    """hit@k, MRR (and with --model: EM, F1, citation precision) for dense, lexical and hybrid."""
    from lmforge.eval.rag import evaluate, load_qa, table
    from lmforge.progress import steps_progress
    from lmforge.rag.answer import ask, backend_generator

    kbs = _kbs()
    kb = kbs.open(name)
    items = load_qa(qa)
    answer = None
    if model:
        generate = backend_generator(_load(model, "auto", None, threads))

        def answer(question, hits):
            return ask(question, hits, generate, kb.analyzer, kb.embedder, model)

    with steps_progress() as bar:
        task = bar.add_task("evaluating", total=len(items) * 3)
        results = evaluate(kb, items, k=k, answer=answer, progress=lambda d, t: bar.update(task, completed=d))
    print(table(results, k))
    kbs.update_metrics(name, {f"eval:{qa.name}": {r.mode: {"hit@k": r.hit_at_k, "mrr": r.mrr, "k": k, "n": r.n,
                                                            "f1": r.f1, "citation_precision": r.citation_precision}
                                                   for r in results}})  # fmt: skip


# -- data -------------------------------------------------------------------------------------
