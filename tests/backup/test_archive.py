"""WAL archiving with pgBackRest on a real stack, when things go wrong: a dead archive never
fills pg_wal (WAL beyond the queue limit is dropped, PostgreSQL stays writable) and the gap it
leaves is reported until a backup after it; a re-initialised cluster can never mix its WAL with
the old cluster's archive, and the way out is one documented command."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.backup.conftest import BackupStack, last_event

pytestmark = pytest.mark.chaos

ARCHIVE = "/var/lib/pgstack-backup/pgbackrest/archive/pgstack"


@pytest.fixture(scope="module")
def astack(backup_stack_factory: Callable[..., BackupStack]) -> Iterator[BackupStack]:
    # Three 16 MB segments may wait for a failing archive; more are dropped.
    stack = backup_stack_factory(
        "archive", env={"WAL_ARCHIVE_QUEUE_MAX": str(3 * 16 * 1024 * 1024)}
    )
    try:
        stack.up()
        stack.backup()
        yield stack
    finally:
        stack.down()


def _switch_wal(stack: BackupStack, times: int) -> None:
    for _ in range(times):  # each switch closes a segment and wakes the archiver
        stack.psql("SELECT txid_current()")
        stack.psql("SELECT pg_switch_wal()")
        time.sleep(0.5)


def _wait(
    predicate: Callable[[], bool], timeout: float, what: str,
    detail: Callable[[], str] = lambda: "",
) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, (
            f"timed out after {timeout} s waiting for {what}\n{detail()}"
        )
        time.sleep(1)


def _postgres_log(stack: BackupStack) -> str:
    """The end of PostgreSQL's log (the archiver's and pgBackRest's lines), for a failure."""
    return str(stack.container("postgres").logs(tail=40).decode(errors="replace"))


def test_a_dead_archive_drops_wal_beyond_the_limit_and_the_gap_is_reported_until_a_backup(
    astack: BackupStack,
) -> None:
    code, out = astack.exec("postgres", "chmod", "000", f"{ARCHIVE}/17-1")  # the archive breaks
    assert code == 0, out
    try:
        _switch_wal(astack, 10)
        # pg_wal stays bounded: what waits beyond the limit is dropped, and PostgreSQL writes on.
        status = "/var/lib/postgresql/data/pgdata/pg_wal/archive_status"
        _wait(lambda: "dropped WAL file" in astack.container("postgres").logs().decode(), 60,
              "pgBackRest to drop WAL beyond the queue limit",
              lambda: _postgres_log(astack))  # fmt: skip

        def waiting() -> int:
            out = astack.exec("postgres", "sh", "-c", f"ls {status} | grep -c ready")[1]
            return int(out.strip() or 0)

        # The drop is logged while the archiver is still walking the dropped segments one
        # archive_command call at a time (a CI run counted 5 just then), so the bound is what
        # pg_wal settles at, not a snapshot of the walk. Without the drop, ten would stay ready.
        _wait(lambda: waiting() <= 4, 30, "at most the queue limit (3 segments + 1) left ready",
              lambda: f"{waiting()} ready\n{_postgres_log(astack)}")  # fmt: skip
        astack.psql("CREATE TABLE still_writable AS SELECT 1 AS x")
        # pgBackRest answers "archived" for what it drops, so pg_stat_archiver may show a
        # success newer than the last failure, and `pgbackrest info` lists no backup at all
        # while the archive cannot be read: the check must call neither of them working.
        dropped = astack.backup_cli("check-archive")
        assert dropped.returncode == 5, dropped.stdout
        # Why, in pgBackRest's words: from the repository it cannot read, or from the async
        # archiver's error file, which it clears each time it runs again (a CI run caught the
        # failure named without a reason for that moment).
        _wait(lambda: "Permission denied" in astack.backup_cli("check-archive").stdout, 60,
              "check-archive to say why the archive fails",
              lambda: astack.backup_cli("check-archive").stdout)  # fmt: skip
        # The next segment fails again, and the check says why, in the archiver's words.
        _switch_wal(astack, 1)

        def failure_named() -> bool:
            out = astack.backup_cli("check-archive").stdout
            return "WAL archiving is failing" in out and "Permission denied" in out

        _wait(failure_named, 60, "check-archive to name the archiver's failure",
              lambda: astack.backup_cli("check-archive").stdout)  # fmt: skip
        assert astack.backup_cli("check-archive").returncode == 5
        assert astack.backup_cli("health").returncode == 5
    finally:
        astack.exec("postgres", "chmod", "0750", f"{ARCHIVE}/17-1")
    _switch_wal(astack, 2)

    # Archiving works again, but the dropped WAL is a hole no recovery can cross.
    def gap_reported() -> bool:
        return "WAL is missing from the archive" in astack.backup_cli("check-archive").stdout

    _wait(gap_reported, 60, "the gap to be reported")
    assert astack.backup_cli("health").returncode == 5
    # A backup after the gap makes recovery possible again, and health says so.
    assert astack.backup()["status"] == "ok"
    assert astack.backup_cli("check-archive").returncode == 0
    assert astack.backup_cli("health").returncode == 0


def test_a_reinitialised_cluster_never_mixes_with_the_old_archive(astack: BackupStack) -> None:
    before = [b["label"] for b in astack.physical()]
    assert before
    # The database volume is lost and the stack starts over on an empty one (initdb).
    astack.compose("rm", "--stop", "--force", "postgres", "backup")
    astack.client.volumes.get(f"{astack.project}_pgdata").remove(force=True)
    astack.up("api")
    astack.compose("up", "--detach", "backup")  # it comes up unhealthy, and says why:
    astack.wait_healthy("postgres")
    _wait(lambda: "belongs to another database cluster" in astack.backup_cli("health").stdout,
          60, "health to name the mismatch")  # fmt: skip
    _switch_wal(astack, 2)

    def mismatch_reported() -> bool:
        return "belongs to another database cluster" in astack.backup_cli("check-archive").stdout

    _wait(mismatch_reported, 90, "the archive mismatch to be reported")
    assert "make backup-stanza-upgrade" in astack.backup_cli("check-archive").stdout
    failed = astack.backup_cli("run")
    assert failed.returncode == 1
    summary = last_event(failed.stdout, "backup")
    assert "belongs to another database cluster" in summary["error"]
    assert summary["backup"], "the dump is still taken when the physical backup cannot be"
    # The old cluster's backups are untouched.
    assert [b["label"] for b in astack.physical()][: len(before)] == before

    upgraded = astack.make("backup-stanza-upgrade")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert astack.backup()["status"] == "ok"
    code, out = astack.exec("backup", "ls", "/var/lib/pgstack-backup/pgbackrest/archive/pgstack")
    assert code == 0 and {"17-1", "17-2"} <= set(out.split()), out  # one history per cluster
    assert astack.backup_cli("check-archive").returncode == 0
    assert astack.backup_cli("health").returncode == 0
