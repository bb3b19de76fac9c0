"""`POST /api/explain/attention` and `POST /api/explain/tokens` (scope `chat`): lmforge.explain behind the
console's Explain page — the JSON the CLI's `--json` describes plus the same self-contained interactive page
(`html`), which the console shows as it is. HF models only (eager attention); a GGUF model gets the CLI's
message naming its dequantized copy."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from lmforge.serve.context import ServerContext

MAX_EXPLAIN_TOKENS = 256
"""The longest text the server explains (attention is T² per head; attributions run the model steps × T)."""


class AttentionRequest(BaseModel):
    model: str = Field(min_length=1)
    text: str = Field(min_length=1)
    layer: int | None = None
    head: int | None = None


class TokensRequest(BaseModel):
    model: str = Field(min_length=1)
    text: str = Field(min_length=1)
    target: str | None = None
    method: Literal["ig", "grad-x-input"] = "ig"
    steps: int = Field(default=32, ge=2, le=200)


def explain_router(ctx: ServerContext) -> APIRouter:
    r = APIRouter(prefix="/api/explain", tags=["explain"])

    def registered(name: str) -> str:
        """Only registered models: a client never names a folder on the server."""
        ctx.registry.get(name)  # unknown: 404
        return name

    @r.post("/attention")
    async def attention(req: AttentionRequest, key=ctx.authorize("chat")) -> dict:
        def work() -> dict:
            from lmforge.explain import attention_maps, explain_attention_json, load_model
            from lmforge.explain.attention import attention_html

            em = load_model(registered(req.model), ctx.registry, say=lambda _s: None)
            result = attention_maps(em.model, em.tokenizer, req.text, MAX_EXPLAIN_TOKENS)
            data = explain_attention_json(result, req.layer, req.head)
            return {"model": em.name, "kind": em.kind, "data": data, "html": attention_html(data, em.name)}

        return await ctx.offload(work)

    @r.post("/tokens")
    async def tokens(req: TokensRequest, key=ctx.authorize("chat")) -> dict:
        def work() -> dict:
            from lmforge.explain import AttributionConfig, attributions, explain_tokens_json, load_model
            from lmforge.explain.tokens import tokens_html

            em = load_model(registered(req.model), ctx.registry, say=lambda _s: None)
            cfg = AttributionConfig(target=req.target, method=req.method, steps=req.steps,
                                    max_tokens=MAX_EXPLAIN_TOKENS)  # fmt: skip
            data = explain_tokens_json(attributions(em.model, em.tokenizer, em.kind, req.text, cfg))
            return {"model": em.name, "kind": em.kind, "data": data, "html": tokens_html(data, em.name)}

        return await ctx.offload(work)

    return r
