"""Evaluation in the server: stored suite results for the console's evaluation page, and the blind
side-by-side arena (pairs, votes, win rates, DPO export). Scopes: reading results needs none beyond
a valid key, asking for a pair and voting need `chat`, exporting preference data needs `admin`."""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from lmforge.serve.context import ServerContext


class PairRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=8000)
    models: list[str] = Field(min_length=2, max_length=2)
    max_tokens: int = Field(default=256, ge=1, le=2048)


class VoteRequest(BaseModel):
    pair_id: str = Field(min_length=1, max_length=64)
    winner: Literal["A", "B", "tie"]


def eval_router(ctx: ServerContext) -> APIRouter:
    r = APIRouter(prefix="/api", tags=["evaluation"])
    registry, votes, authorize, call = ctx.registry, ctx.votes, ctx.authorize, ctx.offload

    @r.get("/eval")
    async def results(key=authorize(None)) -> dict:
        out = []
        for m in registry.list():
            evals = {k.removeprefix("eval:"): v for k, v in m.metrics.items() if k.startswith("eval:")}
            if evals or "bias" in m.metrics:
                out.append({"name": m.name, "evals": evals, "bias": m.metrics.get("bias")})
        return {"models": out}

    @r.post("/arena/pair")
    async def pair(req: PairRequest, key=authorize("chat")) -> dict:
        rater = key.name if key else None

        def work() -> dict:
            for name in req.models:
                registry.get(name)  # unknown model: 404 before any generation
            return votes.new_pair(req.prompt, (req.models[0], req.models[1]),
                                  lambda model, prompt: ctx.service.greedy(model, [{"role": "user", "content": prompt}], req.max_tokens),
                                  rater)  # fmt: skip

        return await call(work)

    @r.post("/arena/vote")
    async def vote(req: VoteRequest, key=authorize("chat")) -> dict:
        return await call(lambda: votes.vote(req.pair_id, req.winner, key.name if key else None))

    @r.get("/arena/stats")
    async def stats(key=authorize(None)) -> dict:
        return {"pairs": await call(votes.stats)}

    @r.get("/arena/export")
    async def export(key=authorize("admin")) -> PlainTextResponse:
        rows = await call(votes.export)
        return PlainTextResponse(
            "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows), media_type="application/x-ndjson"
        )

    return r
