"""The engine and the transaction helper: how the API talks to its database.

NullPool: PgBouncer owns pooling, so each transaction opens a connection to PgBouncer (a Unix
socket in the stack, open only to the socket's group: cheap, no TIME_WAIT) and closes it afterwards.

psycopg through transaction pooling: psycopg prepares a statement after it has run it
`prepare_threshold` (5) times on one connection. That is safe here because PgBouncer >= 1.22
with max_prepared_statements > 0 tracks protocol-level prepared statements per client and
re-prepares them on whichever server it picks, and libpq >= 17 (the psycopg[binary] wheel ships
libpq 18) lets psycopg use the protocol-level close that PgBouncer understands. With NullPool a
connection rarely lives long enough to prepare anything anyway. The other half of the rule: no
session state outside a transaction, so statement_timeout is set with set_config(..., true),
i.e. SET LOCAL, inside every transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from sqlalchemy import event, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from pgstack_api.retry import (
    DEFAULT_POLICY,
    CommitOutcomeUnknown,
    DatabaseUnavailable,
    RetryPolicy,
    is_connection_lost,
    is_sqlite_locked,
    sqlstate,
    with_retry,
)
from pgstack_api.settings import Settings

T = TypeVar("T")

# How long a SQLite writer waits for another writer before "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 5000


def create_engine(settings: Settings, url: URL | None = None) -> AsyncEngine:
    """Build (but do not connect) an engine for the API's URL, or for `url` (the CLI's admin)."""
    url = url if url is not None else settings.api_url()
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    pooling: dict[str, Any] = (
        {"pool_size": settings.db_pool_size, "max_overflow": 0}
        if settings.db_pool_size
        else {"poolclass": NullPool}
    )
    return create_async_engine(
        url,
        **pooling,
        connect_args={
            # libpq connect parameters: a bounded connect, and a name PgBouncer and
            # pg_stat_activity show (PgBouncer forwards it via track_extra_parameters).
            "connect_timeout": settings.connect_timeout,
            "application_name": settings.application_name,
        },
    )


def _sqlite_engine(url: URL) -> AsyncEngine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, poolclass=NullPool)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")  # off by default in SQLite
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that later upgrades
        # to a writer fails with "database is locked" without waiting for busy_timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


class Database:
    """The engine plus the per-transaction rules (timeouts, retries) the routes rely on."""

    def __init__(
        self, engine: AsyncEngine, settings: Settings, policy: RetryPolicy = DEFAULT_POLICY
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.policy = policy

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction on a fresh connection, with statement_timeout as SET LOCAL."""
        conn = await self._begin()
        try:
            yield conn
        except BaseException:
            await _quietly(conn.rollback())
            await _quietly(conn.close())
            raise
        try:
            await conn.commit()
        except Exception as exc:
            raise CommitOutcomeUnknown(str(exc)) from exc
        finally:
            await _quietly(conn.close())

    async def _begin(self) -> AsyncConnection:
        """Connect and run the first statement under the connect timeout.

        Through PgBouncer the client login may succeed while no server is available: the wait
        for a server happens at the first query (query_wait_timeout, server_login_retry). So
        the deadline covers connect *and* the first round trip, and both failures surface as
        DatabaseUnavailable -> 503, never a hang.
        """
        conn: AsyncConnection | None = None
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                conn = await self.engine.connect()
                if is_postgres(self.engine):
                    await conn.execute(
                        text("SELECT set_config('statement_timeout', :ms, true)"),
                        {"ms": str(self.settings.statement_timeout_ms)},
                    )
            if not is_postgres(self.engine):
                # Outside the deadline: BEGIN IMMEDIATE may wait for busy_timeout, and a
                # "database is locked" here is transient (retried), not an outage.
                await conn.begin()
        except Exception as exc:
            if conn is not None:
                await _quietly(conn.close())
            if is_sqlite_locked(exc) or _is_query_error(exc):
                raise
            raise DatabaseUnavailable(_reason(exc)) from exc
        return conn

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """with_retry(with_transaction(work)): the whole transaction is the unit of retry."""

        async def attempt() -> T:
            async with self.transaction() as conn:
                return await work(conn)

        return await with_retry(attempt, self.policy)

    async def read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """A single-statement read in autocommit: one round trip instead of four.

        BEGIN, SET LOCAL, the query and COMMIT are four round trips through PgBouncer; a lone
        SELECT needs no transaction. Its statement timeout is then the app role's default
        (`ALTER ROLE app SET statement_timeout`, set by the postgres init), and the whole call --
        connect, server assignment in PgBouncer, the query -- is bounded here. Idempotent, so
        transient failures are retried like transactions. `work` must run one statement.
        """
        if not is_postgres(self.engine):
            return await self.run(work)
        bound = self.settings.connect_timeout + self.settings.statement_timeout_ms / 1000

        async def attempt() -> T:
            conn: AsyncConnection | None = None
            try:
                async with asyncio.timeout(bound):
                    conn = await self.engine.connect()
                    await conn.execution_options(isolation_level="AUTOCOMMIT")
                    return await work(conn)
            except (SQLAlchemyError, psycopg.Error, OSError, TimeoutError) as exc:
                # Only database trouble becomes 503; the work's own errors (404, ...) pass.
                if _is_query_error(exc):
                    raise
                raise DatabaseUnavailable(_reason(exc)) from exc
            finally:
                if conn is not None:
                    await _quietly(conn.close())

        return await with_retry(attempt, self.policy)

    async def ping(self) -> float:
        """SELECT 1 on a fresh connection; returns the latency in milliseconds."""
        started = time.perf_counter()

        async def _select(conn: AsyncConnection) -> None:
            await conn.execute(text("SELECT 1"))

        await self.read(_select)
        return (time.perf_counter() - started) * 1000


def _is_query_error(exc: BaseException) -> bool:
    """An error the server raised for our statement (not a connection problem)."""
    state = sqlstate(exc)
    return (
        state is not None
        and not state.startswith(("08", "57P", "53"))
        and not (is_connection_lost(exc))
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out connecting to the database"
    inner = getattr(exc, "orig", None) or exc
    first_line = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    return first_line[:200]


async def _quietly(awaitable: Awaitable[Any]) -> None:
    """Cleanup on an already-broken connection must not mask the original error."""
    with contextlib.suppress(Exception):
        await awaitable
