"""The OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings.

Thin: validate (pydantic), authorise (scope), hand the work to `ChatService` in a worker thread,
answer JSON or SSE. Errors are raised, and the handlers in serve/errors.py shape them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from lmforge.serve.context import ServerContext
from lmforge.serve.guard import Guard
from lmforge.serve.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest


def created_ts(created: str) -> int:
    """Unix time of a manifest's ISO `created` (0 when unreadable)."""
    try:
        return int(time.mktime(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return 0


SERVABLE = ("chat", "base", "embedding", "adapter")
"""Registry kinds listed by /v1/models (datasets, tokenizers, knowledge bases and masked LMs are not)."""


def to_dict(item: Any) -> Any:
    return item.model_dump() if isinstance(item, BaseModel) else item


def screen_input(guard: Guard, who: str | None, route: str, req: Any) -> None:
    """Every text of a chat or completion request through the input filter (masked in place)."""
    if isinstance(req, ChatCompletionRequest):
        for m in req.messages:
            if isinstance(m.content, str):
                m.content = guard.check_input(who, route, req.model, m.content)
            elif isinstance(m.content, list):
                for part in m.content:
                    if part.type == "text" and part.text:
                        part.text = guard.check_input(who, route, req.model, part.text)
    elif isinstance(req.prompt, str):
        req.prompt = guard.check_input(who, route, req.model, req.prompt)
    elif isinstance(req.prompt, list) and all(isinstance(p, str) for p in req.prompt):
        req.prompt = [guard.check_input(who, route, req.model, p) for p in req.prompt]


def openai_router(ctx: ServerContext) -> APIRouter:
    r = APIRouter(tags=["OpenAI-compatible"])
    service = ctx.service

    @r.get("/v1/models")
    async def list_models(key=ctx.authorize(None)) -> dict:
        data = [{"id": m.name, "object": "model", "created": created_ts(m.created), "owned_by": "lmforge",
                 "lmforge": {"kind": m.kind, "format": m.format}}
                for m in ctx.registry.list() if m.kind in SERVABLE]  # fmt: skip
        return {"object": "list", "data": data}

    @r.get("/v1/models/{name}")
    async def get_model(name: str, key=ctx.authorize(None)) -> dict:
        m = ctx.registry.get(name)
        return {"id": m.name, "object": "model", "created": created_ts(m.created), "owned_by": "lmforge"}

    async def answer(route: str, key, req, prompt: str | None, whole, streamed):  # noqa: ANN001, ANN202
        """JSON from `whole(req)`, or SSE from `streamed(req)` when the request asks to stream; the content filter
        on the way in (a block is a 400 `content_filter`, a mask rewrites the text) and on the way out."""
        guard, who = ctx.guard, key.name if key else None
        if guard is not None:
            await ctx.offload(lambda: screen_input(guard, who, route, req))
        if not req.stream:

            def work() -> dict:
                body = to_dict(whole(req))
                return guard.chat_body(who, route, req.model, body) if guard is not None else body

            return await ctx.run_json(route, key, req.model, prompt, work)
        events, cancel = await asyncio.to_thread(streamed, req)
        if guard is not None:
            events = guard.chat_events(who, route, req.model, events, to_dict)
        return ctx.run_stream(route, key, req.model, prompt, events, cancel)

    @r.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest, key=ctx.authorize("chat")):
        prompt = req.messages[-1].text() if ctx.settings.audit_prompts else None
        return await answer("chat", key, req, prompt, service.chat, service.chat_stream)

    @r.post("/v1/completions")
    async def completions(req: CompletionRequest, key=ctx.authorize("chat")):
        prompt = None
        if ctx.settings.audit_prompts:
            first = req.prompt if isinstance(req.prompt, str) else req.prompt[0] if req.prompt else ""
            prompt = first if isinstance(first, str) else str(first)
        return await answer("completions", key, req, prompt, service.complete, service.complete_stream)

    @r.post("/v1/embeddings")
    async def embeddings(req: EmbeddingRequest, key=ctx.authorize("embed")):
        return await ctx.run_json("embeddings", key, req.model, None, lambda: service.embed(req))

    return r
