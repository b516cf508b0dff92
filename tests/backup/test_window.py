"""The point-in-time window and the target parsing (pure logic of services/backup's pgbackrest
and pitr modules): what a recovery can reach, from which backups, across which WAL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pgstack_backup.pgbackrest import (
    Backup,
    choose_type,
    gaps,
    segment_number,
    unreadable,
    window,
)
from pgstack_backup.pitr import TargetRefused, parse_target

T0 = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def _wal(segno: int, timeline: int = 1) -> str:
    return f"{timeline:08X}{segno // 256:08X}{segno % 256:08X}"


def _backup(label: str, stop: datetime, first: int, last: int, kind: str = "full") -> Backup:
    return Backup(label=label, type=kind, started=stop - MIN, stopped=stop, size=1, repo_size=1,
                  wal_start=_wal(first), wal_stop=_wal(last), db_id=1, repo=1, annotation={},
                  error=False)  # fmt: skip


def _segments(numbers: range | list[int]) -> dict[int, datetime]:
    return {n: T0 + n * MIN for n in numbers}


def test_segment_numbers_follow_the_log_across_timelines_and_log_files() -> None:
    assert segment_number("000000010000000000000005") == 5
    assert segment_number("000000020000000000000005") == 5
    assert (
        segment_number("0000000100000001000000FF") - segment_number("000000010000000000000000")
        == 511
    )


def test_the_window_runs_from_the_oldest_backup_to_now_when_the_archive_is_whole() -> None:
    backups = [_backup("a", T0 + 2 * MIN, 2, 2), _backup("b", T0 + 10 * MIN, 10, 10, "incr")]
    now = T0 + 60 * MIN
    assert window(backups, _segments(range(1, 31)), now) == [(T0 + 2 * MIN, now)]


def test_a_gap_in_the_archive_ends_the_reach_of_the_backups_before_it() -> None:
    backups = [_backup("a", T0 + 2 * MIN, 2, 2), _backup("b", T0 + 20 * MIN, 20, 20, "incr")]
    segments = _segments([*range(1, 8), *range(12, 31)])  # 8..11 dropped
    now = T0 + 60 * MIN
    assert window(backups, segments, now) == [(T0 + 2 * MIN, T0 + 7 * MIN), (T0 + 20 * MIN, now)]
    assert gaps(segments, 2) == [(8, 11)]
    assert gaps(segments, 12) == []


def test_wal_dropped_after_the_newest_archived_segment_is_a_gap_up_to_what_postgres_was_told(
) -> None:  # fmt: skip
    segments = _segments(range(1, 8))  # 8..11 dropped and answered "archived"; nothing after
    assert gaps(segments, 2) == []
    assert gaps(segments, 2, until=11) == [(8, 11)]
    assert gaps(segments, 2, until=7) == gaps(segments, 2, until=None) == []
    assert gaps({}, 2, until=3) == [(2, 3)]  # not even the backup's own segment is there


def test_an_unreadable_repository_is_named_not_taken_for_an_empty_one() -> None:
    # `pgbackrest info --output=json` (2.5x) with the archive directory at mode 000: no backup,
    # no archive, and the reason only in the repository's status.
    denied = "[PathOpenError] unable to list file info for path '/r': [13] Permission denied"
    stanza = {"archive": [], "backup": [], "name": "pgstack",
              "repo": [{"key": 1, "status": {"code": 99, "message": denied}}],
              "status": {"code": 99, "message": "other"}}  # fmt: skip
    assert unreadable(stanza) == f"repo1: {denied}"
    empty = {"repo": [{"key": 1, "status": {"code": 2, "message": "no valid backups"}}]}
    assert unreadable(empty) is None
    assert unreadable({}) is None


def test_a_backup_whose_own_wal_is_missing_reaches_nothing() -> None:
    assert window([_backup("a", T0 + 5 * MIN, 4, 6)], _segments([4, 6, 7]), T0 + 9 * MIN) == []


def test_no_backup_no_window() -> None:
    assert window([], _segments(range(1, 5)), T0) == []


def test_a_full_backup_is_taken_when_none_is_recent_enough() -> None:
    week = timedelta(days=7)
    assert choose_type([], T0, week) == "full"
    recent = [_backup("a", T0 - timedelta(days=2), 1, 1)]
    assert choose_type(recent, T0, week) == "incr"
    assert choose_type(recent, T0 + week, week) == "full"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27 10:15:00+00:00", datetime(2026, 11, 27, 10, 15, tzinfo=UTC)),
        ("2026-11-27T10:15:00Z", datetime(2026, 11, 27, 10, 15, tzinfo=UTC)),
        (" 2026-11-27 11:15 ", datetime(2026, 11, 27, 10, 15, tzinfo=UTC)),  # BACKUP_TZ (Berlin)
        ("2026-11-27 10:15:00.123456+00", datetime(2026, 11, 27, 10, 15, 0, 123456, tzinfo=UTC)),
    ],
)
def test_targets_parse_in_the_operators_time_zone_unless_they_carry_an_offset(
    text: str, expected: datetime
) -> None:
    assert parse_target(text, ZoneInfo("Europe/Berlin")) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2026-11-31 10:00", "27/11/2026 10:00",
                                  "2026-11-27 25:00", "10:15"])  # fmt: skip
def test_a_malformed_target_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(TargetRefused, match="2026-11-27 10:15:00"):
        parse_target(text, ZoneInfo("UTC"))
