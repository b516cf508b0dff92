"""GFS retention (services/backup/pgstack_backup/retention.py), property-tested on generated
timelines: what must hold whatever backups exist."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st
from pgstack_backup.retention import Candidate, Policy, to_delete

TZ = ZoneInfo("Europe/Berlin")
START = datetime(2025, 1, 1, tzinfo=UTC)

policies = st.builds(Policy, st.integers(0, 8), st.integers(0, 5), st.integers(0, 7))


@st.composite
def timelines(draw: st.DrawFn) -> list[Candidate]:
    offsets = draw(st.lists(st.integers(0, 400 * 24 * 60), min_size=0, max_size=60, unique=True))
    return [
        Candidate(f"b{i:03d}", START + timedelta(minutes=m), draw(st.booleans()))
        for i, m in enumerate(sorted(offsets))
    ]


def _newest_valid(timeline: list[Candidate]) -> Candidate | None:
    valid = [c for c in timeline if c.valid]
    return max(valid, key=lambda c: c.taken_at) if valid else None


@given(timelines(), policies)
def test_only_candidates_are_deleted_and_the_newest_valid_never(
    timeline: list[Candidate], policy: Policy
) -> None:
    doomed = to_delete(timeline, policy, TZ)
    assert doomed <= {c.name for c in timeline}
    newest = _newest_valid(timeline)
    if newest is not None:
        assert newest.name not in doomed
    else:
        assert doomed == set()  # nothing restorable: an operator must look first


@given(timelines(), policies)
def test_invalid_backups_never_count(timeline: list[Candidate], policy: Policy) -> None:
    """Which valid backups survive does not depend on the invalid ones at all."""
    only_valid = [c for c in timeline if c.valid]
    doomed = to_delete(timeline, policy, TZ)
    assert {c.name for c in only_valid} & doomed == to_delete(only_valid, policy, TZ)


@given(timelines(), policies)
def test_invalid_backups_go_only_once_a_newer_valid_one_exists(
    timeline: list[Candidate], policy: Policy
) -> None:
    doomed = to_delete(timeline, policy, TZ)
    newest = _newest_valid(timeline)
    for c in timeline:
        if not c.valid:
            assert (c.name in doomed) == (newest is not None and c.taken_at < newest.taken_at)


@given(timelines(), policies)
def test_each_recent_day_week_and_month_keeps_its_newest_valid_backup(
    timeline: list[Candidate], policy: Policy
) -> None:
    doomed = to_delete(timeline, policy, TZ)
    valid = sorted((c for c in timeline if c.valid), key=lambda c: c.taken_at, reverse=True)
    buckets = {
        policy.daily: lambda c: c.taken_at.astimezone(TZ).date(),
        policy.weekly: lambda c: c.taken_at.astimezone(TZ).isocalendar()[:2],
        policy.monthly: lambda c: (c.taken_at.astimezone(TZ).year, c.taken_at.astimezone(TZ).month),
    }
    for count, key in buckets.items():
        newest_per_bucket: dict[object, Candidate] = {}
        for c in valid:
            newest_per_bucket.setdefault(key(c), c)
        recent = sorted(newest_per_bucket.values(), key=lambda c: c.taken_at, reverse=True)
        for c in recent[:count]:
            assert c.name not in doomed


@given(timelines(), policies)
def test_kept_valid_backups_are_bounded_by_the_policy(
    timeline: list[Candidate], policy: Policy
) -> None:
    doomed = to_delete(timeline, policy, TZ)
    kept_valid = [c for c in timeline if c.valid and c.name not in doomed]
    assert len(kept_valid) <= policy.daily + policy.weekly + policy.monthly + 1


@settings(max_examples=200)
@given(timelines(), policies)
def test_retention_is_idempotent(timeline: list[Candidate], policy: Policy) -> None:
    """Applying it again to what it kept deletes nothing more (runs may repeat)."""
    doomed = to_delete(timeline, policy, TZ)
    kept = [c for c in timeline if c.name not in doomed]
    assert to_delete(kept, policy, TZ) == set()


def test_a_week_of_nightly_backups_with_the_default_policy_keeps_every_one() -> None:
    nightly = [Candidate(f"n{d}", START + timedelta(days=d, hours=3), True) for d in range(7)]
    assert to_delete(nightly, Policy(), TZ) == set()


def test_a_year_of_nightly_backups_keeps_seven_days_four_weeks_six_months() -> None:
    nightly = [Candidate(f"n{d:03d}", START + timedelta(days=d, hours=3), True) for d in range(365)]
    kept = {c.name for c in nightly} - to_delete(nightly, Policy(), TZ)
    # 7 dailies; the weeklies and monthlies overlap them partly: never more than 7 + 4 + 6.
    assert 7 <= len(kept) <= 17
    assert {f"n{d:03d}" for d in range(358, 365)} <= kept


@st.composite
def with_safety_copies(draw: st.DrawFn) -> tuple[list[Candidate], datetime]:
    """A timeline in which some backups are the safety dumps of restores, protected for 14 days,
    and a `now` somewhere along it."""
    timeline = draw(timelines())
    protected = draw(st.lists(st.booleans(), min_size=len(timeline), max_size=len(timeline)))
    now = START + timedelta(minutes=draw(st.integers(0, 420 * 24 * 60)))
    return [
        Candidate(c.name, c.taken_at, c.valid, c.taken_at + timedelta(days=14) if p else None)
        for c, p in zip(timeline, protected, strict=True)
    ], now


@given(with_safety_copies(), policies)
def test_a_safety_copy_is_never_deleted_while_protected_whatever_the_policy(
    case: tuple[list[Candidate], datetime], policy: Policy
) -> None:
    timeline, now = case
    doomed = to_delete(timeline, policy, TZ, now=now)
    for c in timeline:
        if c.protected_until is not None and c.protected_until > now:
            assert c.name not in doomed


@given(with_safety_copies(), policies)
def test_a_protected_copy_never_takes_the_place_of_a_scheduled_backup(
    case: tuple[list[Candidate], datetime], policy: Policy
) -> None:
    """What happens to the unprotected backups is what would happen without the safety copies."""
    timeline, now = case
    shielded = {c.name for c in timeline if c.protected_until and c.protected_until > now}
    rest = [c for c in timeline if c.name not in shielded]
    assert to_delete(timeline, policy, TZ, now=now) == to_delete(rest, policy, TZ, now=now)


def test_a_restores_safety_dump_survives_a_day_of_backups_and_goes_after_its_days() -> None:
    """The field failure: a pre-restore dump deleted by the next backup of the same day."""
    day = START + timedelta(days=30)
    scheduled = [Candidate(f"s{h:02d}", day + timedelta(hours=h), True) for h in (3, 20)]
    safety = Candidate(
        "pre-restore", day + timedelta(hours=10), True, day + timedelta(days=14, hours=10)
    )
    timeline = [*scheduled, safety]
    assert "pre-restore" not in to_delete(
        timeline, Policy(daily=1, weekly=0, monthly=0), TZ, now=day + timedelta(hours=21)
    )
    later = day + timedelta(days=15)
    assert "pre-restore" in to_delete(timeline, Policy(daily=1, weekly=0, monthly=0), TZ, now=later)
