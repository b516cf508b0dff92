"""Run state for the health check: last verified success, last failure.

Written to the backup volume (survives restarts) and to a tmpfs copy (still written when the
volume is full, which is exactly when health must turn red). The healthcheck reads the newer.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from croniter import croniter

from pgstack_backup import log
from pgstack_backup.files import read_json, write_json_atomic

TMPFS_STATE = Path("/run/pgstack-backup/state.json")


def load(volume_path: Path, tmpfs_path: Path = TMPFS_STATE) -> dict[str, Any]:
    # Newest wins; on a tie the tmpfs copy, which is written even when the volume is full.
    copies = (read_json(volume_path), read_json(tmpfs_path))
    found = [(s.get("updated_at", ""), rank, s) for rank, s in enumerate(copies) if s]
    return max(found, key=lambda f: f[:2])[2] if found else {}


def save(state: dict[str, Any], volume_path: Path, tmpfs_path: Path = TMPFS_STATE) -> None:
    state = {**state, "updated_at": log.now().isoformat()}  # microseconds: runs can be close
    errors = []
    for path in (volume_path, tmpfs_path):
        try:
            write_json_atomic(path, state)
        except OSError as exc:
            errors.append(f"{path}: {exc}")
    if errors:
        log.event("state_not_saved", errors=errors)


def schedule_interval(schedule: str, tz: Any, start: datetime) -> timedelta:
    """The longest gap between consecutive runs over the next 20 (irregular crons included)."""
    it = croniter(schedule, start.astimezone(tz))
    times: list[datetime] = [it.get_next(datetime) for _ in range(21)]
    return max(b - a for a, b in pairwise(times))


def health(state: dict[str, Any], interval: timedelta, at: datetime) -> tuple[bool, str]:
    """Healthy when the last run did not fail and the last verified success (or, before the
    first one, the service's first start) is at most 1.5 schedule intervals old."""
    if state.get("archive_problem"):
        return False, f"point-in-time recovery is broken: {state['archive_problem']['error']}"
    success = state.get("last_success") or {}
    failure = state.get("last_failure") or {}
    if failure and (not success or log.parse(failure["at"]) > log.parse(success["at"])):
        return False, f"the last run failed at {failure['at']}: {failure.get('error', '?')}"
    reference = success.get("at") or state.get("since")
    if not reference:
        return False, "no state yet: the service has not started"
    age = at - datetime.fromisoformat(reference.replace("Z", "+00:00"))
    limit = interval * 1.5
    if age > limit:
        what = "last verified backup" if success else "service start, and no backup since,"
        return False, f"{what} {age} ago, more than 1.5 x the schedule interval ({limit})"
    return True, f"last verified backup {success.get('name', 'none yet')}, {age} ago"
