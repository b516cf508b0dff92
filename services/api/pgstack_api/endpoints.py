"""Endpoints declared once: what they take, what they answer, and the Starlette route that
serves them. openapi.py reads the same declarations, so the document is the code.

An `Endpoint` names its input model and where it comes from (JSON body, query string or path),
its success model and status, the domain errors it can answer and its links. `Resource` turns
the endpoints of one path into one Starlette route, which is what makes OPTIONS and 405 list
exactly the path's methods (two routes on one path would each know only their own).

Handlers are functions of validated input: reads take the Database (autocommit, no transaction),
writes take the open transaction's connection and run inside `Database.run`, with the
Idempotency-Key protocol around them (idempotency.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from pgstack_api import idempotency
from pgstack_api.db import Database
from pgstack_api.domain.errors import NotFound
from pgstack_api.errors import JSON, Answer, MalformedJson, OutcomeUnknown, answer
from pgstack_api.retry import CommitOutcomeUnknown

_log = logging.getLogger(__name__)

Source = Literal["body", "query", "path"]
Handler = Callable[[Any, Any], Awaitable[BaseModel]]


@dataclass(frozen=True)
class Link:
    """An OpenAPI link from a success response to another operation (stateful fuzzers and
    client generators follow them)."""

    operation_id: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    request_body: Mapping[str, Any] | None = None
    description: str = ""


@dataclass(frozen=True)
class Endpoint:
    method: Literal["GET", "POST"]
    operation_id: str
    summary: str
    handler: Handler | None
    returns: type[BaseModel] | None
    status: int = 200
    input: type[BaseModel] | None = None
    source: Source = "body"
    # The domain's answers besides success: 404 (NotFound), 409 (Duplicate, OutOfStock).
    errors: tuple[int, ...] = ()
    # Writes run in a transaction and take an Idempotency-Key.
    writes: bool = False
    # Location of a created resource, from the result.
    location: Callable[[Any], str] | None = None
    links: Mapping[str, Link] = field(default_factory=dict)
    # The noun for a path id that cannot exist (404).
    noun: str = "resource"
    # Endpoints without a database input (probes, metrics) answer the request themselves; the
    # `returns` model is then also their body for the statuses in `also` (e.g. /readyz's 503).
    raw: Callable[[Request], Awaitable[Response]] | None = None
    also: tuple[int, ...] = ()
    media_type: str = JSON

    async def __call__(self, request: Request) -> Response:
        if self.raw is not None:
            return await self.raw(request)
        state = request.app.state
        try:
            data = await self._input(request)
            assert self.handler is not None  # noqa: S101 -- raw endpoints returned above
            if not self.writes:
                result = await self.handler(state.db, data)
                return Response(result.model_dump_json(), self.status, media_type=JSON)
            return await self._write(request, state.db, data)
        except Exception as exc:
            found = answer(exc)
            if found is None:
                raise  # a bug: the catch-all answers 500 and logs it with the request id
            return _error(request, found, exc)

    async def _input(self, request: Request) -> Any:
        if self.input is None:
            return None
        if self.source == "body":
            raw = await request.body()
            try:
                return self.input.model_validate_json(raw)
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                if first["type"] == "json_invalid":
                    raise MalformedJson(first["msg"]) from None
                raise
        if self.source == "query":
            return self.input.model_validate(dict(request.query_params))
        try:
            return self.input.model_validate(request.path_params)
        except ValidationError:
            # An id beyond BIGINT or below 1 cannot exist: 404, like any unknown id.
            raise NotFound(self.noun, request.path_params.get("id")) from None

    async def _write(self, request: Request, db: Database, data: BaseModel) -> Response:
        key = idempotency.parse_key(request.headers.get(idempotency.HEADER))

        handler = self.handler
        assert handler is not None  # noqa: S101 -- only raw endpoints have none

        async def work(conn: Any) -> idempotency.Stored:
            result = await handler(conn, data)
            location = self.location(result) if self.location else None
            return idempotency.Stored(self.status, result.model_dump_json(), location)

        replayed = False
        try:
            if key is None:
                stored = await db.run(work)
            else:
                ttl = timedelta(seconds=db.settings.idempotency_ttl_s)
                body_fingerprint = idempotency.fingerprint(data.model_dump_json())
                stored, replayed = await db.run(
                    lambda conn: idempotency.once(
                        conn,
                        operation=f"{self.method} {request.scope['route'].path}",
                        key=key,
                        body_fingerprint=body_fingerprint,
                        ttl=ttl,
                        work=work,
                    )
                )
        except CommitOutcomeUnknown:
            raise OutcomeUnknown(keyed=key is not None) from None
        headers = {}
        if stored.location:
            headers["Location"] = stored.location
        if key is not None:
            headers[idempotency.REPLAYED_HEADER] = "true" if replayed else "false"
        return Response(stored.body, stored.status, headers=headers, media_type=JSON)


def _error(request: Request, found: Answer, exc: Exception) -> Response:
    state = request.app.state
    if found.kind is not None:
        state.metrics.db_errors.labels(kind=found.kind).inc()
    if found.status == 503:
        _log.warning(
            "database unavailable",
            extra={
                "request_id": request.scope.get("state", {}).get("request_id"),
                "code": found.code,
                "reason": (str(exc).splitlines() or [type(exc).__name__])[0][:200],
            },
        )
    return found.response(state.settings.retry_after_s)


class Resource(Route):
    """One route for every method of a path: OPTIONS answers 204 with `Allow`, any other method
    405 with the same `Allow` (HEAD is served wherever GET is)."""

    def __init__(self, path: str, *endpoints: Endpoint) -> None:
        self.endpoints = endpoints
        # A raw endpoint's own handler, called directly: one coroutine less per request.
        self._by_method: dict[str, Callable[[Request], Awaitable[Response]]] = {
            e.method: e.raw or e for e in endpoints
        }
        methods = {*self._by_method, "OPTIONS"}
        if "GET" in methods:
            methods.add("HEAD")
        self.allow = ", ".join(sorted(methods))
        super().__init__(path, self._dispatch, methods=sorted(methods))

    async def _dispatch(self, request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        endpoint = self._by_method.get(method)
        if endpoint is None:  # OPTIONS (handle() refused every other method already)
            return Response(status_code=204, headers={"Allow": self.allow})
        return await endpoint(request)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            raise HTTPException(status_code=405, headers={"Allow": self.allow})
        await self.app(scope, receive, send)
