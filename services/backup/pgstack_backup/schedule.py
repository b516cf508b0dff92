"""The long-running service: run at each cron time of BACKUP_SCHEDULE in BACKUP_TZ.

croniter (Debian's python3-croniter) computes the times; this loop only sleeps until the next one.
A run that is still going at the next time makes that time be skipped (the lock), never doubled.
"""

from __future__ import annotations

import signal
import threading
from datetime import datetime
from types import FrameType

from croniter import croniter

from pgstack_backup import archive, db, lock, log, pgbackrest, runner, state
from pgstack_backup.dumps import Store
from pgstack_backup.settings import Settings

_stop = threading.Event()
ARCHIVE_CHECK_S = 300


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    log.event("stopping", signal=signal.Signals(signum).name)
    _stop.set()


def serve(settings: Settings) -> int:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    store = Store(settings.backup_dir)
    store.ensure()
    versions = db.check_versions(settings)  # a mismatch ends the service, loudly
    if settings.pitr:
        _ensure_stanza(settings, store)
    current = state.load(store.state_path)
    if not current.get("since"):
        state.save({**current, "since": log.iso(log.now())}, store.state_path)
    else:
        state.save(current, store.state_path)  # refresh the tmpfs copy after a restart
    interval = state.schedule_interval(settings.schedule, settings.tz, log.now())
    log.event("serve", schedule=settings.schedule, tz=str(settings.tz),
              interval_s=interval.total_seconds(), **versions)  # fmt: skip
    if settings.on_start:
        _run_guarded(settings)
    times = croniter(settings.schedule, log.now().astimezone(settings.tz))
    while not _stop.is_set():
        due = times.get_next(datetime)
        log.event("next_run", at=log.iso(due))
        # Between runs, watch WAL archiving: a broken archive must not wait a day to be noticed.
        while (remaining := (due - log.now()).total_seconds()) > 0:
            if _stop.wait(min(remaining, ARCHIVE_CHECK_S)):
                return 0
            if settings.pitr and (due - log.now()).total_seconds() > 0:
                archive.check_and_record(settings, store.state_path)
        _run_guarded(settings)
        # A run longer than the interval: skip the times already past rather than run late twice.
        times = croniter(settings.schedule, log.now().astimezone(settings.tz))
    return 0


def _ensure_stanza(settings: Settings, store: Store) -> None:
    """pgBackRest's stanza before the first WAL is pushed; a mismatch is recorded, not fatal:
    the dumps go on, health says what is wrong and how to settle it."""
    try:
        pgbackrest.ensure_stanza(settings)
    except Exception as exc:
        log.event("stanza", status="failed", error=str(exc))
        state.save({**state.load(store.state_path),
                    "archive_problem": {"at": log.iso(log.now()), "error": str(exc)}},
                   store.state_path)  # fmt: skip


def _run_guarded(settings: Settings) -> None:
    try:
        runner.run(settings)
    except lock.Busy:
        return  # logged by runner.run; the running one covers this time
    except Exception:  # recorded by runner.run (health, log, webhook); keep serving
        return
