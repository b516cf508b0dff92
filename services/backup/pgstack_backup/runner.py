"""One backup run, the same code path for the schedule and `make backup`, under the lock:

1. physical: a pgBackRest backup (full every BACKUP_FULL_EVERY_DAYS, else block-incremental),
   then pgBackRest's retention (expire: never a WAL file a kept backup needs), and every
   BACKUP_REPO_VERIFY_EVERY_DAYS a `pgbackrest verify` of the whole repository;
2. logical: a pg_dump, verified by a real restore in a throwaway instance, then GFS retention of
   dumps (only after a verified success; safety dumps protected) and the off-site copy.

Both halves run even when the other failed (a dead off-site disk must not cost the dump); the
run fails if either did. Health state, one summary line, the webhook.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from pgstack_backup import dumps, files, log, offsite, pgbackrest, state, verify
from pgstack_backup.lock import Busy, locked
from pgstack_backup.retention import Candidate, Policy, to_delete
from pgstack_backup.settings import Settings


class RunFailed(RuntimeError):
    """At least one half of the run failed; the summary says which and why."""


def apply_retention(settings: Settings, store: dumps.Store) -> list[str]:
    existing = store.all()
    keep_days = settings.safety_keep_days
    candidates = [Candidate(d.name, d.taken_at, d.restorable(), d.protected_until(keep_days))
                  for d in existing]  # fmt: skip
    policy = Policy(settings.keep_daily, settings.keep_weekly, settings.keep_monthly)
    doomed = to_delete(candidates, policy, settings.tz, now=log.now())
    for dump in existing:
        if dump.name in doomed:
            files.remove_dir(dump.path)
    if doomed:
        log.event("retention", deleted=sorted(doomed), kept=len(existing) - len(doomed))
    return sorted(doomed)


def physical(settings: Settings, label: str, *, retention: bool) -> dict[str, Any]:
    """pgBackRest backup (+ expire and, when due, verify, unless `retention` is off)."""
    pgbackrest.ensure_stanza(settings)
    stanza = pgbackrest.info(settings)
    result: dict[str, Any] = {}
    for repo in pgbackrest.repos(stanza):
        existing = [b for b in pgbackrest.backups(stanza) if b.repo == repo]
        kind = pgbackrest.choose_type(existing, log.now(),
                                      timedelta(days=settings.full_every_days))  # fmt: skip
        taken = pgbackrest.run_backup(settings, repo, kind, label or "scheduled")
        result[f"repo{repo}"] = {
            "label": taken.label, "type": taken.type, "size": taken.size,
            "repo_size": taken.repo_size,
            "duration_s": (taken.stopped - taken.started).total_seconds(),
        }  # fmt: skip
    if retention:
        pgbackrest.command(settings, "expire", label="pgbackrest_expire")
        result["verify"] = _verify_repo_when_due(settings)
    log.event("physical_backup", **result)
    return result


def _verify_repo_when_due(settings: Settings) -> str:
    store = dumps.Store(settings.backup_dir)
    current = state.load(store.state_path)
    last = current.get("repo_verified_at")
    due = timedelta(days=settings.repo_verify_every_days)
    if last and log.now() - log.parse(last) < due:
        return f"not due (last {last})"
    pgbackrest.command(settings, "verify", label="pgbackrest_verify", progress=False)
    state.save({**state.load(store.state_path), "repo_verified_at": log.iso(log.now())},
               store.state_path)  # fmt: skip
    return "ok"


def logical(settings: Settings, store: dumps.Store, label: str, *, retention: bool,
            test_restore: bool | None = None) -> dict[str, Any]:  # fmt: skip
    """pg_dump, verified; then (retention) GFS retention and the off-site copy."""
    for stale in files.remove_partials(store.dumps):
        log.event("partial_removed", path=stale)
    dump = dumps.take(settings, store, label)
    report = verify.verify(dump, settings,
                           test_restore=settings.verify_restore if test_restore is None
                           else test_restore)  # fmt: skip
    log.event("verified", backup=dump.name, **report)
    result: dict[str, Any] = {"backup": dump.name, "size": (dump.manifest or {}).get("size"),
                              "rows": sum((dump.manifest or {}).get("tables", {}).values()),
                              "alembic_revision": (dump.manifest or {}).get("alembic_revision"),
                              "verified": report}  # fmt: skip
    if retention:
        result["deleted"] = apply_retention(settings, store)
        result["offsite"] = offsite.sync(settings, store)
    return result


def run(settings: Settings, label: str = "", *, retention: bool = True) -> dict[str, Any]:
    """A complete run; raises RunFailed (or Busy) after recording the outcome. A run with
    `retention` off (the safety backup of a restore) deletes nothing anywhere."""
    store = dumps.Store(settings.backup_dir)
    started = time.monotonic()
    summary: dict[str, Any] = {"event": "backup", "label": label or "scheduled"}
    errors: dict[str, str] = {}
    try:
        with locked(settings.backup_dir):
            if settings.pitr:
                try:
                    summary["physical"] = physical(settings, label, retention=retention)
                except Exception as exc:
                    errors["physical"] = f"{type(exc).__name__}: {exc}"
            try:
                summary.update(logical(settings, store, label, retention=retention))
            except Exception as exc:
                errors["logical"] = f"{type(exc).__name__}: {exc}"
    except Busy:
        log.event("backup_skipped", reason="another run holds the lock")
        raise
    summary["duration_s"] = round(time.monotonic() - started, 3)
    current = state.load(store.state_path)
    if errors:
        failure = {
            # Microseconds: a run that fails within a second of a success must still be the
            # newer of the two for health.
            "at": log.iso(log.now(), "microseconds"),
            "error": "; ".join(f"{k}: {v}" for k, v in errors.items()),
        }
        state.save({**current, "last_failure": failure}, store.state_path)
        summary.update(status="failed", **failure)
        log.event(**summary)
        log.notify(settings.webhook_url, summary)
        raise RunFailed(failure["error"])
    success = {"name": summary["backup"], "at": log.iso(log.now(), "microseconds"),
               "size": summary.get("size"),
               "duration_s": summary["duration_s"]}  # fmt: skip
    # This run checked the archive too (the backup waits for its WAL): an older alert is over.
    current = {k: v for k, v in state.load(store.state_path).items() if k != "archive_problem"}
    state.save({**current, "last_success": success}, store.state_path)
    summary["status"] = "ok"
    log.event(**summary)
    log.notify(settings.webhook_url, summary)
    return summary
