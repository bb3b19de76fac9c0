"""The HTTP server assembled from plain parts: OpenAI-compatible API, knowledge bases, evaluation,
operations, and the web console, in one FastAPI app.

`create_app(settings, registry, pool, keys, scheduler?, kbs?, jobs?)` receives every dependency (tests
pass their own) and builds one `ServerContext` (auth, audit, limits, offloading) that each router
receives; nothing lives at module level and no route closes over the app:

    errors.py         one handler per error class (OpenAI's error shape everywhere)
    context.py        who is calling, what they may do, what gets recorded; JSON and SSE answers
    openai_routes.py  /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings
    kb_routes.py      /v1/kb/...            eval_routes.py  /api/eval, /api/arena/...
    jobs_routes.py    /api/jobs (training jobs in worker processes: jobs.JobQueue)
    ops_routes.py     /health, /metrics, /api/ps, /api/models, /api/audit
    service.py        requests → backend calls → typed responses (no web framework inside)

Request bodies are limited by `limits.BodyLimit` (8 MiB by default; knowledge-base uploads,
streamed to disk, get their own 512 MiB), answered 413 `body_too_large`.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from lmforge import __version__
from lmforge.errors import LmforgeError
from lmforge.eval.human import VoteStore
from lmforge.home import Registry
from lmforge.infer.pool import ModelPool
from lmforge.infer.scheduler import Scheduler
from lmforge.jobs import JobQueue
from lmforge.rag.opinion import installed, registered
from lmforge.rag.pipeline import KnowledgeBases
from lmforge.rag.retrieve import LLMReranker, Retriever
from lmforge.serve.auth import KeyStore
from lmforge.serve.context import ServerContext, ServerSettings
from lmforge.serve.errors import install_error_handlers
from lmforge.serve.eval_routes import eval_router
from lmforge.serve.explain_routes import explain_router
from lmforge.serve.guard import Guard
from lmforge.serve.jobs_routes import jobs_router
from lmforge.serve.kb_routes import kb_router
from lmforge.serve.limits import BodyLimit
from lmforge.serve.openai_routes import openai_router
from lmforge.serve.ops_routes import ops_router
from lmforge.serve.service import ChatService
from lmforge.serve.task_routes import task_router

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
RERANK_TOKENS = 32
"""Answer budget of the LLM reranker (it answers with a list of passage numbers)."""

__all__ = ["LOOPBACK", "ServerSettings", "create_app", "keys_required"]


def keys_required(settings: ServerSettings, keys: KeyStore) -> bool:
    """Open only on loopback with no keys configured; anywhere else every call needs a key."""
    if settings.host not in LOOPBACK and keys.active_count() == 0:
        raise LmforgeError(
            f"refusing to listen on {settings.host} without API keys; create one with `lmforge keys create`"
        )
    return keys.active_count() > 0


def create_app(
    settings: ServerSettings,
    registry: Registry,
    pool: ModelPool,
    keys: KeyStore,
    scheduler: Scheduler | None = None,
    kbs: KnowledgeBases | None = None,
    jobs: JobQueue | None = None,
) -> FastAPI:
    scheduler = scheduler or Scheduler(pool)
    service = ChatService(registry, scheduler)
    kbs = kbs or KnowledgeBases(registry)
    retriever = Retriever(
        rerankers=lambda model: LLMReranker(lambda msgs: service.greedy(model, msgs, RERANK_TOKENS)),
        opinions=installed(registered(registry)),
    )
    guard = Guard.load(
        settings.safety, keys.audit_safety
    )  # a malformed safety.yaml: the server does not start
    ctx = ServerContext(
        settings=settings, registry=registry, pool=pool, scheduler=scheduler, keys=keys, service=service,
        kbs=kbs, retriever=retriever, votes=VoteStore(registry.root / "eval" / "votes.sqlite"),
        jobs=jobs or JobQueue(registry, max_running=settings.max_running_jobs), need_keys=keys_required(settings, keys),
        guard=guard,
    )  # fmt: skip
    kbs.redact = guard.ingest_redactor()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        stop = asyncio.Event()

        async def reaper() -> None:
            while not stop.is_set():
                await asyncio.sleep(settings.reap_interval_s)
                await asyncio.to_thread(pool.reap_idle)

        task = asyncio.create_task(reaper())
        # the knowledge bases' first searches should not wait for what loads on first use (Retriever.warm)
        warm = asyncio.create_task(asyncio.to_thread(retriever.warm, kbs, None, stop.is_set))
        yield
        stop.set()
        warm.cancel()
        task.cancel()
        await asyncio.to_thread(pool.close)
        await asyncio.to_thread(kbs.close)

    app = FastAPI(title="lmforge", version=__version__, lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, upload_limit=settings.max_upload_bytes)
    install_error_handlers(app)
    app.include_router(openai_router(ctx))
    app.include_router(kb_router(ctx))
    app.include_router(eval_router(ctx))
    app.include_router(ops_router(ctx))
    app.include_router(jobs_router(ctx))
    app.include_router(task_router(ctx))
    app.include_router(explain_router(ctx))

    console = resources.files("lmforge.serve").joinpath("console")
    app.mount("/console", StaticFiles(directory=str(console)), name="console")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(console.joinpath("index.html")))

    return app
