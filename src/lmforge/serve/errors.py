"""Every error the server returns, in OpenAI's shape, chosen by the error's class.

One table (`ERRORS`) maps each error class to its HTTP status, OpenAI error type and code; the
exception handlers and the SSE error events both read it, so a `NotFoundError` raised deep in the
registry or a knowledge base becomes a 404 without any route catching it. FastAPI's own errors
(validation, an unparseable or non-UTF-8 body, unknown route, wrong method) are rewritten into the
same shape: clients of OpenAI's API read `error.message`, not `detail`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmforge.errors import (
    ContextOverflowError,
    ForbiddenError,
    LmforgeError,
    ModelNotFoundError,
    NotFoundError,
)
from lmforge.infer.base import CapabilityError
from lmforge.infer.remote import UpstreamError
from lmforge.infer.scheduler import EngineFailure, QueueFullError, RequestTimeoutError
from lmforge.serve.limits import TOO_LARGE_SCOPE_KEY, too_large
from lmforge.serve.protocol import error_body

# (class, status, type, code): the first class that matches wins, so subclasses come first
ERRORS: list[tuple[type[Exception], int, str, str | None]] = [
    (QueueFullError, 429, "rate_limit_error", "queue_full"),
    (RequestTimeoutError, 504, "timeout_error", "timeout"),
    (ContextOverflowError, 400, "invalid_request_error", "context_length_exceeded"),
    (CapabilityError, 400, "invalid_request_error", "unsupported_capability"),
    (UpstreamError, 502, "server_error", "upstream_error"),
    (ModelNotFoundError, 404, "invalid_request_error", "model_not_found"),
    (NotFoundError, 404, "invalid_request_error", "not_found"),
    (ForbiddenError, 403, "permission_error", "forbidden"),
    (EngineFailure, 500, "server_error", "engine_failure"),
    (LmforgeError, 400, "invalid_request_error", None),
]
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "invalid_body"}


class ApiError(Exception):
    """An error the HTTP layer itself decides (auth, limits): status, OpenAI type and code."""

    def __init__(self, status: int, message: str, type_: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.type_, self.code, self.headers = status, message, type_, code, headers


def api_error(e: Exception) -> ApiError:
    """The ApiError for any exception; one that is not ours becomes a 500 that names only its type."""
    if isinstance(e, ApiError):
        return e
    for cls, status, type_, code in ERRORS:
        if isinstance(e, cls):
            headers = {"Retry-After": str(int(e.retry_after))} if isinstance(e, QueueFullError) else None
            return ApiError(status, str(e), type_, code, headers)
    return ApiError(500, f"internal error: {type(e).__name__}", "server_error", "internal_error")


def _response(e: ApiError) -> JSONResponse:
    return JSONResponse(error_body(e.message, e.type_, e.code), status_code=e.status, headers=e.headers)


def install_error_handlers(app: FastAPI) -> None:
    """One handler per error class (our errors, FastAPI's validation and HTTP errors)."""

    async def ours(request: Request, e: Exception) -> JSONResponse:
        return _response(api_error(e))

    app.add_exception_handler(ApiError, ours)
    for cls, *_ in ERRORS:
        app.add_exception_handler(cls, ours)

    async def validation(request: Request, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if err.get("type") == "json_invalid":
            msg = f"malformed JSON body: {err.get('msg')}"
        else:
            msg = f"{'.'.join(loc) or 'body'}: {err.get('msg')}"
        return JSONResponse(
            error_body(msg, "invalid_request_error", "invalid_value", ".".join(loc) or None), 400
        )

    async def http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        limit = request.scope.get(TOO_LARGE_SCOPE_KEY)
        if limit is not None:  # a chunked body ran over the limit while FastAPI was reading it
            return JSONResponse(too_large(limit), 413)
        detail = e.detail if isinstance(e.detail, str) else "request failed"
        if e.status_code == 400 and "parsing the body" in detail:
            detail = "the request body could not be read: send UTF-8 encoded JSON"

        type_ = "invalid_request_error" if e.status_code < 500 else "server_error"
        return JSONResponse(error_body(detail, type_, HTTP_CODES.get(e.status_code)), e.status_code,
                            headers=getattr(e, "headers", None))  # fmt: skip

    app.add_exception_handler(RequestValidationError, validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http)  # type: ignore[arg-type]
