"""Is point-in-time recovery possible right now? WAL archiving must work (pg_stat_archiver; the
reason for a failure is in pgBackRest's async spool, on the socket's shared volume), and no WAL
may be missing from the archive since the newest backup (pgBackRest drops WAL beyond
archive-push-queue-max rather than let a dead archive fill pg_wal)."""

from __future__ import annotations

import re
from pathlib import Path

from pgstack_backup import db, log, pgbackrest, state
from pgstack_backup.settings import Settings

SPOOL = Path("/var/run/postgresql/pgbackrest-spool/archive/pgstack/out")


def _failure_reason(spool: Path = SPOOL) -> str:
    """The newest error pgBackRest's async archiver left for PostgreSQL, in words."""
    errors = (
        sorted(spool.glob("*.error"), key=lambda p: p.stat().st_mtime) if spool.is_dir() else []
    )
    if not errors:
        return ""
    text = errors[-1].read_text(errors="replace").strip()
    code, _, message = text.partition("\n")
    if "MismatchError" in text or (code.strip().isdigit() and int(code) in {28, 44, 51}):
        return pgbackrest.mismatch_help(message)
    return re.sub(r"\s+", " ", message or text)[:500]


def _segment(wal: str | None) -> int | None:
    """The segment of a WAL file name (None for a .history, .backup or .partial name)."""
    if wal is None or not re.fullmatch(r"[0-9A-F]{24}", wal):
        return None
    return pgbackrest.segment_number(wal)


def problem(settings: Settings) -> str | None:
    """Why point-in-time recovery is broken now, or None."""
    with db.connect(settings, "postgres") as conn:
        row = conn.execute(
            "SELECT current_setting('archive_mode'), last_archived_time, last_archived_wal, "
            "last_failed_time, last_failed_wal, "
            "(SELECT system_identifier FROM pg_control_system()) FROM pg_stat_archiver"
        ).fetchone()
    mode, archived, archived_wal, failed, failed_wal, system_id = row  # type: ignore[misc]
    if mode == "off":
        return "archive_mode is off in postgresql.conf"
    stanza = pgbackrest.info(settings)
    expected = pgbackrest.system_id(stanza)
    if expected is not None and expected != int(system_id):
        return pgbackrest.mismatch_help(
            f"this cluster's system identifier is {system_id}, the repository's {expected}"
        )
    if failed is not None and (archived is None or failed > archived):
        reason = _failure_reason()
        why = f": {reason}" if reason else ""
        return f"WAL archiving is failing since {failed} (file {failed_wal}){why}"
    broken = pgbackrest.unreadable(stanza)
    if broken:
        return f"pgBackRest cannot read the backup repository: {broken}"
    existing = [b for b in pgbackrest.backups(stanza) if not b.error]
    if not existing:
        return None  # nothing to recover from yet; the first run's backup will tell
    segments = pgbackrest.archived_segments(settings, stanza)
    since = pgbackrest.segment_number(existing[-1].wal_start)
    # An empty listing is a listing that failed (an S3 hiccup), not evidence of a hole: every
    # backup's own first segment is archived before the backup ends.
    until = _segment(archived_wal) if segments else None
    missing = pgbackrest.gaps(segments, since, until)
    if missing:
        first, last = missing[0]
        return (
            f"WAL is missing from the archive ({last - first + 1} segment(s) after the newest "
            "backup: dropped while archiving failed, beyond WAL_ARCHIVE_QUEUE_MAX). Recovery "
            "cannot cross the gap: fix the archive, then take a backup (`make backup`)"
        )
    return None


def check_and_record(settings: Settings, state_path: Path) -> str | None:
    """Record (and announce once) a problem in the health state; clear it once it is over.
    Returns the problem. The service runs this every few minutes between backups."""
    try:
        found = problem(settings)
    except Exception as exc:  # postgres down: its own health check says so, not ours
        log.event("archive_check_skipped", error=str(exc))
        return None
    current = state.load(state_path)
    if found and not current.get("archive_problem"):
        alert = {"event": "archive_alert", "status": "failed", "error": found}
        log.event(**alert)
        log.notify(settings.webhook_url, alert)
    if found:
        state.save({**current, "archive_problem": {"at": log.iso(log.now()), "error": found}},
                   state_path)  # fmt: skip
    elif current.pop("archive_problem", None):
        log.event("archive_alert", status="ok")
        state.save(current, state_path)
    return found
