"""The database chores behind pgstack-db: wait, deploy, status, seed, check, reset.

Migrations connect directly to PostgreSQL as the owner role, never through PgBouncer: the
advisory lock that serialises concurrent deploys is session state, which transaction pooling
would hand to another client (authentik #23876).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from pgstack_api import migrations
from pgstack_api.db import create_engine
from pgstack_api.retry import DatabaseUnavailable
from pgstack_api.seed import seed, table_counts
from pgstack_api.settings import Settings

T = TypeVar("T")

# pg_advisory_lock key for migrations: the bytes of "pgstack" as a bigint. Fixed, so every
# deploy of every version agrees on it.
MIGRATION_LOCK_KEY = int.from_bytes(b"pgstack", "big")


class LockTimeout(Exception):
    """Another deploy held the migration lock for longer than we were willing to wait."""


def progress(message: str) -> None:
    print(f"pgstack-db: {message}", file=sys.stderr, flush=True)


async def _with_admin(settings: Settings, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    engine = create_engine(settings, settings.admin_url())
    try:
        try:
            conn = await asyncio.wait_for(engine.connect(), settings.connect_timeout + 1)
        except (OSError, TimeoutError, psycopg.OperationalError) as exc:
            raise DatabaseUnavailable(str(exc).strip() or type(exc).__name__) from exc
        except Exception as exc:
            if isinstance(getattr(exc, "orig", None), psycopg.OperationalError):
                raise DatabaseUnavailable(str(exc.orig).strip()) from exc  # type: ignore[attr-defined]
            raise
        try:
            return await work(conn)
        finally:
            await conn.close()
    finally:
        await engine.dispose()


async def wait(settings: Settings, timeout: float) -> int:  # noqa: ASYNC109 -- a deadline across many connects
    """Retry SELECT 1 on the admin URL until it answers or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            await _with_admin(settings, lambda c: c.execute(text("SELECT 1")))
            progress(f"database is up (attempt {attempt})")
            return attempt
        except DatabaseUnavailable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DatabaseUnavailable(
                    f"gave up after {timeout:.0f} s and {attempt} attempts: {exc}"
                ) from exc
            progress(
                f"waiting for the database (attempt {attempt}, {left:.0f} s left): "
                f"{str(exc).splitlines()[0]}"
            )
            await asyncio.sleep(min(1.0, left))


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _upgrade(conn: Connection, target: str) -> None:
    cfg = migrations.alembic_config()
    cfg.attributes["connection"] = conn
    cfg.attributes["skip_logging"] = True
    command.upgrade(cfg, target)


def _downgrade(conn: Connection, target: str) -> None:
    cfg = migrations.alembic_config()
    cfg.attributes["connection"] = conn
    cfg.attributes["skip_logging"] = True
    command.downgrade(cfg, target)


async def _locked(
    conn: AsyncConnection, lock_timeout: float, work: Callable[[], Awaitable[T]]
) -> tuple[T, float]:
    """Run `work` holding the session advisory lock; returns its result and the wait in ms."""
    if conn.dialect.name != "postgresql":
        return await work(), 0.0  # SQLite (dev): one process, one writer
    started = time.monotonic()
    announced = False
    while True:
        got = (
            await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        ).scalar_one()
        await conn.commit()  # the lock is session-level; end the transaction that took it
        if got:
            break
        if time.monotonic() - started > lock_timeout:
            raise LockTimeout(f"another migration held the lock for over {lock_timeout:.0f} s")
        if not announced:
            progress("another migration is running; waiting for its lock")
            announced = True
        await asyncio.sleep(0.25)
    waited = (time.monotonic() - started) * 1000
    try:
        return await work(), waited
    finally:
        await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
        await conn.commit()


async def deploy(settings: Settings, lock_timeout: float) -> dict[str, Any]:
    """`alembic upgrade head` under the advisory lock; returns the summary line's fields."""
    started = time.monotonic()

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        async def upgrade() -> tuple[str | None, str | None]:
            before = await conn.run_sync(_current)
            await conn.commit()
            await conn.run_sync(_upgrade, "head")
            await conn.commit()
            after = await conn.run_sync(_current)
            await conn.commit()
            return before, after

        (before, after), waited = await _locked(conn, lock_timeout, upgrade)
        return {
            "event": "migrate",
            "from": before,
            "to": after,
            "changed": before != after,
            "lock_wait_ms": round(waited, 1),
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
        }

    return await _with_admin(settings, work)


