"""One backup run, the same code path for the schedule and `make backup`: lock, dump, verify,
retention (only after a verified success), off-site copy, state for the health check, webhook."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pgstack_backup import basebackup, dump, log, offsite, state, verify
from pgstack_backup.retention import Candidate, Policy, to_delete
from pgstack_backup.settings import Settings
from pgstack_backup.store import Backup, Store


class Busy(RuntimeError):
    """Another run (or a restore) holds the lock."""


@contextmanager
def locked(store: Store) -> Iterator[None]:
    """An exclusive flock on the backup volume: runs never overlap, across containers too."""
    store.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(store.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another backup or restore holds {store.lock_path}") from None
        yield
    finally:
        os.close(fd)


def apply_retention(settings: Settings, store: Store) -> list[str]:
    backups = store.backups()
    candidates = [Candidate(b.name, b.taken_at, b.is_valid()) for b in backups]
    policy = Policy(settings.keep_daily, settings.keep_weekly, settings.keep_monthly)
    doomed = to_delete(candidates, policy, settings.tz)
    for backup in backups:
        if backup.name in doomed:
            store.delete(backup)
    if doomed:
        log.event("retention", deleted=sorted(doomed), kept=len(backups) - len(doomed))
    return sorted(doomed)


def backup_locked(settings: Settings, store: Store, label: str = "",
                  test_restore: bool | None = None) -> tuple[Backup, dict[str, Any]]:  # fmt: skip
    """Dump and verify; the caller holds the lock. A failure leaves nothing that looks complete."""
    store.ensure()
    for stale in store.remove_partials():
        log.event("partial_removed", path=stale)
    try:
        backup = dump.take(settings, store, label)
    except BaseException:
        store.remove_partials()
        raise
    restore_check = settings.verify_restore if test_restore is None else test_restore
    report = verify.verify(backup, settings, test_restore=restore_check)
    log.event("verified", backup=backup.name, **report)
    return backup, report


def _check_archiving(settings: Settings) -> None:
    """After the base backup: point-in-time recovery also needs every WAL file since."""
    if not settings.pitr:
        return
    problem = basebackup.archiving_problem(settings, basebackup.BaseStore(settings.wal_dir))
    if problem:
        raise RuntimeError(f"point-in-time recovery is not possible: {problem}")


def run(settings: Settings, label: str = "") -> dict[str, Any]:
    """A complete run; raises after recording the failure (health, log, webhook)."""
    store = Store(settings.backup_dir)
    started = time.monotonic()
    current = state.load(store.state_path)
    try:
        with locked(store):
            backup, report = backup_locked(settings, store, label)
            deleted = apply_retention(settings, store)
            base = basebackup.take(settings, label).name if settings.pitr else None
            copied = offsite.sync(settings, store)
            _check_archiving(settings)
    except Busy:
        log.event("backup_skipped", reason="another run holds the lock")
        raise
    except Exception as exc:
        failure = {"at": log.iso(log.now()), "error": f"{type(exc).__name__}: {exc}"}
        state.save({**current, "last_failure": failure}, store.state_path)
        summary = {"event": "backup", "status": "failed", **failure,
                   "duration_s": round(time.monotonic() - started, 3)}  # fmt: skip
        log.event(**summary)  # type: ignore[arg-type]
        log.notify(settings.webhook_url, summary)
        raise
    manifest = backup.manifest or {}
    success = {"name": backup.name, "at": log.iso(log.now()), "size": manifest.get("size"),
               "duration_s": round(time.monotonic() - started, 3)}  # fmt: skip
    # This run checked WAL archiving too: an older archive alert is over.
    current = {k: v for k, v in state.load(store.state_path).items() if k != "archive_problem"}
    state.save({**current, "last_success": success}, store.state_path)
    summary = {
        "event": "backup", "status": "ok", "backup": backup.name, "size": manifest.get("size"),
        "rows": sum(manifest.get("tables", {}).values()),
        "alembic_revision": manifest.get("alembic_revision"), "verified": report,
        "deleted": deleted, "offsite": copied, "base_backup": base,
        "duration_s": success["duration_s"],
    }  # fmt: skip
    log.event(**summary)  # type: ignore[arg-type]
    log.notify(settings.webhook_url, summary)
    return summary
