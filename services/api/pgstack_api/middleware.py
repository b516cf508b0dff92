"""The outermost ASGI layer: request id, body-size limit, one log line and metrics per request,
and the last line of defence that turns any unexpected exception into a JSON 500."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgstack_api.metrics import Metrics

_log = logging.getLogger("pgstack_api.request")

REQUEST_ID_HEADER = "x-request-id"
# Accept ids from proxies and clients only if they cannot smuggle anything into logs or headers.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_UNMATCHED = "<unmatched>"


def valid_request_id(value: str | None) -> bool:
    return value is not None and _REQUEST_ID.fullmatch(value) is not None


def request_id_for(header: str | None) -> str:
    """Honour a well-formed incoming id, otherwise mint one."""
    return header if header is not None and valid_request_id(header) else uuid.uuid4().hex


def content_length(headers: Headers) -> int | None:
    """The declared body size; -1 when the header is present but not a non-negative integer."""
    raw = headers.get("content-length")
    if raw is None:
        return None
    return int(raw) if raw.isascii() and raw.isdigit() else -1


class BodyTooLarge(Exception):
    """A chunked body grew past the limit while the app was reading it."""


def _json_body(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"code": code, "message": message}}).encode()


class RequestMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        request_id = request_id_for(headers.get(REQUEST_ID_HEADER))
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        received = 0

        async def receive_with_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge
            return message

        declared = content_length(headers)
        try:
            if declared == -1:
                await self._reply(
                    send_with_id,
                    *_json_body(400, "bad_request", "Content-Length is not a valid number"),
                )
            elif declared is not None and declared > self.max_body_bytes:
                # Refuse before reading a byte of it.
                await self._reply(send_with_id, *self._too_large())
            else:
                await self.app(scope, receive_with_limit, send_with_id)
        except BodyTooLarge:
            if response_started:
                raise
            await self._reply(send_with_id, *self._too_large())
        except Exception:
            # Never a traceback to the client; the log line carries it with the request id.
            _log.exception("unhandled error", extra={"request_id": request_id})
            if not response_started:
                await self._reply(
                    send_with_id,
                    *_json_body(500, "internal_error", f"internal error (request id {request_id})"),
                )
        finally:
            self._record(scope, status, started, request_id)

    def _too_large(self) -> tuple[int, bytes]:
        return _json_body(
            413, "body_too_large", f"request body is larger than {self.max_body_bytes} bytes"
        )

    @staticmethod
    async def _reply(send: Send, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The client may still be sending a body we will not read.
                    (b"connection", b"close"),
                ]
                if status == 413
                else [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _record(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        elapsed = time.perf_counter() - started
        route: Any = scope.get("route")
        template = getattr(route, "path", None) or _UNMATCHED
        method = scope["method"]
        self.metrics.requests.labels(method=method, route=template, status=str(status)).inc()
        self.metrics.latency.labels(method=method, route=template).observe(elapsed)
        _log.info(
            "request",
            extra={
                "method": method,
                "path": scope["path"],
                "route": template,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "request_id": request_id,
            },
        )
