"""HTTP API of the knowledge bases (`/v1/kb/...`), mounted by `create_app`.

Scopes: reading and searching need `kb:read`, changing needs `kb:write`, asking needs `kb:read`
and `chat`. The caller's groups (from the API key; none on an open loopback server, none for an
`admin` key) are passed down to the store query, so hidden documents never reach a result, a
snippet, a citation, a count or the retrieval cache. A writer restricted to groups can only
tag uploads with its own groups (by default, all of them).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel, Field

from lmforge.errors import ForbiddenError, NotFoundError
from lmforge.hub import DEFAULT_EMBEDDER
from lmforge.rag.answer import (
    DEFAULT_ANSWER_TOKENS,
    NO_ANSWER,
    AnswerConfig,
    ask,
    bare,
    checked,
    citation_so_far,
    follow_up,
    prepare,
    response,
    retried,
    retry_note,
)
from lmforge.rag.pipeline import KBConfig, check_doc_name
from lmforge.rag.retrieve import SearchParams
from lmforge.rag.rewrite import QueryRewriter, RewriteConfig, search_notes
from lmforge.rag.store import visible
from lmforge.serve.auth import ApiKey
from lmforge.serve.context import ServerContext


class KBCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    embedder: str = DEFAULT_EMBEDDER
    chunk_size: int = Field(default=200, ge=32, le=1000)
    chunk_overlap: int = Field(default=40, ge=0, le=500)


class KBSearch(BaseModel):
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(default=5, ge=1, le=100)
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid"
    dense_weight: float = Field(default=1.0, ge=0, le=100)
    lexical_weight: float = Field(default=1.0, ge=0, le=100)
    rerank: str | None = None  # a chat model to rerank the candidates with
    cross_language: bool = True  # SearchParams: the cross-language fusion rule
    names: bool = True  # SearchParams: pinyin names
    collapse_copies: bool = True  # SearchParams: boilerplate copies take one place
    translate: bool = True  # SearchParams: zh⇄en dictionary translation searched by BM25
    second_opinion: bool = True  # SearchParams: the English embedder's opinion on English passages


class KBBatchSearch(BaseModel):
    queries: list[str] = Field(min_length=1, max_length=256)
    kbs: list[str] = Field(min_length=1, max_length=32)
    k: int = Field(default=5, ge=1, le=100)
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid"


class KBAsk(BaseModel):
    question: str = Field(min_length=1, max_length=4000)
    model: str
    k: int = Field(default=5, ge=1, le=20)
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid"
    max_tokens: int = Field(default=DEFAULT_ANSWER_TOKENS, ge=1, le=4096)
    stream: bool = False
    rewrite: bool = True
    """Rewrite the question for search with the answering model (translated into the KB's languages, key
    terms, a paraphrase; fused by RRF), as `kb ask` and the console do; the response's `rewrite` says what was
    searched and how long it took. False searches the question as it is (one generation less)."""
    retry: bool = True
    """Ask the model once more when its answer is only a citation ("[1]"); AnswerConfig.retry_bare."""


def caller_groups(key: ApiKey | None) -> frozenset[str] | None:
    if key is None or "admin" in key.scopes:
        return None
    return frozenset(key.groups)


def kb_router(ctx: ServerContext) -> APIRouter:
    r = APIRouter(prefix="/v1/kb", tags=["knowledge bases"])
    kbs, retriever, authorize, call = ctx.kbs, ctx.retriever, ctx.authorize, ctx.offload
    rewriters: dict[str, QueryRewriter] = {}  # answering model -> its rewriter (and its cache)

    def visible_doc(name: str, doc: str, caller: frozenset[str] | None):  # noqa: ANN202
        """(kb, document row), or 404 alike for a missing and a hidden document."""
        kb = kbs.open(name)
        row = kb.store.document(doc)
        if row is None or not visible(row.groups, caller):
            raise NotFoundError(f"no document {doc!r} in knowledge base {name!r}")
        return kb, row

    @r.get("")
    async def list_kbs(key=authorize("kb:read")) -> dict:
        g = caller_groups(key)
        return {"data": await call(lambda: [kbs.open(n).info(g) for n in kbs.names()])}

    @r.post("")
    async def create_kb(req: KBCreate, key=authorize("kb:write")) -> dict:
        cfg = KBConfig(embedder=req.embedder, chunk_size=req.chunk_size, chunk_overlap=req.chunk_overlap)
        return await call(lambda: kbs.create(req.name, cfg).info(caller_groups(key)))

    @r.post("/search")
    async def batch_search(req: KBBatchSearch, key=authorize("kb:read")) -> dict:
        g = caller_groups(key)

        def work() -> dict:
            params = SearchParams(k=req.k, mode=req.mode)
            results = retriever.search_many([kbs.open(n) for n in req.kbs], req.queries, params, caller=g)
            return {
                "results": [
                    {"query": q, "hits": [h.to_dict() for h in hits]}
                    for q, hits in zip(req.queries, results, strict=True)
                ]
            }

        return await call(work)

    @r.get("/{name}")
    async def kb_info(name: str, key=authorize("kb:read")) -> dict:
        return await call(lambda: kbs.open(name).info(caller_groups(key)))

    @r.delete("/{name}")
    async def drop_kb(name: str, key=authorize("kb:write")) -> dict:
        if caller_groups(key):
            raise ForbiddenError("dropping a knowledge base needs an unrestricted (admin or group-less) key")
        await call(lambda: kbs.drop(name))
        return {"dropped": name}

    @r.get("/{name}/documents")
    async def list_docs(name: str, key=authorize("kb:read")) -> dict:
        g = caller_groups(key)
        return {"data": await call(lambda: [d.public() for d in kbs.open(name).documents(g)])}

    @r.post("/{name}/documents")
    async def upload(name: str, files: list[UploadFile] = File(...), groups: str = Form(""),
                     key=authorize("kb:write")) -> dict:  # fmt: skip
        g = caller_groups(key)
        wanted = frozenset(x.strip() for x in groups.split(",") if x.strip())
        if g is not None:
            if wanted - g:
                raise ForbiddenError(f"this key may not tag documents with groups {sorted(wanted - g)}")
            wanted = wanted or g
        names = [check_doc_name(f.filename or "") for f in files]
        kb = await call(lambda: kbs.open(name))
        tmp = Path(tempfile.mkdtemp(prefix=".upload-", dir=kb.folder))
        try:
            paths = []
            for i, f in enumerate(files):
                dest = tmp / f"{i}{Path(names[i]).suffix.lower()}"
                with dest.open("wb") as out:
                    while block := await f.read(1 << 20):
                        out.write(block)
                paths.append(dest)
            report = await call(lambda: kb.add(paths, names=names, groups=wanted))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return report.to_dict()

    @r.get("/{name}/documents/{doc:path}")
    async def doc_chunks(name: str, doc: str, key=authorize("kb:read")) -> dict:
        g = caller_groups(key)

        def work() -> dict:
            kb, row = visible_doc(name, doc, g)
            return {"document": row.public(), "chunks": [c.__dict__ for c in kb.store.doc_chunks(doc)]}

        return await call(work)

    @r.delete("/{name}/documents/{doc:path}")
    async def remove_doc(name: str, doc: str, key=authorize("kb:write")) -> dict:
        g = caller_groups(key)

        def work() -> dict:
            kb, _ = visible_doc(name, doc, g)
            return {"removed": doc, "version": kb.remove(doc)}

        return await call(work)

    @r.post("/{name}/search")
    async def search(name: str, req: KBSearch, key=authorize("kb:read")) -> dict:
        g = caller_groups(key)

        def work() -> dict:
            kb = kbs.open(name)
            params = SearchParams(k=req.k, mode=req.mode, dense_weight=req.dense_weight,
                                  lexical_weight=req.lexical_weight, rerank=req.rerank,
                                  cross_language=req.cross_language, names=req.names,
                                  collapse_copies=req.collapse_copies, translate=req.translate)  # fmt: skip
            params = params if req.second_opinion else replace(params, second_opinion=None)
            hits = retriever.search(kb, req.query, params, caller=g)
            out = {"kb": name, "version": kb.version, "hits": [h.to_dict() for h in hits]}
            notes = search_notes(kb, req.query, rewriting=False) + retriever.notes(kb, req.query, params)
            return {**out, "notes": notes} if notes else out

        return await call(work)

    @r.post("/{name}/ask")
    async def ask_kb(name: str, req: KBAsk, key=authorize("kb:read")):
        if key is not None and "chat" not in key.scopes and "admin" not in key.scopes:
            raise ForbiddenError("asking needs the 'chat' scope as well as 'kb:read'")
        g = caller_groups(key)
        await call(lambda: ctx.registry.get(req.model))  # unknown model: 404 even when no answer is needed
        guard, who = ctx.guard, key.name if key else None
        if guard is not None:  # the content filter on the question (400 content_filter on a block)
            req.question = await call(lambda: guard.check_input(who, "kb.ask", req.model, req.question))

        rewrite_info: dict = {}
        notes: list[str] = []

        def hits():  # noqa: ANN202
            kb = kbs.open(name)
            params = SearchParams(k=req.k, mode=req.mode)
            notes.extend(search_notes(kb, req.question, rewriting=req.rewrite))
            notes.extend(retriever.notes(kb, req.question, params))
            if not req.rewrite:
                return kb, retriever.search(kb, req.question, params, caller=g)
            rw = rewriters.get(req.model)
            if rw is None:
                rw = rewriters.setdefault(req.model, QueryRewriter(
                    req.model, lambda msgs: ctx.service.greedy(req.model, msgs, RewriteConfig().max_tokens)))  # fmt: skip
            found, info = rw.search(lambda q, p: retriever.search(kb, q, p, caller=g), req.question,
                                    kb.languages(), params)  # fmt: skip
            rewrite_info.update(info.to_dict())
            return kb, found

        if not req.stream:

            def work() -> dict:
                kb, found = hits()
                generate = lambda msgs: ctx.service.greedy(req.model, msgs, req.max_tokens)  # noqa: E731
                cfg = AnswerConfig(retry_bare=req.retry)
                out = ask(
                    req.question, found, generate, kb.analyzer, kb.embedder, req.model, cfg, kb.term_weights
                )
                if rewrite_info:
                    out["rewrite"] = rewrite_info
                if notes:
                    out["notes"] = notes
                if guard is not None:
                    out["answer"], blocked = guard.check_output(who, "kb.ask", req.model, out["answer"])
                    if blocked:
                        out["finish_reason"] = "content_filter"
                return out

            return await ctx.run_json("kb.ask", key, req.model, req.question, work)

        def prepared():  # noqa: ANN202
            kb, found = hits()
            return kb, prepare(req.question, found, kb.analyzer, AnswerConfig(), kb.term_weights)

        kb, p = await call(prepared)

        def attempt(messages: list[dict], hold: bool) -> Generator[dict, None, str | None]:
            """Stream the model's answer to `messages` as delta events, through the content filter; return what
            was shown, or None after a closing content_filter event when the filter blocked it. With `hold`, text
            that is so far only citations ("[1]") is held back: a bare citation that will be asked again is never
            sent, and a client that only joins deltas shows the real answer alone."""
            text, sent = "", 0  # what the filter let through; how much of it went out as deltas
            filt = guard.stream(who, "kb.ask", req.model) if guard is not None else None
            pieces, cancel = ctx.service.greedy_stream(req.model, messages, req.max_tokens)
            try:
                for piece in pieces:
                    out = filt.feed(piece) if filt is not None else piece
                    if out:
                        text += out
                        if not (hold and citation_so_far(text)):
                            yield {"type": "delta", "content": text[sent:]}
                            sent = len(text)
                    if filt is not None and filt.blocked:
                        break
            finally:
                cancel()
            if filt is not None and not filt.blocked:
                text += filt.finish()
            if text[sent:] and not (hold and bare(text)):  # the held text, unless it will be asked again
                yield {"type": "delta", "content": text[sent:]}
            if filt is not None and filt.blocked:
                yield {
                    "type": "done",
                    "finish_reason": "content_filter",
                    **response(p, text.strip(), [], req.model),
                }
                return None
            return text.strip()

        def events() -> Iterator[dict]:
            extra = {
                **({"notes": notes} if notes else {}),
                **({"rewrite": rewrite_info} if rewrite_info else {}),
            }
            yield {"type": "sources", **response(p, "", [], req.model), **extra}
            text, first, cfg = NO_ANSWER[p.lang], None, AnswerConfig(retry_bare=req.retry)
            if p.answerable:
                said = yield from attempt(p.messages, hold=cfg.retry_bare)
                if said is None:
                    return
                text = said
                if cfg.retry_bare and bare(text):  # "[1]" alone (held back, never sent): asked once more
                    yield {"type": "retry", **retry_note(text)}
                    again = yield from attempt(follow_up(p, text), hold=False)
                    if again is None:
                        return
                    first, text = text, again or text
            else:
                yield {"type": "delta", "content": text}
            final = (
                checked(p, text, kb.analyzer, kb.embedder, req.model, cfg, kb.term_weights)
                if p.answerable
                else response(p, text, [], req.model)
            )
            yield {"type": "done", **(final if first is None else retried(final, first))}

        return ctx.run_stream("kb.ask", key, req.model, req.question, events(), lambda: None)

    return r
