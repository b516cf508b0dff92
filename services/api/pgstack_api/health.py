"""/livez, /readyz and /api/health.

Liveness never touches the database (a DB outage must not get the API restarted). Readiness
asks the database through PgBouncer, and caches the answer briefly with single flight: however
many probes arrive, at most one query is in flight and at most one runs per cache period.
"""

from __future__ import annotations

import asyncio
import hmac
import platform
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pgstack_api import __version__
from pgstack_api.db import Database
from pgstack_api.endpoints import Endpoint, Resource
from pgstack_api.schemas import Health, Live, Ready
from pgstack_api.sqlstate import Kind, classify


@dataclass(frozen=True, slots=True)
class Probe:
    ok: bool
    latency_ms: float | None
    error: str | None
    checked_at: float


class ReadinessCache:
    """Runs `check` at most once per `ttl` seconds; concurrent callers share one run.

    When the answer has just expired, callers get it once more while a single refresh runs in
    the background (stale-while-revalidate), so probes never queue behind the database's round
    trip. The answer served is never older than ttl + timeout: past that, callers wait for the
    refresh, which is itself bounded by `timeout`.
    """

    def __init__(
        self,
        check: Callable[[], Awaitable[float]],
        *,
        ttl: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._last: Probe | None = None
        self._refresh: asyncio.Task[Probe] | None = None

    async def get(self) -> Probe:
        last = self._last
        age = None if last is None else self._clock() - last.checked_at
        if last is not None and age is not None and age < self._ttl:
            return last
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._run())
        if last is not None and age is not None and age < self._ttl + self._timeout:
            return last
        # shield: a caller that gives up must not cancel the refresh the others share.
        return await asyncio.shield(self._refresh)

    async def _run(self) -> Probe:
        try:
            async with asyncio.timeout(self._timeout):
                latency = await self._check()
            probe = Probe(True, round(latency, 2), None, self._clock())
        except TimeoutError:
            probe = Probe(False, None, "timeout", self._clock())
        except Exception as exc:
            probe = Probe(False, None, type(exc).__name__, self._clock())
        self._last = probe
        return probe


_LIVE = b'{"status":"ok"}'


async def livez(request: Request) -> Response:
    return Response(_LIVE, media_type="application/json")


_READY = b'{"status":"ready"}'


async def readyz(request: Request) -> Response:
    probe = await request.app.state.readiness.get()
    request.app.state.metrics.set_ready(probe.ok)
    if probe.ok:
        return Response(_READY, media_type="application/json")
    return JSONResponse(
        {"status": "not_ready", "reason": probe.error},
        status_code=503,
        headers={"Retry-After": str(request.app.state.settings.retry_after_s)},
    )


def authorised(request: Request) -> bool:
    """True when the request carries the configured ops token (constant-time compare)."""
    token = request.app.state.settings.ops_token
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if token is None or scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode())


def memory() -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    info: dict[str, Any] = {"max_rss_bytes": usage.ru_maxrss * 1024}  # Linux reports KiB
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = statm.read().split()
        page = resource.getpagesize()
        info["rss_bytes"] = int(pages[1]) * page
        info["vms_bytes"] = int(pages[0]) * page
    except OSError:
        pass
    return info


async def _migration_and_server(conn: AsyncConnection) -> tuple[str | None, str | None]:
    try:
        revision = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    except sa_exc.DBAPIError as exc:
        # No table yet means never migrated; anything else (a lost connection) is an outage.
        if classify(exc) is Kind.UNDEFINED_TABLE:
            raise _NotMigrated from None
        raise
    if conn.dialect.name == "postgresql":
        server = (await conn.execute(text("SELECT version()"))).scalar()
    else:
        server = (await conn.execute(text("SELECT sqlite_version()"))).scalar()
    return revision, server


class _NotMigrated(Exception):
    pass


async def api_health(request: Request) -> JSONResponse:
    state = request.app.state
    db: Database = state.db
    probe = await state.readiness.get()
    head: str | None = state.head_revision
    revision: str | None = None
    server: str | None = None
    if probe.ok:
        try:
            async with asyncio.timeout(state.settings.readiness_timeout_s):
                revision, server = await db.run(_migration_and_server)
        except _NotMigrated:
            revision = None
        except Exception:
            probe = Probe(False, None, "query_failed", probe.checked_at)
    at_head = revision is not None and revision == head
    healthy = probe.ok and at_head
    body: dict[str, Any] = {
        "status": "healthy" if healthy else "degraded",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "uptime": round(time.monotonic() - state.started_at, 1),
        "database": {"status": "up" if probe.ok else "down", "latency_ms": probe.latency_ms},
        "migration": {"revision": revision, "head": head, "at_head": at_head},
    }
    if authorised(request):
        body["version"] = {
            "app": __version__,
            "python": platform.python_version(),
            "server": server,
        }
        body["memory"] = memory()
    headers = {} if healthy else {"Retry-After": str(state.settings.retry_after_s)}
    return JSONResponse(body, status_code=200 if healthy else 503, headers=headers)


def _probe(path: str, op: str, summary: str, handler: Any, model: Any, *also: int) -> Resource:
    return Resource(path, Endpoint("GET", op, summary, None, model, raw=handler, also=also))


resources = [
    _probe("/livez", "livez", "Process is alive (no I/O)", livez, Live),
    _probe(
        "/readyz", "readyz", "Database reachable through PgBouncer (cached ~1 s)", readyz, Ready,
        503,
    ),
    _probe(
        "/api/health", "health", "Health; versions and memory with the ops token", api_health,
        Health, 503,
    ),
]  # fmt: skip
