"""Restoring a dump: one procedure, `restore_into`, used both by `make restore` against the live
cluster and by every verification against a throwaway instance (same role, options and contents:
"verified" means "restorable by make restore").

`restore_live` then swaps the restored database in without serving half a restore:
1. refuse a dump whose checksums or table of contents fail (nothing changed);
2. lock the API out: REVOKE CONNECT from the app role and end its sessions; PgBouncer's next
   server login fails, so the API answers 503 + Retry-After for the whole restore;
3. a safety dump of the current database (kept BACKUP_SAFETY_KEEP_DAYS whatever retention says);
4. restore_into a new database, row counts checked against the manifest;
5. swap by renaming; the old database stays as `<db>_before_<stamp>` (a rollback is a rename);
6. `make restore` then runs migrations and db-init, and `pgstack-backup reopen` lets the app in.
Any failure before the swap drops the new database and lets the app back into the old one.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgstack_backup import db, dumps, log, tools
from pgstack_backup.dumps import Dump
from pgstack_backup.lock import locked
from pgstack_backup.settings import Settings


class RestoreRefused(RuntimeError):
    """The dump is not fit to restore; nothing was changed."""


class RestoreFailed(RuntimeError):
    """The dump did not restore (its contents, not the machine): it is not restorable."""


def table_of_contents(dump: Dump) -> list[str]:
    """`pg_restore --list`: the archive's table of contents (fails on a damaged archive)."""
    result = subprocess.run(["pg_restore", "--list", str(dump.path / dumps.DUMP_FILE)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    if result.returncode != 0:
        raise RestoreRefused(f"pg_restore --list failed: {result.stderr.strip()[-500:]}")
    return result.stdout.splitlines()


def restorable_entries(toc: list[str]) -> list[str]:
    """The TOC minus what a non-superuser owner cannot restore and db-init re-creates anyway:
    extensions (and their comments), and privileges on objects the archive does not create --
    members of an extension (dumps of earlier versions carry a grant on pg_stat_statements)."""
    entries = [line for line in toc if line and not line.startswith(";")]
    created = [line for line in entries if " ACL " not in line]
    kept = []
    for line in entries:
        if re.search(r"\bEXTENSION\b", line):
            continue
        acl = re.match(r"^\d+; \d+ \d+ ACL (\S+) (\S+) (.+) \S+$", line)
        if acl and acl.group(1) != "-":
            schema, name = acl.group(1), acl.group(3)
            if not any(f" {schema} {name} " in other for other in created):
                continue
        kept.append(line)
    return kept


def restore_into(settings: Settings, dump: Dump, target: str, *, host: str | None = None
                 ) -> dict[str, Any]:  # fmt: skip
    """Create database `target` owned by the owner role on the server at `host` (the live
    socket by default), restore `dump` into it as that role, and check its row counts against
    the manifest. Raises RestoreFailed (the dump's fault) or ToolFailed/OSError (the machine's)."""
    timings: dict[str, float] = {}
    mark = time.monotonic()
    with db.connect(settings, "postgres", host=host) as conn:
        db.drop_database(conn, target)
        db.create_database(conn, target, settings.owner_role)
    with db.connect(settings, target, host=host) as conn:
        # As in production: the owner role owns the public schema (db-init does the same).
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(
            sql.Identifier(settings.owner_role)))  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".list", delete=False) as listing:
        listing.write("\n".join(restorable_entries(table_of_contents(dump))) + "\n")
    try:
        tools.run(
            ["pg_restore", f"--role={settings.owner_role}", "--no-owner", "--exit-on-error",
             "--single-transaction", f"--use-list={listing.name}", "--no-password",
             f"--dbname={settings.conninfo(target, host=host)}", str(dump.path / dumps.DUMP_FILE)],
            label="pg_restore", interval=settings.progress_interval_s,
        )  # fmt: skip
    except tools.ToolFailed as exc:
        if exc.environmental:
            raise
        raise RestoreFailed(f"pg_restore failed: {exc}") from exc
    finally:
        Path(listing.name).unlink(missing_ok=True)
    timings["pg_restore_s"] = time.monotonic() - mark
    mark = time.monotonic()
    with db.connect(settings, target, host=host) as conn:
        restored = db.row_counts(conn)
    timings["count_s"] = time.monotonic() - mark
    expected = (dump.manifest or {}).get("tables", {})
    differ = {t: {"manifest": expected.get(t), "restored": restored.get(t)}
              for t in sorted(set(expected) | set(restored))
              if expected.get(t) != restored.get(t)}  # fmt: skip
    if differ:
        raise RestoreFailed(f"row counts after the restore differ from the manifest: {differ}")
    return {"tables": len(restored), "rows": sum(restored.values()),
            **{k: round(v, 3) for k, v in timings.items()}}  # fmt: skip


