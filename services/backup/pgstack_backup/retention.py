"""GFS retention as a pure function: which backups to delete, given which exist.

Only valid backups (intact, and not failed a restore) count. Daily keeps the newest valid backup of
each of the N most recent days that have one; weekly and monthly the same for ISO weeks and
calendar months, in the configured time zone. The newest valid backup is always kept. An invalid
backup is never kept in place of a valid one; it is deleted once a newer valid backup exists (it
cannot be restored, and keeping it would only fool the reader of `make backup-list`).
A protected backup (the safety dump a restore takes first) is never deleted before its time,
whatever the rest of the policy says, valid or not.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, tzinfo


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    taken_at: datetime  # timezone-aware
    valid: bool
    protected_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    daily: int = 7
    weekly: int = 4
    monthly: int = 6


def _newest_per_bucket(
    valid: list[Candidate], count: int, bucket: Callable[[Candidate], Hashable]
) -> set[str]:
    """The newest candidate of each of the `count` most recent buckets (valid is newest first)."""
    kept: dict[Hashable, str] = {}
    for candidate in valid:
        key = bucket(candidate)
        if key not in kept:
            if len(kept) == count:
                break
            kept[key] = candidate.name
    return set(kept.values())


def to_delete(
    candidates: list[Candidate], policy: Policy, tz: tzinfo, now: datetime | None = None
) -> set[str]:
    """Names to delete. Never the newest valid backup, never a protected one (until `now` passes
    its protection), nothing that is not a candidate."""
    # A protected backup stands outside the policy while protected: kept, and never taking the
    # place of a scheduled one in a day, week or month; afterwards it is judged like the rest.
    protected = {
        c.name for c in candidates
        if c.protected_until is not None and (now is None or c.protected_until > now)
    }  # fmt: skip
    return _gfs([c for c in candidates if c.name not in protected], policy, tz)


def _gfs(candidates: list[Candidate], policy: Policy, tz: tzinfo) -> set[str]:
    items = sorted(candidates, key=lambda c: (c.taken_at, c.name), reverse=True)
    valid = [c for c in items if c.valid]
    if not valid:
        return set()  # nothing restorable: delete nothing, an operator must look

    def local(c: Candidate) -> datetime:
        return c.taken_at.astimezone(tz)

    keep = {valid[0].name}
    keep |= _newest_per_bucket(valid, policy.daily, lambda c: local(c).date())
    keep |= _newest_per_bucket(valid, policy.weekly, lambda c: local(c).isocalendar()[:2])
    keep |= _newest_per_bucket(valid, policy.monthly, lambda c: (local(c).year, local(c).month))
    newest_valid = valid[0].taken_at
    doomed = {c.name for c in valid if c.name not in keep}
    doomed |= {c.name for c in items if not c.valid and c.taken_at < newest_valid}
    return doomed
