"""How the engine opens a psycopg connection: the conninfo is built once, not per connect.

With NullPool every request opens a connection, so this runs once per request. psycopg's
`AsyncConnection.connect()` turns its arguments into a conninfo string and back twice per call
(libpq's PQconninfoParse, and a Python object for each of libpq's ~50 options each time): about
735,000 of the ~1.3 million instructions a read by id spent in the database layer (callgrind,
docs/benchmarks.md "Where a request's time goes"). The stack's conninfo never changes, so
`PreparsedConnect` builds it once, from the same arguments SQLAlchemy's dialect would pass, and
then does only what connect() does after parsing: libpq's non-blocking connect under the connect
timeout, and the dialect's type adapters on the new connection.

psycopg's connect generator and wait function are not documented API: requirements.lock pins
psycopg to 3.3, and every stack test connects through here.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import waiting
from psycopg.adapt import AdaptersMap
from psycopg.conninfo import conninfo_to_dict, make_conninfo, timeout_from_conninfo
from sqlalchemy.ext.asyncio import AsyncEngine

# psycopg's own polling interval while connecting (connection_async._WAIT_INTERVAL).
_WAIT_INTERVAL = 0.1


class PreparsedConnect:
    """An `async_creator` for create_async_engine: connects like the dialect would."""

    def __init__(self, connect_args: dict[str, Any]) -> None:
        self._connect_args = connect_args
        self._engine: AsyncEngine | None = None
        self._conninfo: str | None = None
        self._timeout = 0
        self._context: AdaptersMap | None = None

    def bind(self, engine: AsyncEngine) -> None:
        """The engine whose dialect and URL give the connection's parameters (the creator is
        passed to create_async_engine before the engine exists)."""
        self._engine = engine

    def _prepare(self) -> str:
        assert self._engine is not None  # noqa: S101 -- bind() follows create_async_engine()
        cargs, cparams = self._engine.dialect.create_connect_args(self._engine.url)
        # SQLAlchemy's type adapters (created with the dialect, updated by its first connect).
        self._context = cparams.pop("context", None)
        cparams.update(self._connect_args)
        conninfo = make_conninfo(*cargs, **cparams)
        self._timeout = timeout_from_conninfo(conninfo_to_dict(conninfo))
        self._conninfo = conninfo
        return conninfo

    async def __call__(self, *, autocommit: bool = False) -> psycopg.AsyncConnection[Any]:
        """A new connection; `autocommit` as connect()'s argument of that name (born in
        autocommit, where set_autocommit() afterwards costs a lock and a wait per connection)."""
        conninfo = self._conninfo or self._prepare()
        try:
            conn: psycopg.AsyncConnection[Any] = await waiting.wait_conn_async(
                psycopg.AsyncConnection._connect_gen(conninfo),
                interval=_WAIT_INTERVAL,
                timeout=self._timeout,
            )
        except psycopg.errors._WaitTimeout:  # what connect() turns it into
            raise psycopg.errors.ConnectionTimeout("connection timeout expired") from None
        if self._context is not None:
            conn._adapters = AdaptersMap(self._context.adapters)
        conn._autocommit = autocommit
        return conn
