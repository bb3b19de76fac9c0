"""Operations: /health, /metrics (Prometheus), /api/ps (loaded models), /api/models (registry with
lineage and metrics), /api/audit (admin only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from lmforge import __version__
from lmforge.serve.context import ServerContext


def ops_router(ctx: ServerContext) -> APIRouter:
    r = APIRouter(tags=["operations"])

    @r.get("/health")
    async def health() -> dict:
        return {"status": "ok", "version": __version__, "loaded": [e["name"] for e in ctx.pool.ps()]}

    @r.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        text = ctx.metrics.render(ctx.scheduler.depth(), ctx.pool.ps())
        return PlainTextResponse(text, media_type=ctx.metrics.content_type)

    @r.get("/api/ps")
    async def ps(key=ctx.authorize(None)) -> dict:
        return {"models": ctx.pool.ps(), "queue": ctx.scheduler.depth()}

    @r.get("/api/models")
    async def api_models(key=ctx.authorize(None)) -> dict:
        out: list[dict[str, Any]] = []
        for m in ctx.registry.list():
            lineage = [{"depth": d, "name": a.name, "kind": a.kind, "format": a.format, "source": a.source}
                       for d, a in ctx.registry.lineage(m.name)]  # fmt: skip
            out.append({"name": m.name, "kind": m.kind, "format": m.format, "size_bytes": m.size_bytes,
                        "params": m.params, "created": m.created, "parents": m.parents, "metrics": m.metrics,
                        "lineage": lineage})  # fmt: skip
        return {"models": out}

    @r.get("/api/audit")
    async def api_audit(limit: int = 100, key=ctx.authorize("admin")) -> dict:
        return {"rows": await ctx.offload(lambda: ctx.keys.audit_rows(min(max(limit, 1), 1000)))}

    return r
