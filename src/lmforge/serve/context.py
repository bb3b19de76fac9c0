"""The request context every router receives: who is calling (auth), what they may do (scopes,
limits), what gets recorded (audit, metrics), and how blocking work reaches the event loop.

`ServerContext` is a plain object built once by `create_app` from its dependencies; routers take
it as an argument instead of closing over half the app. Blocking work (model calls, SQLite, KB
ingestion) runs in worker threads (`offload`, `run_json`); `run_stream` bridges a blocking
iterator of events to Server-Sent Events.

Why our own SSE bridge and not FastAPI's `EventSourceResponse`: FastAPI streams SSE only from a
path operation that is itself a generator with a fixed response class, while an OpenAI route
answers JSON or SSE depending on the request's `stream` field; and our bridge turns a failure in
the middle of a stream into an OpenAI-shaped error event, and cancels the generation (freeing the
engine slot) the moment the client goes away.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from lmforge.eval.human import VoteStore
from lmforge.home import Registry
from lmforge.infer.pool import ModelPool
from lmforge.infer.scheduler import Scheduler
from lmforge.jobs import JobQueue
from lmforge.rag.pipeline import KnowledgeBases
from lmforge.rag.retrieve import Retriever
from lmforge.serve.auth import ApiKey, KeyStore, RateLimiter
from lmforge.serve.errors import ApiError, api_error
from lmforge.serve.guard import Guard
from lmforge.serve.metrics import Metrics
from lmforge.serve.protocol import error_body
from lmforge.serve.service import ChatService


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
    """How often idle models are checked for unloading."""
    max_running_jobs: int = 1
    """Training jobs run at once (each in its own worker process); the others wait in order."""
    safety: str | None = None
    """A safety.yaml (content filter, per-key rules, PII); a malformed one stops the server from starting."""


def _json(item: Any) -> Any:
    return item.model_dump() if isinstance(item, BaseModel) else item


@dataclass
class ServerContext:
    settings: ServerSettings
    registry: Registry
    pool: ModelPool
    scheduler: Scheduler
    keys: KeyStore
    service: ChatService
    kbs: KnowledgeBases
    retriever: Retriever
    votes: VoteStore
    jobs: JobQueue
    """Training jobs (console Train page, /api/jobs), each run in a worker process."""
    need_keys: bool
    """False only on loopback with no keys configured: then every call is open."""
    metrics: Metrics = field(default_factory=Metrics)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    guard: Guard | None = None
    """The content filter and PII handling (serve/guard.py); built by create_app from settings.safety."""
    heads: dict[str, Any] = field(default_factory=dict)
    """Fine-tuned task models (`lmforge finetune --task`) loaded for /v1/tasks, by name and manifest date."""
    heads_lock: threading.Lock = field(default_factory=threading.Lock)

    def task_head(self, name: str) -> Any:
        """The fine-tuned task model `name` (loaded once; reloaded when the registry entry is replaced), or
        None when `name` is not one (a chat model answers by prompting)."""
        from lmforge.tasks.heads import TaskHead

        if not self.registry.exists(name):
            return None
        m = self.registry.get(name)
        if m.kind != "classifier":
            return None
        with self.heads_lock:
            cached = self.heads.get(name)
            if cached is None or cached[0] != m.created:
                self.heads[name] = (m.created, TaskHead.load(self.registry.model_path(m), name, m.config))
            return self.heads[name][1]

    # -- who is calling ---------------------------------------------------------------------------
    def authorize(self, scope: str | None) -> Any:
        """A FastAPI dependency: the caller's ApiKey (None on an open server), checked for `scope`
        and its rate limit; 401/403/429 in OpenAI's shape otherwise."""

        async def dep(request: Request) -> ApiKey | None:
            if not self.need_keys:
                return None
            header = request.headers.get("authorization", "")
            secret = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
            if not secret:
                raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", "invalid_request_error",
                               "missing_api_key")  # fmt: skip
            key = await asyncio.to_thread(self.keys.lookup, secret)
            if key is None:
                raise ApiError(401, "invalid API key", "invalid_request_error", "invalid_api_key")
            if key.revoked:
                raise ApiError(
                    401, "this API key has been revoked", "invalid_request_error", "invalid_api_key"
                )
            if scope and scope not in key.scopes and "admin" not in key.scopes:
                raise ApiError(403, f"this API key lacks the '{scope}' scope", "permission_error",
                               "insufficient_scope")  # fmt: skip
            wait = self.limiter.check(key)
            if wait is not None:
                raise ApiError(429, f"rate limit exceeded for key {key.name!r}", "rate_limit_error", "rate_limit_exceeded",
                               {"Retry-After": str(max(1, int(wait + 0.999)))})  # fmt: skip
            return key

        return Depends(dep)

    # -- what gets recorded ------------------------------------------------------------------------
    def audit(self, key: ApiKey | None, route: str, model: str | None, status: int, usage: dict | None,
              t0: float, prompt: str | None) -> None:  # fmt: skip
        u = usage or {}
        self.keys.audit(
            key_name=key.name if key else None, route=route, model=model, status=status,
            prompt_tokens=u.get("prompt_tokens", 0), completion_tokens=u.get("completion_tokens", 0),
            latency_ms=(time.monotonic() - t0) * 1000,
            prompt=self.guard.redact_log(prompt) if self.settings.audit_prompts and self.guard else
            (prompt if self.settings.audit_prompts else None),
        )  # fmt: skip
        if key is not None and u:
            self.limiter.add_tokens(key, u.get("total_tokens", 0))
        self.metrics.observe(route, model, status, u, time.monotonic() - t0)

    # -- blocking work -------------------------------------------------------------------------
    async def offload(self, work: Callable[[], Any]) -> Any:
        """Blocking work off the event loop; errors reach the exception handlers by their class."""
        return await asyncio.to_thread(work)

    async def run_json(self, route: str, key: ApiKey | None, model: str | None, prompt: str | None,
                       work: Callable[[], Any]) -> JSONResponse:  # fmt: skip
        """Run `work` in a thread and answer its result as JSON, audited either way."""
        t0 = time.monotonic()
        try:
            body = _json(await asyncio.to_thread(work))
        except Exception as e:
            self.audit(key, route, model, api_error(e).status, None, t0, prompt)
            raise
        self.audit(key, route, model, 200, body.get("usage"), t0, prompt)
        return JSONResponse(body)

    def run_stream(self, route: str, key: ApiKey | None, model: str | None, prompt: str | None,
                   events: Iterator[Any], cancel: Callable[[], None]) -> StreamingResponse:  # fmt: skip
        """Bridge a blocking event iterator to SSE; a client disconnect calls `cancel`."""
        t0 = time.monotonic()

        async def sse() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            q: asyncio.Queue = asyncio.Queue()
            done = object()
            usage: dict = {}
            status = 200

            def post(item: Any) -> bool:
                """Hand an item to the event loop; False once the server is shutting down."""
                if loop.is_closed():
                    return False
                try:
                    loop.call_soon_threadsafe(q.put_nowait, item)
                except RuntimeError:  # closed between the check and the call
                    return False
                return True

            def pump() -> None:
                try:
                    for ev in events:
                        if not post(_json(ev)):
                            break
                except Exception as e:  # any failure becomes an SSE error event; the server stays up
                    post(e)
                finally:
                    close = getattr(events, "close", None)  # frees the slot if we stopped early
                    if close is not None:
                        close()
                    post(done)

            threading.Thread(target=pump, daemon=True).start()
            try:
                while True:
                    item = await q.get()
                    if item is done:
                        break
                    if isinstance(item, Exception):
                        err = api_error(item)
                        status = err.status
                        yield f"data: {json.dumps(error_body(err.message, err.type_, err.code))}\n\n".encode()
                        continue
                    if item.get("usage"):
                        usage = item["usage"]
                    yield f"data: {json.dumps(item, ensure_ascii=False)}\n\n".encode()
                yield b"data: [DONE]\n\n"
            finally:  # normal end, error, or the client went away (task cancelled)
                cancel()
                self.audit(key, route, model, status, usage, t0, prompt)

        return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
