"""Point-in-time recovery of the whole cluster with pgBackRest, in steps that
services/backup/pitr-restore.sh orders (it stops and starts postgres; these run in containers):

  check     (the backup service, postgres up) parse the target, archive the current WAL
            (`pgbackrest check`), and refuse a target outside the recoverable window -- before
            anything is touched -- naming the window;
  restore   (a one-off container, postgres stopped, the data volume mounted read-write) make sure
            there is room, set the current cluster aside with one rename, `pgbackrest restore`
            the newest backup before the target with recovery settings; put the old cluster back
            if that fails;
  rollback  put the set-aside cluster back (replay failed, or the operator says so);
  finish    delete the set-aside cluster once the recovered one serves.

A marker file beside the cluster says which step is under way, so the postgres entrypoint never
starts (or initdb's over) a half-restored directory.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pgstack_backup import db, log, pgbackrest, tools
from pgstack_backup.settings import Settings

EXAMPLE = "'2026-11-27 10:15:00+00:00'"


class TargetRefused(ValueError):
    """The target time is malformed or outside the recoverable window; nothing was touched."""


def parse_target(text: str, tz: ZoneInfo) -> datetime:
    """ISO 8601 ('2026-11-27 10:15:00', '...+01:00', '...Z'); without an offset, BACKUP_TZ."""
    cleaned = text.strip()
    if not cleaned:
        raise TargetRefused(f"TARGET_TIME is empty; expected a time such as {EXAMPLE}")
    try:
        moment = datetime.fromisoformat(cleaned.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise TargetRefused(
            f"TARGET_TIME={text!r} is not a time ({exc}); expected e.g. {EXAMPLE}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def check(settings: Settings, target: datetime, *, refuse: bool = True) -> dict[str, Any]:
    """Refuse (TargetRefused) a target that cannot be reached; return the window otherwise.
    With `refuse` off (FORCE=1) only say what the window is."""
    now = log.now()
    tz = settings.tz
    if refuse and target > now:
        raise TargetRefused(
            f"TARGET_TIME {target.isoformat(sep=' ')} is in the future (it is now "
            f"{now.astimezone(tz).isoformat(sep=' ', timespec='seconds')}): recovery cannot "
            "replay what has not happened. Nothing was changed."
        )
    # Recovery stops at the first commit after the target; with none in the archive it runs off
    # the end of WAL and fails ("recovery ended before configured recovery target was reached").
    # A commit now -- after the target -- and then the archive of the current WAL make one sure.
    with db.connect(settings, "postgres") as conn:
        conn.execute("SELECT txid_current()")
    archiving = "current"
    try:
        pgbackrest.command(settings, "check", label="pgbackrest_check")
        upper = now
    except pgbackrest.StanzaMismatch:
        # The live cluster is not the repository's: a new machine recovering another's history.
        # Its window ends at the newest WAL the repository holds.
        archiving = "from another cluster (this one is not the repository's)"
        upper = None
    except tools.ToolFailed as exc:
        archiving = f"failing ({exc})"
        upper = None
    stanza = pgbackrest.info(settings)
    if upper is None:  # the newest WAL any repository holds
        times = [
            moment
            for repo in pgbackrest.repos(stanza)
            for moment in pgbackrest.archived_segments(settings, stanza, repo).values()
        ]
        upper = max(times) if times else now
    spans = pgbackrest.recoverable(settings, stanza, upper)
    described = pgbackrest.describe(spans, tz)
    if refuse and not any(start <= target <= end for start, end in spans):
        raise TargetRefused(
            f"TARGET_TIME {target.isoformat(sep=' ')} is outside the recoverable window: you can "
            f"restore to any time {described}. Nothing was changed."
            + ("" if archiving == "current" else f" (WAL archiving is {archiving})")
        )
    return {"target": target.isoformat(), "window": described, "archiving": archiving}


@dataclass(frozen=True, slots=True)
class Layout:
    """The data volume as a one-off container mounts it: the cluster and its set-aside copy."""

    pgdata: Path

    @property
    def root(self) -> Path:
        return self.pgdata.parent

    @property
    def previous(self) -> Path:
        return self.root / f"{self.pgdata.name}.previous"

    @property
    def marker(self) -> Path:
        return self.root / "RESTORE_IN_PROGRESS"

    def mark(self, step: str) -> None:
        tmp = self.marker.with_name(".RESTORE_IN_PROGRESS.tmp")
        tmp.write_text(step)
        tmp.replace(self.marker)


def restore(settings: Settings, target: datetime) -> dict[str, Any]:
    layout = Layout(settings.pgdata)
    if (layout.pgdata / "postmaster.pid").exists():
        raise RuntimeError(f"{layout.pgdata}/postmaster.pid exists: postgres must be stopped first")
    if layout.previous.exists():
        raise RuntimeError(
            f"{layout.previous} is left from an earlier recovery; settle it first with "
            "`make restore-rollback` (put it back) or delete it"
        )
    stanza = pgbackrest.info(settings)
    usable = [b for b in pgbackrest.backups(stanza) if not b.error and b.stopped <= target]
    if not usable:
        raise TargetRefused(f"no backup finished before {target.isoformat(sep=' ')}")
    # The local repository when it has one (fast), else the off-site one (a new machine).
    chosen = [b for b in usable if b.repo == min(b.repo for b in usable)][-1]
    _require_space(layout.root, chosen.size)
    timeline = _timeline_to_follow(layout.pgdata, pgbackrest.system_id(stanza))
    started = log.now()
    layout.mark("restoring")
    layout.pgdata.rename(layout.previous)
    log.event("pitr", step="set_aside", previous=str(layout.previous))
    try:
        layout.pgdata.mkdir(mode=0o700)
        pgbackrest.command(
            settings, "restore", f"--repo={chosen.repo}", f"--set={chosen.label}", "--type=time",
            f"--target-timeline={timeline}",
            f"--target={target.isoformat(sep=' ')}", "--target-action=promote",
            # No reads from a half-replayed database (pitr-restore.sh resets it after promotion).
            "--recovery-option=hot_standby=off", label="pgbackrest_restore",
            probe=lambda: {"bytes_done": tools.directory_bytes(layout.pgdata),
                           "bytes": chosen.size},
        )  # fmt: skip
    except BaseException as exc:
        log.event("pitr", step="restore_failed", error=f"{type(exc).__name__}: {exc}")
        rollback(settings)
        raise
    layout.mark("replaying")
    summary = {"event": "pitr", "step": "restored", "backup": chosen.label, "repo": chosen.repo,
               "timeline": timeline,
               "backup_finished_at": log.iso(chosen.stopped), "target": target.isoformat(),
               "bytes": tools.directory_bytes(layout.pgdata),
               "duration_s": round((log.now() - started).total_seconds(), 1)}  # fmt: skip
    log.event(**summary)  # type: ignore[arg-type]
    return summary


def _timeline_to_follow(pgdata: Path, repo_system_id: int | None) -> str:
    """The history to recover along: the live cluster's timeline. Not "latest": a recovery that
    was rolled back after promoting leaves its timeline in the archive, and "latest" would follow
    that abandoned branch. A cluster the repository does not know (a new machine) follows the
    backup's own timeline ("current")."""
    fields = pgbackrest.controldata(pgdata)
    system = fields.get("Database system identifier", "")
    timeline = fields.get("Latest checkpoint's TimeLineID", "")
    if timeline.isdigit() and system.isdigit() and int(system) == repo_system_id:
        return timeline
    return "current"