async def reset(settings: Settings, lock_timeout: float) -> dict[str, Any]:
    """Downgrade to nothing and upgrade to head again: every table emptied and recreated."""

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        async def redo() -> str | None:
            await conn.run_sync(_downgrade, "base")
            await conn.commit()
            await conn.run_sync(_upgrade, "head")
            await conn.commit()
            current = await conn.run_sync(_current)
            await conn.commit()
            return current

        revision, _ = await _locked(conn, lock_timeout, redo)
        return {"event": "reset", "revision": revision}

    return await _with_admin(settings, work)


async def status(settings: Settings) -> dict[str, Any]:
    script = ScriptDirectory.from_config(migrations.alembic_config())
    head = script.get_current_head()

    async def current(conn: AsyncConnection) -> str | None:
        return await conn.run_sync(_current)

    revision = await _with_admin(settings, current)
    pending = [rev.revision for rev in script.iterate_revisions(head, revision)] if head else []
    pending.reverse()  # oldest first, the order they will run in
    return {"current": revision, "head": head, "at_head": revision == head, "pending": pending}


async def run_seed(settings: Settings) -> dict[str, Any]:
    async def work(conn: AsyncConnection) -> dict[str, Any]:
        inserted = await seed(conn)
        await conn.commit()
        return {"event": "seed", "inserted": inserted}

    return await _with_admin(settings, work)


async def _timed(url: URL, settings: Settings) -> dict[str, Any]:
    """Connect, SELECT 1 and read the server version on a fresh connection."""
    engine = create_engine(settings, url)
    started = time.perf_counter()
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            latency = (time.perf_counter() - started) * 1000
            version = (
                (await conn.execute(text("SHOW server_version"))).scalar()
                if conn.dialect.name == "postgresql"
                else (await conn.execute(text("SELECT sqlite_version()"))).scalar()
            )
        return {"ok": True, "latency_ms": round(latency, 2), "server_version": version}
    except Exception as exc:
        return {
            "ok": False,
            "error": (str(getattr(exc, "orig", exc)).strip().splitlines() or [type(exc).__name__])[
                0
            ],
        }
    finally:
        await engine.dispose()


async def _pools(url: URL, settings: Settings) -> dict[str, Any]:
    """SHOW POOLS on PgBouncer's admin console, which only speaks the simple query protocol:
    psycopg sends a parameterless execute() as a simple query; prepare_threshold=None keeps it
    from ever preparing."""
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        conn = await psycopg.AsyncConnection.connect(
            conninfo,
            autocommit=True,
            prepare_threshold=None,
            connect_timeout=settings.connect_timeout,
        )
    except psycopg.Error as exc:
        return {"ok": False, "error": str(exc).strip().splitlines()[0]}
    async with conn:
        cur = await conn.execute("SHOW POOLS")
        names = [d.name for d in cur.description or []]
        rows = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
        keep = (
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "sv_active",
            "sv_idle",
            "sv_used",
            "maxwait",
            "pool_mode",
        )
        cur = await conn.execute("SHOW VERSION")
        version_row = await cur.fetchone()
    return {
        "ok": True,
        "version": version_row[0] if version_row else None,
        "pools": [{k: r[k] for k in keep if k in r} for r in rows],
    }


async def _tables(conn: AsyncConnection) -> dict[str, Any]:
    counts = await table_counts(conn)
    out: dict[str, Any] = {}
    for name, count in counts.items():
        size = None
        if conn.dialect.name == "postgresql":
            size = (
                await conn.execute(
                    text("SELECT pg_total_relation_size(CAST(:t AS regclass))"),
                    {"t": f"public.{name}"},
                )
            ).scalar()
        out[name] = {"rows": count, "total_bytes": size}
    return out


async def check(settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {"api_path": await _timed(settings.api_url(), settings)}
    if settings.admin_database_url is not None or settings.is_dev:
        if settings.admin_database_url is not None:
            report["direct"] = await _timed(settings.admin_url(), settings)
        if report.get("direct", report["api_path"])["ok"]:
            try:
                report["tables"] = await _with_admin(settings, _tables)
            except Exception as exc:
                report["tables"] = {"error": str(getattr(exc, "orig", exc)).splitlines()[0]}
    pgbouncer = settings.pgbouncer_url()
    if pgbouncer is not None:
        report["pgbouncer"] = await _pools(pgbouncer, settings)
    report["ok"] = all(part.get("ok", True) for part in report.values() if isinstance(part, dict))
    return report
