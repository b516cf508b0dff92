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
import sqlalchemy as sa
from psycopg.rows import dict_row
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.util import greenlet_spawn

from pgstack_api.connect import PreparsedConnect
from pgstack_api.retry import (
    DEFAULT_POLICY,
    CommitOutcomeUnknown,
    DatabaseUnavailable,
    RetryPolicy,
    with_retry,
)
from pgstack_api.settings import Settings
from pgstack_api.sqlstate import Kind, classify, connection_lost

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
    connect = PreparsedConnect(connect_args(settings))
    engine = create_async_engine(url, **pooling, async_creator=connect)
    connect.bind(engine)
    return engine


def connect_args(settings: Settings) -> dict[str, Any]:
    return {
        # libpq connect parameters: a bounded connect, and a name PgBouncer and
        # pg_stat_activity show (PgBouncer forwards it via track_extra_parameters).
        "connect_timeout": settings.connect_timeout,
        "application_name": settings.application_name,
    }


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


class Query:
    """One SELECT written with SQLAlchemy Core, compiled once per dialect.

    On PostgreSQL `Database.fetch` runs the compiled text on the psycopg connection itself:
    SQLAlchemy still opens and closes the connection (NullPool, or the benchmark's pool), but
    the statement skips its per-execution result machinery and greenlet hops.
    """

    def __init__(self, statement: sa.Select[Any]) -> None:
        self.statement = statement
        self._compiled: dict[str, str] = {}

    def sql(self, dialect: Dialect) -> str:
        text_ = self._compiled.get(dialect.name)
        if text_ is None:
            text_ = str(self.statement.compile(dialect=dialect))
            self._compiled[dialect.name] = text_
        return text_


class Database:
    """The engine plus the per-transaction rules (timeouts, retries) the routes rely on."""

    def __init__(
        self, engine: AsyncEngine, settings: Settings, policy: RetryPolicy = DEFAULT_POLICY
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.policy = policy
        self._postgres = is_postgres(engine)
        # NullPool (the stack): a read opens its connection with the engine's own creator.
        # NullPool's proxy around it would only be bookkeeping -- no pool to return to, no
        # state to reset on a connection about to close -- at ~220,000 instructions per read
        # (callgrind, docs/benchmarks.md). With a pool (the benchmark's baseline) reads check
        # a connection out of it.
        self._connect: PreparsedConnect | None = None
        if self._postgres and isinstance(engine.pool, NullPool):
            self._connect = PreparsedConnect(connect_args(settings))
            self._connect.bind(engine)

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
            raise CommitOutcomeUnknown(_reason(exc)) from exc
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
                if self._postgres:
                    await conn.execute(
                        text("SELECT set_config('statement_timeout', :ms, true)"),
                        {"ms": str(self.settings.statement_timeout_ms)},
                    )
            if not self._postgres:
                # Outside the deadline: BEGIN IMMEDIATE may wait for busy_timeout, and a
                # "database is locked" here is transient (retried), not an outage.
                await conn.begin()
        except Exception as exc:
            if conn is not None:
                await _quietly(conn.close())
            if classify(exc) in (Kind.LOCKED, None) or _is_query_error(exc):
                raise
            raise DatabaseUnavailable(_reason(exc)) from exc
        return conn

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """with_retry(with_transaction(work)): the whole transaction is the unit of retry."""

        async def attempt() -> T:
            async with self.transaction() as conn:
                return await work(conn)

        return await with_retry(attempt, self.policy)

    async def fetch(self, query: Query, **params: Any) -> list[dict[str, Any]]:
        """Rows of one SELECT, in autocommit: one round trip instead of four.

        BEGIN, SET LOCAL, the query and COMMIT are four round trips through PgBouncer; a lone
        SELECT needs no transaction. Its statement timeout is then the app role's default
        (`ALTER ROLE app SET statement_timeout`, set by the postgres init), and the whole call --
        connect, server assignment in PgBouncer, the query -- is bounded here. Idempotent, so
        transient failures are retried like transactions.
        """
        if not self._postgres:

            async def core(conn: AsyncConnection) -> list[dict[str, Any]]:
                result = await conn.execute(query.statement, params)
                return [dict(row._mapping) for row in result]

            return await self.run(core)
        sql = query.sql(self.engine.dialect)
        bound = self.settings.connect_timeout + self.settings.statement_timeout_ms / 1000

        async def attempt() -> list[dict[str, Any]]:
            try:
                async with asyncio.timeout(bound):
                    if self._connect is not None:
                        raw = await self._connect(autocommit=True)
                        try:
                            return await _rows(raw, sql, params)
                        finally:
                            await raw.close()
                    pooled = await self.engine.raw_connection()
                    try:
                        driver = pooled.driver_connection
                        assert isinstance(driver, psycopg.AsyncConnection)  # noqa: S101
                        try:
                            await driver.set_autocommit(True)
                            return await _rows(driver, sql, params)
                        finally:
                            if not driver.closed:
                                # Back to the pool as SQLAlchemy handed it out.
                                await driver.set_autocommit(False)
                    finally:
                        await _quietly(greenlet_spawn(pooled.close))
            except (SQLAlchemyError, psycopg.Error, OSError, TimeoutError) as exc:
                # Only database trouble becomes 503; a statement's own error passes.
                if _is_query_error(exc):
                    raise
                raise DatabaseUnavailable(_reason(exc)) from exc

        return await with_retry(attempt, self.policy)

    async def ping(self) -> float:
        """SELECT 1 on a fresh connection; returns the latency in milliseconds."""
        started = time.perf_counter()
        await self.fetch(_PING)
        return (time.perf_counter() - started) * 1000


_PING = Query(sa.select(sa.literal_column("1").label("one")))


async def _rows(
    conn: psycopg.AsyncConnection[Any], sql: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    # prepare=False: a NullPool connection never runs a statement twice.
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(sql, params, prepare=False)
    return await cursor.fetchall()


async def with_admin(settings: Settings, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run `work` on one direct connection as the owner (migrations, the CLI): never through
    PgBouncer, whose transaction pooling would hand session state (advisory locks) to others."""
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


def _is_query_error(exc: BaseException) -> bool:
    """An error the server raised for our statement (not a connection problem)."""
    kind = classify(exc)
    return kind is not None and kind is not Kind.UNAVAILABLE and not connection_lost(exc)


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
