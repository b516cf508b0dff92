"""Restore a backup over the live database, as the owner role, without serving half a restore.

1. Refuse a backup whose checksums or table of contents fail.
2. Lock the API out: REVOKE CONNECT from the app role and end its sessions. PgBouncer's next
   server login fails, so the API answers 503 `database_unavailable` (+ Retry-After) for the
   whole restore -- no client writes into a database about to be replaced, and none reads a
   half-restored one.
3. A safety backup of the current database (checksummed; kept by retention like any other).
4. pg_restore into a new database, then compare its row counts with the manifest.
5. Swap by renaming: the old database is kept as `<db>_before_<stamp>` (a rollback is a rename
   away; drop it when satisfied), the new one takes the name.
6. `make restore` then runs the migrations to head and `make db-init` (extensions, grants), and
   `pgstack-backup reopen` lets the app role in again.
Any failure before the swap drops the new database and lets the app back into the old one.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql

from pgstack_backup import db, log, verify
from pgstack_backup.dump import ToolFailed, run_tool
from pgstack_backup.runner import backup_locked, locked
from pgstack_backup.settings import Settings
from pgstack_backup.store import DUMP_FILE, Backup, Store

APP_ROLE = "app"
READ_ROLE = "app_backup"


class RestoreRefused(RuntimeError):
    """The backup is not fit to restore; nothing was changed."""


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def lock_out_app(conn: psycopg.Connection, database: str) -> int:
    conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
        _ident(database), _ident(APP_ROLE)))  # fmt: skip
    ended = conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = %s AND usename = %s",
        (database, APP_ROLE),
    ).fetchone()[0]  # type: ignore[index]
    log.event("maintenance", status="app_locked_out", database=database, sessions_ended=ended)
    return int(ended)


def reopen(settings: Settings) -> None:
    with db.connect(settings, dbname="postgres", admin=True) as conn:
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            _ident(settings.database), _ident(APP_ROLE)))  # fmt: skip
    log.event("maintenance", status="app_reopened", database=settings.database)


def _restore_into(settings: Settings, backup: Backup, target: str) -> dict[str, int]:
    with db.connect(settings, dbname=target, admin=True) as conn:
        # As in production: the owner role owns the public schema (db-init does the same).
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(_ident(settings.admin_user)))
    list_path = f"/tmp/{target}.list"  # noqa: S108 -- the container's private tmpfs
    verify.filtered_list(backup, list_path)
    run_tool(
        ["pg_restore", "--no-owner", "--exit-on-error", "--single-transaction",
         f"--use-list={list_path}", "--no-password",
         f"--dbname={settings.conninfo(dbname=target, admin=True)}", str(backup.path / DUMP_FILE)],
        interval=settings.progress_interval_s, label="restore",
    )  # fmt: skip
    with db.connect(settings, dbname=target, admin=True) as conn:
        restored = db.row_counts(conn)
    expected = (backup.manifest or {}).get("tables", {})
    if restored != expected:
        raise RuntimeError(
            f"restored row counts differ from the manifest: {restored} != {expected}"
        )
    return restored


def _swap(conn: psycopg.Connection, live: str, new: str, old: str) -> None:
    """Rename live -> old and new -> live; retried while sessions linger on `live`."""
    deadline = time.monotonic() + 30
    while True:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (live,),
        )
        try:
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(_ident(live), _ident(old))
            )
            break
        except psycopg.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(_ident(new), _ident(live)))


def restore(settings: Settings, name: str) -> dict[str, Any]:
    store = Store(settings.backup_dir)
    backup = store.resolve(name)
    problems = backup.checksum_problems()
    if problems:
        raise RestoreRefused(f"backup {backup.name} fails its checksums: {'; '.join(problems)}")
    try:
        verify.restore_list(backup)
    except verify.VerificationFailed as exc:
        raise RestoreRefused(f"backup {backup.name}: {exc}") from exc
    manifest = backup.manifest or {}
    if manifest.get("database") != settings.database:
        raise RestoreRefused(f"backup {backup.name} is of {manifest.get('database')!r}")
    started = time.monotonic()
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    live, new, old = (
        settings.database,
        f"{settings.database}_restoring",
        f"{settings.database}_before_{stamp}",
    )
    with locked(store), db.connect(settings, dbname="postgres", admin=True) as conn:
        lock_out_app(conn, live)
        swapped = False
        try:
            safety, _ = backup_locked(settings, store, label="pre-restore", test_restore=False)
            db.drop_database(conn, new)
            db.create_database(conn, new, owner=settings.admin_user)
            log.event("restore_started", backup=backup.name, into=new)
            try:
                restored = _restore_into(settings, backup, new)
            except ToolFailed as exc:
                raise RuntimeError(f"pg_restore failed: {exc}") from exc
            _swap(conn, live, new, old)
            swapped = True
            conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                _ident(live), _ident(settings.admin_user)))  # fmt: skip
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                _ident(live), _ident(READ_ROLE)))  # fmt: skip
        finally:
            if not swapped:
                db.drop_database(conn, new)
                conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    _ident(live), _ident(APP_ROLE)))  # fmt: skip
                log.event("maintenance", status="app_reopened", database=live, restored=False)
    summary = {
        "event": "restore", "status": "ok", "backup": backup.name,
        "backup_taken_at": manifest.get("finished_at"),
        "alembic_revision": manifest.get("alembic_revision"),
        "rows": sum(restored.values()), "tables": len(restored),
        "safety_backup": safety.name, "previous_database": old,
        "duration_s": round(time.monotonic() - started, 3),
        "next": "migrations to head, db-init, then `pgstack-backup reopen` lets the API in",
    }  # fmt: skip
    log.event(**summary)  # type: ignore[arg-type]
    return summary