def _require_space(root: Path, need: int) -> None:
    """The recovered cluster is written beside the set-aside one: refuse early if it cannot fit."""
    stat = os.statvfs(root)
    free = stat.f_bavail * stat.f_frsize
    want = int(need * 1.1) + (256 << 20)
    if free < want:
        raise RuntimeError(
            f"not enough space on the data volume for a recovery beside the current cluster: "
            f"needs about {want / 2**30:.1f} GiB free, has {free / 2**30:.1f} GiB. Nothing was "
            "changed. Free space (or grow the volume), then run the restore again."
        )


def rollback(settings: Settings) -> dict[str, Any]:
    """Put the set-aside cluster back in place of whatever the recovery left."""
    layout = Layout(settings.pgdata)
    if not layout.previous.exists():
        layout.marker.unlink(missing_ok=True)
        return {"event": "pitr", "step": "rollback", "status": "nothing to put back"}
    if layout.pgdata.exists():
        failed = layout.root / f"{layout.pgdata.name}.failed"
        shutil.rmtree(failed, ignore_errors=True)
        layout.pgdata.rename(failed)
        shutil.rmtree(failed, ignore_errors=True)
    layout.previous.rename(layout.pgdata)
    layout.marker.unlink(missing_ok=True)
    summary = {"event": "pitr", "step": "rollback", "status": "previous cluster back in place"}
    log.event(**summary)
    return summary


def finish(settings: Settings) -> dict[str, Any]:
    """The recovered cluster serves: delete the set-aside one and the marker."""
    layout = Layout(settings.pgdata)
    if layout.previous.exists():
        shutil.rmtree(layout.previous)
    layout.marker.unlink(missing_ok=True)
    summary = {"event": "pitr", "step": "finished", "removed": str(layout.previous)}
    log.event(**summary)
    return summary
