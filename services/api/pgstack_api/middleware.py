"""The per-request ASGI layers, one concern each (as starlette's own middleware/ modules are):
the request id, the request's outcome (reported to the access log and the metrics), the body-size
limit. Pure ASGI, no BaseHTTPMiddleware: each costs a function call and a wrapped `send`, counted
in docs/benchmarks.md. The answer to an unexpected exception is not here:
errors.handle_unexpected."""

from __future__ import annotations

import os
import re
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgstack_api.errors import Answer, BadContentLength, BodyTooLarge
from pgstack_api.logging import AccessLog
from pgstack_api.metrics import UNMATCHED, Metrics

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_RAW = REQUEST_ID_HEADER.encode()
# Accept ids from proxies and clients only if they cannot smuggle anything into logs or headers.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def valid_request_id(value: str | None) -> bool:
    return value is not None and _REQUEST_ID.fullmatch(value) is not None


def request_id_for(header: str | None) -> str:
    """Honour a well-formed incoming id, otherwise mint one."""
    # 128 random bits in hex, like uuid4().hex without building a UUID.
    return header if header is not None and valid_request_id(header) else os.urandom(16).hex()


def content_length(headers: Headers) -> int | None:
    """The declared body size; -1 when the header is present but not a non-negative integer."""
    raw = headers.get("content-length")
    if raw is None:
        return None
    return int(raw) if raw.isascii() and raw.isdigit() else -1


def _status_of(send: Send, box: list[int]) -> Send:
    """`send`, noting the response's status in box[0]."""

    async def noting(message: Message) -> None:
        if message["type"] == "http.response.start":
            box[0] = message["status"]
        await send(message)

    return noting


class RequestIdMiddleware:
    """Gives every request an id (the client's X-Request-ID if well-formed), in the scope's
    state for the log lines and in the response's X-Request-ID header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == _REQUEST_ID_RAW:
                given = value.decode("latin-1")
                break
        request_id = request_id_for(given)
        scope.setdefault("state", {})["request_id"] = request_id
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (_REQUEST_ID_RAW, raw_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)


class OutcomeMiddleware:
    """Times each request and notes its status, once, and reports the outcome to the access
    log (one JSON line: method, path, route template, status, duration, request id) and to the
    metrics (count and latency by method, route template and status). One clock and one wrapped
    `send` for both: a layer each cost ~9,000 instructions a request (docs/benchmarks.md), and
    the log's duration and the histogram's now agree."""

    def __init__(self, app: ASGIApp, *, log: AccessLog, metrics: Metrics) -> None:
        self.app = app
        self.log = log
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        box = [500]  # an exception that escapes becomes the catch-all's 500
        try:
            await self.app(scope, receive, _status_of(send, box))
        finally:
            seconds = time.perf_counter() - started
            route: Any = scope.get("route")
            template = getattr(route, "path", UNMATCHED)
            method = scope["method"]
            self.metrics.record(method, template, box[0], seconds)
            self.log.request(
                method,
                scope["path"],
                template,
                box[0],
                round(seconds * 1000, 2),
                scope.get("state", {}).get("request_id"),
            )


class _ChunkedBodyTooLarge(Exception):
    """A chunked body grew past the limit while the app was reading it."""


class BodyLimitMiddleware:
    """413 for a body over the limit: by Content-Length before reading a byte, or while reading
    a chunked body; 400 for a Content-Length that is not a number."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = content_length(Headers(scope=scope))
        if declared == -1:
            await _reply(send, BadContentLength().answer())
            return
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(send)
            return
        received = 0
        started = False

        async def receive_with_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _ChunkedBodyTooLarge
            return message

        async def noting(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_with_limit, noting)
        except _ChunkedBodyTooLarge:
            if started:
                raise
            await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        # The client may still be sending a body we will not read.
        await _reply(send, BodyTooLarge(self.max_body_bytes).answer(), close=True)


async def _reply(send: Send, found: Answer, close: bool = False) -> None:
    """An answer from errors.py, sent before any app has run (no Response object here)."""
    body = found.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": found.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