def check_restorable(dump: Dump, settings: Settings) -> None:
    """Refuse (RestoreRefused) a dump that is damaged or of another database."""
    problems = dump.checksum_problems()
    if problems:
        raise RestoreRefused(f"backup {dump.name} fails its checksums: {'; '.join(problems)}")
    table_of_contents(dump)
    database = (dump.manifest or {}).get("database")
    if database != settings.database:
        raise RestoreRefused(f"backup {dump.name} is of database {database!r}, "
                             f"not {settings.database!r}")  # fmt: skip


def _grant(conn: psycopg.Connection, privileges: str, database: str, role: str) -> None:
    conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
        sql.SQL(privileges), sql.Identifier(database), sql.Identifier(role)))  # fmt: skip


def lock_out_app(settings: Settings, conn: psycopg.Connection) -> int:
    conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
        sql.Identifier(settings.database), sql.Identifier(settings.app_role)))  # fmt: skip
    ended = db.terminate_sessions(conn, settings.database, settings.app_role)
    log.event("maintenance", status="app_locked_out", database=settings.database,
              sessions_ended=ended)  # fmt: skip
    return ended


def reopen(settings: Settings) -> None:
    with db.connect(settings, "postgres") as conn:
        _grant(conn, "CONNECT", settings.database, settings.app_role)
    log.event("maintenance", status="app_reopened", database=settings.database)


def _swap(conn: psycopg.Connection, live: str, new: str, old: str) -> None:
    """Rename live -> old and new -> live; every session on `live` is ended first (superuser,
    psql sessions and autovacuum included), retried while new ones keep arriving."""
    deadline = time.monotonic() + 30
    while True:
        db.terminate_sessions(conn, live)
        try:
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(live), sql.Identifier(old)))  # fmt: skip
            break
        except psycopg.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
        sql.Identifier(new), sql.Identifier(live)))  # fmt: skip


def restore_live(settings: Settings, name: str) -> dict[str, Any]:
    store = dumps.Store(settings.backup_dir)
    dump = store.resolve(name)
    check_restorable(dump, settings)
    started = time.monotonic()
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    live = settings.database
    new, old = f"{live}_restoring", f"{live}_before_{stamp}"
    with locked(settings.backup_dir), db.connect(settings, "postgres") as conn:
        lock_out_app(settings, conn)
        swapped = False
        try:
            safety = dumps.take(settings, store, label="pre-restore")
            log.event("restore_started", backup=dump.name, into=new)
            restored = restore_into(settings, dump, new)
            _swap(conn, live, new, old)
            swapped = True
            _grant(conn, "CONNECT, TEMPORARY", live, settings.owner_role)
            _grant(conn, "CONNECT", live, settings.dump_role)
        finally:
            if not swapped:
                db.drop_database(conn, new)
                _grant(conn, "CONNECT", live, settings.app_role)
                log.event("maintenance", status="app_reopened", database=live, restored=False)
    manifest = dump.manifest or {}
    summary = {
        "event": "restore", "status": "ok", "backup": dump.name,
        "backup_taken_at": manifest.get("finished_at"),
        "alembic_revision": manifest.get("alembic_revision"), **restored,
        "safety_backup": safety.name, "previous_database": old,
        "duration_s": round(time.monotonic() - started, 3),
        "next": "migrations to head, db-init, then `pgstack-backup reopen` lets the API in",
    }  # fmt: skip
    log.event(**summary)
    return summary
