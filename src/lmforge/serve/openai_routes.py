"""The OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings.

Thin: validate (pydantic), authorise (scope), hand the work to `ChatService` in a worker thread,
answer JSON or SSE. Errors are raised, and the handlers in serve/errors.py shape them.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter

from lmforge.serve.context import ServerContext
from lmforge.serve.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest


def created_ts(created: str) -> int:
    """Unix time of a manifest's ISO `created` (0 when unreadable)."""
    try:
        return int(time.mktime(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return 0


SERVABLE = ("chat", "base", "embedding", "adapter")
"""Registry kinds listed by /v1/models (datasets, tokenizers, knowledge bases and masked LMs are not)."""


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
        """JSON from `whole(req)`, or SSE from `streamed(req)` when the request asks to stream."""
        if not req.stream:
            return await ctx.run_json(route, key, req.model, prompt, lambda: whole(req))
        events, cancel = await asyncio.to_thread(streamed, req)
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
