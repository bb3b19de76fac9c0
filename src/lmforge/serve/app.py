"""The HTTP server: OpenAI-compatible API, web console, health and metrics, in one FastAPI app.

`create_app(settings, registry, pool, keys)` receives every dependency (tests pass their own);
nothing lives at module level. Routes stay thin: they validate, authorise, and hand work to
`serve.service.ChatService`, which turns requests into scheduler calls and responses.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from lmforge import __version__
from lmforge.errors import ContextOverflowError, ForbiddenError, LmforgeError, NotFoundError
from lmforge.eval.human import VoteStore
from lmforge.home import Registry
from lmforge.infer.pool import ModelPool
from lmforge.infer.remote import UpstreamError
from lmforge.infer.scheduler import EngineFailure, QueueFullError, RequestTimeoutError, Scheduler
from lmforge.rag.embed import load_embedder
from lmforge.rag.pipeline import EmbedderCache, KnowledgeBases
from lmforge.rag.retrieve import LLMReranker, Retriever
from lmforge.serve.auth import ApiKey, KeyStore, RateLimiter
from lmforge.serve.eval_routes import eval_router
from lmforge.serve.kb_routes import kb_router
from lmforge.serve.metrics import Metrics
from lmforge.serve.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, error_body
from lmforge.serve.service import ChatService

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 8 * 2**20
    """Larger request bodies get 413."""
    max_upload_bytes: int = 512 * 2**20
    """Limit for document uploads to a knowledge base (streamed to disk, not held in memory)."""
    audit_prompts: bool = False
    """Store prompt text in the audit log (off by default: prompts are private)."""
    reap_interval_s: float = 15.0


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, type_: str, code: str | None = None, headers: dict | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.type_, self.code, self.headers = status, message, type_, code, headers


def keys_required(settings: ServerSettings, keys: KeyStore) -> bool:
    """Open only on loopback with no keys configured; anywhere else every call needs a key."""
    if settings.host not in LOOPBACK and keys.active_count() == 0:
        raise LmforgeError(
            f"refusing to listen on {settings.host} without API keys; create one with `lmforge keys create`"
        )
    return keys.active_count() > 0


class BodyLimit:
    """ASGI middleware: refuse bodies over the limit with 413 before the app reads them."""

    def __init__(self, app, limit: int, upload_limit: int | None = None) -> None:
        self.app, self.base_limit, self.upload_limit = app, limit, upload_limit or limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        is_upload = scope.get("method") == "POST" and _UPLOAD.match(scope.get("path", ""))
        limit = self.upload_limit if is_upload else self.base_limit
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._reject(send, limit)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return msg

        try:
            return await self.app(scope, limited, send)
        except _TooLarge:
            return await self._reject(send, limit)

    async def _reject(self, send, limit: int) -> None:
        body = json.dumps(
            error_body(f"request body exceeds {limit} bytes", "invalid_request_error", "body_too_large")
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


_UPLOAD = re.compile(r"^/v1/kb/[^/]+/documents/?$")


class _TooLarge(Exception):
    pass


def create_app(
    settings: ServerSettings,
    registry: Registry,
    pool: ModelPool,
    keys: KeyStore,
    scheduler: Scheduler | None = None,
    kbs: KnowledgeBases | None = None,
) -> FastAPI:
    scheduler = scheduler or Scheduler(pool)
    metrics = Metrics()
    limiter = RateLimiter()
    service = ChatService(registry, scheduler)
    need_keys = keys_required(settings, keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = asyncio.Event()

        async def reaper():
            while not stop.is_set():
                await asyncio.sleep(settings.reap_interval_s)
                await asyncio.to_thread(pool.reap_idle)

        task = asyncio.create_task(reaper())
        yield
        stop.set()
        task.cancel()
        await asyncio.to_thread(pool.close)
        await asyncio.to_thread(kbs.close)

    app = FastAPI(title="lmforge", version=__version__, lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, upload_limit=settings.max_upload_bytes)
    app.state.pool, app.state.scheduler, app.state.keys = pool, scheduler, keys
    kbs = kbs or KnowledgeBases(registry.root / "kb", EmbedderCache(lambda n: load_embedder(n, registry)))

    # -- errors, OpenAI-shaped ----------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return JSONResponse(error_body(e.message, e.type_, e.code), status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        err = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if err.get("type") == "json_invalid":
            msg = f"malformed JSON body: {err.get('msg')}"
        else:
            msg = f"{'.'.join(loc) or 'body'}: {err.get('msg')}"
        return JSONResponse(
            error_body(msg, "invalid_request_error", "invalid_value", ".".join(loc) or None), 400
        )

    # -- auth ---------------------------------------------------------------------------------
    def authorize(scope: str | None):
        async def dep(request: Request) -> ApiKey | None:
            if not need_keys:
                return None
            header = request.headers.get("authorization", "")
            secret = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
            if not secret:
                raise ApiError(
                    401,
                    "missing API key: send 'Authorization: Bearer <key>'",
                    "invalid_request_error",
                    "missing_api_key",
                )
            key = await asyncio.to_thread(keys.lookup, secret)
            if key is None:
                raise ApiError(401, "invalid API key", "invalid_request_error", "invalid_api_key")
            if key.revoked:
                raise ApiError(
                    401, "this API key has been revoked", "invalid_request_error", "invalid_api_key"
                )
            if scope and scope not in key.scopes and "admin" not in key.scopes:
                raise ApiError(
                    403, f"this API key lacks the '{scope}' scope", "permission_error", "insufficient_scope"
                )
            wait = limiter.check(key)
            if wait is not None:
                raise ApiError(429, f"rate limit exceeded for key {key.name!r}", "rate_limit_error", "rate_limit_exceeded",
                               {"Retry-After": str(max(1, int(wait + 0.999)))})  # fmt: skip
            request.state.key = key
            return key

        return Depends(dep)

    def audit(
        key: ApiKey | None,
        route: str,
        model: str | None,
        status: int,
        usage: dict | None,
        t0: float,
        prompt: str | None,
    ):
        u = usage or {}
        keys.audit(
            key_name=key.name if key else None, route=route, model=model, status=status,
            prompt_tokens=u.get("prompt_tokens", 0), completion_tokens=u.get("completion_tokens", 0),
            latency_ms=(time.monotonic() - t0) * 1000, prompt=prompt if settings.audit_prompts else None,
        )  # fmt: skip
        if key is not None and u:
            limiter.add_tokens(key, u.get("total_tokens", 0))
        metrics.observe(route, model, status, u, time.monotonic() - t0)

    def to_api_error(e: Exception) -> ApiError:
        if isinstance(e, ApiError):
            return e
        if isinstance(e, QueueFullError):
            return ApiError(
                429, str(e), "rate_limit_error", "queue_full", {"Retry-After": str(int(e.retry_after))}
            )
        if isinstance(e, RequestTimeoutError):
            return ApiError(504, str(e), "timeout_error", "timeout")
        if isinstance(e, ContextOverflowError):
            return ApiError(400, str(e), "invalid_request_error", "context_length_exceeded")
        if isinstance(e, EngineFailure):
            return ApiError(500, str(e), "server_error", "engine_failure")
        if isinstance(e, UpstreamError):
            return ApiError(502, str(e), "server_error", "upstream_error")
        if isinstance(e, NotFoundError):
            return ApiError(404, str(e), "invalid_request_error", "not_found")
        if isinstance(e, ForbiddenError):
            return ApiError(403, str(e), "permission_error", "forbidden")
        if isinstance(e, LmforgeError):
            msg = str(e)
            if msg.startswith("unknown model"):
                return ApiError(404, msg, "invalid_request_error", "model_not_found")
            return ApiError(400, msg, "invalid_request_error", None)
        raise e

    async def run_json(route: str, key, model: str, prompt_text: str | None, work) -> JSONResponse:
        t0 = time.monotonic()
        try:
            body = await asyncio.to_thread(work)
        except Exception as e:
            err = to_api_error(e)
            audit(key, route, model, err.status, None, t0, prompt_text)
            raise err from e
        audit(key, route, model, 200, body.get("usage"), t0, prompt_text)
        return JSONResponse(body)

    def run_stream(
        route: str, key, model: str, prompt_text: str | None, events: Iterator[dict], ticket_cancel
    ) -> StreamingResponse:
        """Bridge a blocking event iterator to SSE; a client disconnect cancels the generation."""
        t0 = time.monotonic()

        async def sse() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            q: asyncio.Queue = asyncio.Queue()
            done = object()
            usage: dict = {}
            status = 200

            def post(item) -> bool:
                """Hand an item to the event loop; False once the server is shutting down."""
                if loop.is_closed():
                    return False
                try:
                    loop.call_soon_threadsafe(q.put_nowait, item)
                except RuntimeError:  # closed between the check and the call
                    return False
                return True

            def pump():
                try:
                    for ev in events:
                        if not post(ev):
                            break
                except Exception as e:  # any failure becomes an SSE error event; the server stays up
                    post(e)
                finally:
                    events.close()  # frees the slot if we stopped early
                    post(done)

            threading.Thread(target=pump, daemon=True).start()
            try:
                while True:
                    item = await q.get()
                    if item is done:
                        break
                    if isinstance(item, Exception):
                        try:
                            err = to_api_error(item)
                        except Exception:  # not ours: report it as a server error, keep serving
                            err = ApiError(
                                500,
                                f"internal error: {type(item).__name__}",
                                "server_error",
                                "internal_error",
                            )
                        status = err.status
                        yield f"data: {json.dumps(error_body(err.message, err.type_, err.code))}\n\n".encode()
                        continue
                    if item.get("usage"):
                        usage = item["usage"]
                    yield f"data: {json.dumps(item, ensure_ascii=False)}\n\n".encode()
                yield b"data: [DONE]\n\n"
            finally:  # normal end, error, or the client went away (task cancelled)
                ticket_cancel()
                audit(key, route, model, status, usage, t0, prompt_text)

        return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # -- OpenAI routes -----------------------------------------------------------------------
    @app.get("/v1/models")
    async def list_models(key=authorize(None)) -> dict:
        data = [
            {
                "id": m.name,
                "object": "model",
                "created": _ts(m.created),
                "owned_by": "lmforge",
                "lmforge": {"kind": m.kind, "format": m.format},
            }  # fmt: skip
            for m in registry.list()
        ]
        return {"object": "list", "data": data}

    @app.get("/v1/models/{name}")
    async def get_model(name: str, key=authorize(None)) -> dict:
        try:
            m = registry.get(name)
        except LmforgeError as e:
            raise to_api_error(e) from e
        return {"id": m.name, "object": "model", "created": _ts(m.created), "owned_by": "lmforge"}

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest, key=authorize("chat")):
        prompt_text = req.messages[-1].text() if settings.audit_prompts else None
        if not req.stream:
            return await run_json("chat", key, req.model, prompt_text, lambda: service.chat(req))
        try:
            events, cancel = await asyncio.to_thread(service.chat_stream, req)
        except Exception as e:
            raise to_api_error(e) from e
        return run_stream("chat", key, req.model, prompt_text, events, cancel)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, key=authorize("chat")):
        prompt_text = (
            (req.prompt if isinstance(req.prompt, str) else req.prompt[0]) if settings.audit_prompts else None
        )
        if not req.stream:
            return await run_json("completions", key, req.model, prompt_text, lambda: service.complete(req))
        try:
            events, cancel = await asyncio.to_thread(service.complete_stream, req)
        except Exception as e:
            raise to_api_error(e) from e
        return run_stream("completions", key, req.model, prompt_text, events, cancel)

    @app.post("/v1/embeddings")
    async def embeddings(req: EmbeddingRequest, key=authorize("embed")):
        return await run_json("embeddings", key, req.model, None, lambda: service.embed(req))

    # -- lmforge routes ------------------------------------------------------------------------
    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "version": __version__, "loaded": [e["name"] for e in pool.ps()]}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(
            metrics.render(scheduler.depth(), pool.ps()), media_type=metrics.content_type
        )

    @app.get("/api/ps")
    async def ps(key=authorize(None)) -> dict:
        return {"models": pool.ps(), "queue": scheduler.depth()}

    @app.get("/api/models")
    async def api_models(key=authorize(None)) -> dict:
        out: list[dict[str, Any]] = []
        for m in registry.list():
            lineage = [{"depth": d, "name": a.name, "kind": a.kind, "format": a.format, "source": a.source}
                       for d, a in registry.lineage(m.name)]  # fmt: skip
            out.append({"name": m.name, "kind": m.kind, "format": m.format, "size_bytes": m.size_bytes,
                        "params": m.params, "created": m.created, "parents": m.parents, "metrics": m.metrics,
                        "lineage": lineage})  # fmt: skip
        return {"models": out}

    @app.get("/api/audit")
    async def api_audit(limit: int = 100, key=authorize("admin")) -> dict:
        return {"rows": await asyncio.to_thread(keys.audit_rows, min(max(limit, 1), 1000))}

    # -- knowledge bases and evaluation (greedy chat for answers, reranking and arena pairs) -------
    def greedy_chat(model: str, messages: list[dict], max_tokens: int) -> str:
        req = ChatCompletionRequest.model_validate(
            {"model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens, "seed": 0}
        )
        return service.chat(req)["choices"][0]["message"]["content"] or ""

    def greedy_chat_stream(model: str, messages: list[dict], max_tokens: int):
        req = ChatCompletionRequest.model_validate(
            {
                "model": model,
                "messages": messages,
                "temperature": 0,
                "max_tokens": max_tokens,
                "seed": 0,
                "stream": True,
            }
        )
        return service.chat_stream(req)

    async def offload(work):
        """Blocking work (KB, votes) off the event loop; user errors become OpenAI-shaped 4xx."""
        try:
            return await asyncio.to_thread(work)
        except LmforgeError as e:
            raise to_api_error(e) from e

    retriever = Retriever(rerankers=lambda model: LLMReranker(lambda msgs: greedy_chat(model, msgs, 32)))
    app.include_router(
        kb_router(
            kbs,
            retriever,
            authorize,
            run_json,
            to_api_error,
            offload,
            greedy_chat,
            greedy_chat_stream,
            run_stream,
        )
    )

    votes = VoteStore(registry.root / "eval" / "votes.sqlite")
    app.include_router(eval_router(registry, votes, authorize, offload, greedy_chat))

    console = resources.files("lmforge.serve").joinpath("console")
    app.mount("/console", StaticFiles(directory=str(console)), name="console")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(console.joinpath("index.html")))

    return app


def _ts(created: str) -> int:
    try:
        return int(time.mktime(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return 0
