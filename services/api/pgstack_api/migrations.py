"""Migrations: where the alembic scripts live, their head, and the chores behind pgstack-db's
wait, deploy, status and reset.

Migrations connect directly to PostgreSQL as the owner role, never through PgBouncer: the
advisory lock that serialises concurrent deploys is session state, which transaction pooling
would hand to another client.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from pgstack_api.db import with_admin
from pgstack_api.retry import DatabaseUnavailable
from pgstack_api.settings import Settings

T = TypeVar("T")

# pg_advisory_lock key for migrations: the bytes of "pgstack" as a bigint. Fixed, so every
# deploy of every version agrees on it.
MIGRATION_LOCK_KEY = int.from_bytes(b"pgstack", "big")


class LockTimeout(Exception):
    """Another deploy held the migration lock for longer than we were willing to wait."""


# The image puts alembic.ini and alembic/ in /app; a source checkout has them beside the package.
_CANDIDATES = (
    Path.cwd() / "alembic.ini",
    Path(__file__).resolve().parent.parent / "alembic.ini",
    Path("/app/alembic.ini"),
)


def alembic_ini() -> Path:
    explicit = os.environ.get("PGSTACK_ALEMBIC_INI")
    if explicit:
        return Path(explicit)
    for candidate in _CANDIDATES:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "alembic.ini not found in the current directory, beside the package or in /app; "
        "set PGSTACK_ALEMBIC_INI to its path"
    )


def alembic_config() -> Config:
    return Config(str(alembic_ini()))


def head_revision() -> str | None:
    """The newest revision the code knows, or None if the scripts are missing."""
    try:
        return ScriptDirectory.from_config(alembic_config()).get_current_head()
    except FileNotFoundError:
        return None


def progress(message: str) -> None:
    print(f"pgstack-db: {message}", file=sys.stderr, flush=True)


async def wait(settings: Settings, timeout: float) -> int:  # noqa: ASYNC109 -- a deadline across many connects
    """Retry SELECT 1 on the admin URL until it answers or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            await with_admin(settings, lambda c: c.execute(text("SELECT 1")))
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
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    cfg.attributes["skip_logging"] = True
    command.upgrade(cfg, target)


def _downgrade(conn: Connection, target: str) -> None:
    cfg = alembic_config()
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

    return await with_admin(settings, work)


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

    return await with_admin(settings, work)


async def status(settings: Settings) -> dict[str, Any]:
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()

    async def current(conn: AsyncConnection) -> str | None:
        return await conn.run_sync(_current)

    revision = await with_admin(settings, current)
    pending = [rev.revision for rev in script.iterate_revisions(head, revision)] if head else []
    pending.reverse()  # oldest first, the order they will run in
    return {"current": revision, "head": head, "at_head": revision == head, "pending": pending}
