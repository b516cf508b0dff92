"""The backup service's health and settings (pure logic; the image uses Debian's croniter)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pgstack_backup.settings import Settings, SettingsError
from pgstack_backup.state import health, schedule_interval

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_a_daily_schedule_has_a_one_day_interval_and_irregular_ones_their_longest_gap() -> None:
    assert schedule_interval("0 3 * * *", ZoneInfo("Europe/Berlin"), NOW) == DAY
    # Weekdays only: the weekend gap (Friday 03:00 -> Monday 03:00) is the one that counts.
    assert schedule_interval("0 3 * * 1-5", ZoneInfo("UTC"), NOW) == 3 * DAY


def test_healthy_while_the_last_verified_backup_is_within_one_and_a_half_intervals() -> None:
    state = {"since": _iso(NOW - 10 * DAY), "last_success": {"name": "b", "at": _iso(NOW - DAY)}}
    assert health(state, DAY, NOW)[0] is True
    assert health(state, DAY, NOW + timedelta(hours=11))[0] is True
    ok, why = health(state, DAY, NOW + timedelta(hours=13))
    assert ok is False and "1.5 x" in why


def test_before_the_first_backup_the_service_start_is_the_reference() -> None:
    state = {"since": _iso(NOW)}
    assert health(state, DAY, NOW + timedelta(hours=35))[0] is True
    assert health(state, DAY, NOW + timedelta(hours=37))[0] is False
    assert health({}, DAY, NOW)[0] is False


def test_a_failed_run_is_unhealthy_until_the_next_success() -> None:
    state = {
        "since": _iso(NOW - 10 * DAY),
        "last_success": {"name": "b", "at": _iso(NOW - timedelta(hours=2))},
        "last_failure": {"at": _iso(NOW - timedelta(hours=1)), "error": "No space left on device"},
    }
    ok, why = health(state, DAY, NOW)
    assert ok is False and "No space left" in why
    state["last_success"] = {"name": "c", "at": _iso(NOW)}
    assert health(state, DAY, NOW)[0] is True


def test_a_run_that_fails_within_the_second_of_a_success_is_still_the_newer() -> None:
    """The runner records microseconds (seconds alone made a failure in the same second as the
    success before it equal to it: healthy, wrongly), and the times compare as times, so a record
    an older version wrote in whole seconds still orders right ("05.9" sorts before "05Z")."""
    state = {
        "last_success": {"name": "b", "at": "2026-11-27T12:00:05Z"},
        "last_failure": {"at": "2026-11-27T12:00:05.900000Z", "error": "No space left on device"},
    }
    assert health(state, DAY, NOW + timedelta(seconds=6))[0] is False
    state["last_success"] = {"name": "c", "at": "2026-11-27T12:00:06Z"}
    assert health(state, DAY, NOW + timedelta(seconds=7))[0] is True


def test_a_broken_wal_archive_is_unhealthy() -> None:
    state = {
        "last_success": {"name": "b", "at": _iso(NOW)},
        "archive_problem": {"at": _iso(NOW), "error": "WAL archiving is failing since ..."},
    }
    ok, why = health(state, DAY, NOW)
    assert ok is False and "point-in-time recovery" in why


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("BACKUP_SCHEDULE", "every night"),
        ("BACKUP_TZ", "Mars/Olympus"),
        ("BACKUP_KEEP_DAILY", "-1"),
        ("BACKUP_KEEP_WEEKLY", "four"),
        ("BACKUP_VERIFY_RESTORE", "perhaps"),
        ("BACKUP_COMPRESSION", "brotli"),
        ("BACKUP_WEBHOOK_URL", "ftp://example.test/hook"),
        ("BACKUP_OFFSITE_AGE_RECIPIENT", "not-a-key"),
    ],
)
def test_a_bad_setting_is_refused_with_its_name_and_value(key: str, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({key: value})
    assert key in str(error.value)


def test_the_defaults_are_the_documented_ones() -> None:
    settings = Settings.from_env({})
    assert (settings.schedule, str(settings.tz)) == ("0 3 * * *", "UTC")
    assert (settings.keep_daily, settings.keep_weekly, settings.keep_monthly) == (7, 4, 6)
    assert settings.verify_restore and settings.pitr and not settings.on_start
    assert "password" not in settings.conninfo()
