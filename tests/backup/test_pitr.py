"""Point-in-time recovery on a real stack: WAL archived by postgres, base backups by the backup
service; `make restore TARGET_TIME=...` gives exactly the rows committed before the target. And
a failing archive never fills pg_wal: WAL beyond the queue limit is dropped and the backup
service turns unhealthy."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.backup.conftest import BackupStack, last_event

pytestmark = pytest.mark.chaos


def _rows(stack: BackupStack, marker: str) -> int:
    return int(stack.psql(f"SELECT count(*) FROM users WHERE name = '{marker}'"))


def test_restore_to_a_time_gives_exactly_the_rows_committed_before_it(
    backup_stack_factory: Callable[..., BackupStack],
) -> None:
    stack = backup_stack_factory("pitr")
    stack.up()
    assert stack.backup()["base_backup"]
    stack.psql("INSERT INTO users (email, name) SELECT 'before' || g || '@x.test', 'before' "
               "FROM generate_series(1, 7) AS g")  # fmt: skip
    time.sleep(1)
    target = stack.psql("SELECT now()")
    time.sleep(1)
    stack.psql("INSERT INTO users (email, name) SELECT 'after' || g || '@x.test', 'after' "
               "FROM generate_series(1, 5) AS g")  # fmt: skip
    assert (_rows(stack, "before"), _rows(stack, "after")) == (7, 5)

    restored = stack.make("restore", f"TARGET_TIME={target}", "CONFIRM=1", timeout=400)
    if restored.returncode != 0:
        logs = stack.compose("logs", "--no-color", "--tail=40", "api", "pgbouncer", check=False)
        raise AssertionError(f"{restored.stdout[-2000:]}{restored.stderr[-2000:]}\n{logs.stdout}")
    assert (_rows(stack, "before"), _rows(stack, "after")) == (7, 0)
    # Recovery promoted onto a new timeline, and the API serves the recovered data.
    assert stack.psql("SELECT pg_is_in_recovery()") == "f"
    assert int(stack.psql("SELECT timeline_id FROM pg_control_checkpoint()")) >= 2
    with stack.http() as http:
        assert http.get("/readyz").status_code == 200
        assert http.get("/api/products").status_code == 200
    # The safety backup of the state before the recovery still has the later rows.
    assert "pre-pitr" in restored.stdout and "post-pitr" in restored.stdout
    assert stack.backup_cli("health").returncode == 0


def test_a_failing_wal_archive_drops_wal_beyond_the_queue_limit_and_postgres_stays_up(
    backup_stack_factory: Callable[..., BackupStack],
) -> None:
    # Three 16 MB segments may wait; more are dropped (pgBackRest's archive-push-queue-max idea).
    stack = backup_stack_factory("walq", env={"WAL_ARCHIVE_QUEUE_MAX": str(3 * 16 * 1024 * 1024)})
    stack.up()
    stack.backup()
    archive = "/var/lib/pgstack-wal/wal"
    code, out = stack.exec("postgres", "chmod", "0550", archive)  # the archive breaks
    assert code == 0, out
    try:
        for _ in range(10):  # each switch closes a segment and wakes the archiver
            stack.psql("SELECT txid_current()")
            stack.psql("SELECT pg_switch_wal()")
            time.sleep(1)
        deadline = time.monotonic() + 60
        while stack.exec("postgres", "test", "-e", "/var/lib/pgstack-wal/WAL_DROPPED")[0] != 0:
            assert time.monotonic() < deadline, "no WAL was dropped within 60 s"
            time.sleep(1)
        status_dir = "/var/lib/postgresql/data/pg_wal/archive_status"
        waiting = stack.exec("postgres", "sh", "-c", f"ls {status_dir} | grep -c ready")[1]
        assert int(waiting.strip() or 0) <= 4, waiting
        assert stack.psql("SELECT 1") == "1"  # PostgreSQL is up and writable
        stack.psql("CREATE TABLE still_writable AS SELECT 1 AS x")

        failed = stack.backup_cli("run")
        assert failed.returncode == 1
        # Failing now, or dropped WAL earlier: either way no recovery across it is possible.
        assert (
            "point-in-time recovery is not possible" in last_event(failed.stdout, "backup")["error"]
        )
        assert stack.backup_cli("health").returncode == 5
    finally:
        stack.exec("postgres", "chmod", "0770", archive)
    # Archive repaired: the next backup's base backup makes recovery possible again.
    time.sleep(1.5)  # the drop marker must be older than the new base backup's start
    assert stack.backup()["status"] == "ok"
    assert stack.backup_cli("health").returncode == 0
