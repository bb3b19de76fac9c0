"""Operations: /health, /metrics (Prometheus), /api/ps (loaded models), /api/models (registry with
group, age, key facts, lineage and metrics), /api/models/{name}/lineage (`Registry.lineage_tree`: the
drawn tree of ancestors and descendants, as `lmforge models show` prints it),
/api/models/{name}/compress-report (the stored trade-off table + chart), /api/audit and /api/safety/events (admin only)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from lmforge import __version__
from lmforge.errors import NotFoundError
from lmforge.home import age_seconds, group_of, key_facts
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
        def listing() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for m in ctx.registry.list():
                lineage = [{"depth": d, "name": a.name, "kind": a.kind, "format": a.format, "source": a.source}
                           for d, a in ctx.registry.lineage(m.name)]  # fmt: skip
                out.append({"name": m.name, "kind": m.kind, "group": group_of(m.kind), "format": m.format,
                            "size_bytes": m.size_bytes, "params": m.params, "created": m.created,
                            "age_s": age_seconds(m), "source": m.source, "notes": m.notes, "parents": m.parents,
                            "config": m.config, "metrics": m.metrics, "facts": asdict(key_facts(m)),
                            "lineage": lineage})  # fmt: skip
            return out

        return {"models": await ctx.offload(listing)}

    @r.get("/api/models/{name}/lineage")
    async def api_lineage(name: str, key=ctx.authorize(None)) -> dict:
        """`Registry.lineage_tree(name)`: ancestors, descendants, missing parents and the drawn roots."""
        return asdict(await ctx.offload(lambda: ctx.registry.lineage_tree(name)))

    @r.get("/api/models/{name}/compress-report")
    async def api_compress_report(name: str, key=ctx.authorize(None)) -> dict:
        """The stored `lmforge compress report` of a model: its rows and the chart as base64 PNG."""
        from lmforge.compress.report import png_base64

        def load() -> dict[str, Any]:
            report = ctx.registry.get(name).metrics.get("compress_report")
            if not report:
                raise NotFoundError(f"no compression report for {name}: run `lmforge compress report {name}`")
            return {
                "rows": report["rows"],
                "reference": report["reference"],
                "png_base64": png_base64(report),
            }

        return await ctx.offload(load)

    @r.get("/api/audit")
    async def api_audit(limit: int = 100, key=ctx.authorize("admin")) -> dict:
        return {"rows": await ctx.offload(lambda: ctx.keys.audit_rows(min(max(limit, 1), 1000)))}

    @r.get("/api/safety/events")
    async def safety_events(limit: int = 100, key=ctx.authorize("admin")) -> dict:
        """The content filter's hits, newest first (serve/guard.py; text only with audit_text)."""
        return {"rows": await ctx.offload(lambda: ctx.keys.safety_rows(min(max(limit, 1), 1000)))}

    return r
