"""Connections and queries: versions, a consistent snapshot with its row counts, databases."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from pgstack_backup.settings import Settings

# Exact row counts of every user table, in one statement (so in the caller's snapshot).
_ROW_COUNTS = """
SELECT format('%I.%I', n.nspname, c.relname) AS name,
       (xpath('/row/c/text()', query_to_xml(
           format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')
       ))[1]::text::bigint AS rows
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND NOT c.relispartition
ORDER BY 1
"""


class VersionMismatch(RuntimeError):
    """pg_dump's major differs from the server's."""


def connect(settings: Settings, dbname: str | None = None, *, host: str | None = None
            ) -> psycopg.Connection:  # fmt: skip
    return psycopg.connect(settings.conninfo(dbname, host=host), autocommit=True)


def tool_major(tool: str = "pg_dump") -> int:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"\) (\d+)", out)
    if not match:
        raise RuntimeError(f"cannot parse `{tool} --version`: {out!r}")
    return int(match.group(1))


def check_versions(settings: Settings) -> dict[str, str]:
    """Fail loudly when pg_dump cannot dump this server faithfully (major versions differ)."""
    with connect(settings) as conn:
        server = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        server_major = conn.info.server_version // 10000
    dump_major = tool_major("pg_dump")
    if dump_major != server_major:
        raise VersionMismatch(
            f"pg_dump is major {dump_major} but the server is {server} (major {server_major}); "
            f"rebuild the backup image with postgresql-client-{server_major}"
        )
    return {"server_version": server, "pg_dump_major": str(dump_major)}


def row_counts(conn: psycopg.Connection) -> dict[str, int]:
    return {name: int(rows) for name, rows in conn.execute(_ROW_COUNTS).fetchall()}


def alembic_revision(conn: psycopg.Connection) -> str | None:
    if conn.execute("SELECT to_regclass('public.alembic_version')").fetchone()[0] is None:  # type: ignore[index]
        return None
    row = conn.execute("SELECT version_num FROM public.alembic_version").fetchone()
    return str(row[0]) if row else None


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: str
    server_version: str
    alembic_revision: str | None
    tables: dict[str, int]


@contextmanager
def exported_snapshot(settings: Settings) -> Iterator[Snapshot]:
    """A read-only repeatable-read transaction, as the dump role, whose snapshot pg_dump imports
    (--snapshot): the row counts in the manifest describe exactly the data in the dump."""
    with psycopg.connect(settings.conninfo(), autocommit=False) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(settings.dump_role)))
        # pg_dump may take long; the exporting transaction must outlive it.
        conn.execute("SET idle_in_transaction_session_timeout = 0")
        snapshot_id = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        yield Snapshot(
            id=str(snapshot_id),
            server_version=str(conn.execute("SHOW server_version").fetchone()[0]),  # type: ignore[index]
            alembic_revision=alembic_revision(conn),
            tables=row_counts(conn),
        )
        conn.rollback()


def create_database(conn: psycopg.Connection, name: str, owner: str) -> None:
    conn.execute(
        sql.SQL(
            "CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C.UTF-8'"
        ).format(sql.Identifier(name), sql.Identifier(owner))
    )
    # Nobody but the owner connects to a database that is being filled.
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))


def drop_database(conn: psycopg.Connection, name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def terminate_sessions(conn: psycopg.Connection, database: str, role: str | None = None) -> int:
    """End the sessions on `database` (of `role` only, if given), autovacuum workers included:
    the caller is the superuser, so nobody's session can refuse."""
    row = conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid() AND (%s::text IS NULL OR usename = %s)",
        (database, role, role),
    ).fetchone()
    return int(row[0]) if row else 0
