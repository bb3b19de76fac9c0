"""Request-body limits: 413 in OpenAI's error shape before the app reads an oversized body.

Why not FastAPI's own `max_body_size` (Starlette's RequestBodyLimitMiddleware): it answers a body
whose declared length is too large with a plain-text "Content Too Large" sent from inside the
middleware, before any exception handler can give it OpenAI's shape, and OpenAI clients then fail
to parse the error. This middleware checks the declared length first and counts the bytes as they
stream in (a chunked body has no declared length); uploads to a knowledge base, streamed to disk,
get their own larger limit.
"""

from __future__ import annotations

import json
import re

from lmforge.serve.protocol import error_body

_UPLOAD = re.compile(r"^(/v1/kb/[^/]+/documents|/api/jobs/uploads)/?$")
TOO_LARGE_SCOPE_KEY = "lmforge.body_too_large"
"""Set in the ASGI scope (to the limit) when a streamed body ran over it: FastAPI's body reader
turns our exception into a 400 'error parsing the body', and the error handler reads this to
answer 413 instead."""


def too_large(limit: int) -> dict:
    return error_body(f"request body exceeds {limit} bytes", "invalid_request_error", "body_too_large")


class _TooLarge(Exception):
    pass


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
                    scope[TOO_LARGE_SCOPE_KEY] = limit
                    raise _TooLarge
            return msg

        try:
            return await self.app(scope, limited, send)
        except _TooLarge:
            return await self._reject(send, limit)

    async def _reject(self, send, limit: int) -> None:
        body = json.dumps(too_large(limit)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
