"""Point-in-time recovery on a real stack (pgBackRest): exactly the rows committed before the
target; targets outside the recoverable window refused before anything is touched; a recovery
that fails after the cluster was set aside -- a target past the guard, a crash mid-replay --
puts the previous cluster back, serving, with nothing lost; retention keeps the WAL that kept
backups need. One stack, used in order: every test leaves it healthy for the next."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.backup.conftest import REPO, BackupStack, last_event

pytestmark = pytest.mark.chaos


@pytest.fixture(scope="module")
def pstack(backup_stack_factory: Callable[..., BackupStack]) -> Iterator[BackupStack]:
    # One full chain kept, so the retention test can watch an older one go.
    stack = backup_stack_factory("pitr", env={"BACKUP_REPO1_RETENTION_FULL": "1"})
    try:
        stack.up()
        assert stack.backup()["physical"]["repo1"]["type"] == "full"
        yield stack
    finally:
        stack.down()


def _insert(stack: BackupStack, marker: str, count: int) -> None:
    stack.psql(
        f"INSERT INTO users (email, name) SELECT '{marker}' || g || '-' || md5(random()::text) "
        f"|| '@x.test', '{marker}' FROM generate_series(1, {count}) g"
    )


def _restore(stack: BackupStack, target: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return stack.make("restore", f"TARGET_TIME={target}", "CONFIRM=1", *extra, timeout=600)


def _started_at(stack: BackupStack) -> str:
    container = stack.container("postgres")
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def _serving(stack: BackupStack) -> None:
    stack.wait_ready()
    with stack.http() as http:
        assert http.get("/api/products").status_code == 200


def _pre_pitr_dumps(stack: BackupStack) -> list[str]:
    return [n for n in stack.backups() if n.endswith("-pre-pitr")]


def test_restore_to_a_time_gives_exactly_the_rows_committed_before_it(pstack: BackupStack) -> None:
    _insert(pstack, "before", 7)
    time.sleep(1)
    target = pstack.psql("SELECT now()")
    time.sleep(1)
    _insert(pstack, "after", 5)

    restored = _restore(pstack, target)
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-3000:]
    assert (pstack.rows("name = 'before'"), pstack.rows("name = 'after'")) == (7, 0)
    assert pstack.psql("SELECT pg_is_in_recovery()") == "f"
    assert int(pstack.psql("SELECT timeline_id FROM pg_control_checkpoint()")) >= 2
    # Writable, and the recovery-only setting is gone from postgresql.auto.conf (it would stop a
    # future replica of this cluster from serving reads).
    _insert(pstack, "written-after", 1)
    assert pstack.psql("SELECT count(*) FROM pg_file_settings WHERE name = 'hot_standby'") == "0"
    _serving(pstack)
    assert "the API was unavailable for" in restored.stdout
    # Already at the code's head: the migration job was not started inside the outage.
    assert "migrations: the recovered database is at the code's head" in restored.stdout
    # The set-aside cluster and the marker are gone from the data volume.
    assert pstack.exec("postgres", "ls", "/var/lib/postgresql/data")[1].split() == ["pgdata"]
    # The safety dump of the state before the recovery -- with the later rows -- is still there
    # after the whole command, a backup on the new timeline included.
    safety = _pre_pitr_dumps(pstack)
    assert len(safety) == 1, pstack.backups()
    assert any(n.endswith("-post-pitr") for n in pstack.backups())
    listing = pstack.make("backup-list").stdout
    assert f"{safety[0]}" in listing and "safety copy kept until" in listing, listing
    assert pstack.backup_cli("health").returncode == 0


def test_a_target_after_the_last_commit_recovers_everything_up_to_it(pstack: BackupStack) -> None:
    """Recovery stops at the first commit after its target; when nothing was committed after
    it, the recovery must still find one (the check makes it) instead of running off the end of
    the archived WAL and failing."""
    _insert(pstack, "last-before-target", 2)
    time.sleep(1)
    target = pstack.psql("SELECT now()")  # and nothing is written after it
    restored = _restore(pstack, target)
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-3000:]
    assert pstack.rows("name = 'last-before-target'") == 2
    _serving(pstack)


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("2099-01-01 00:00:00+00", "is in the future"),
        ("2020-01-01 10:00:00+00", "you can restore to any time between"),
        ("2026-11-31 10:00", "is not a time"),
        ("yesterday at ten", "is not a time"),
    ],
    ids=["future", "before-the-oldest-backup", "no-such-day", "not-a-time"],
)
def test_a_target_outside_the_window_is_refused_before_anything_is_touched(
    pstack: BackupStack, target: str, says: str
) -> None:
    rows, started, safety = pstack.rows("true"), _started_at(pstack), _pre_pitr_dumps(pstack)
    refused = _restore(pstack, target)
    assert refused.returncode != 0
    assert says in last_event(refused.stdout, "refused")["error"]
    # Nothing touched: postgres never stopped, no safety dump was needed, same rows, serving.
    assert _started_at(pstack) == started
    assert _pre_pitr_dumps(pstack) == safety
    assert pstack.rows("true") == rows
    _serving(pstack)


def test_a_target_past_the_guard_fails_in_replay_and_the_previous_cluster_comes_back(
    pstack: BackupStack,
) -> None:
    _insert(pstack, "kept", 3)
    rows = pstack.rows("true")
    # FORCE=1 skips the window check: replay then ends before the (future) target.
    failed = _restore(pstack, "2099-01-01 00:00:00+00", "FORCE=1")
    assert failed.returncode != 0
    assert "previous cluster is back" in failed.stderr, failed.stderr[-2000:]
    assert "recovery ended before configured recovery target was reached" in failed.stderr
    assert pstack.rows("true") == rows and pstack.rows("name = 'kept'") == 3
    assert pstack.exec("postgres", "ls", "/var/lib/postgresql/data")[1].split() == ["pgdata"]
    _serving(pstack)
    pstack.wait_healthy("backup")


def test_a_crash_during_replay_puts_the_previous_cluster_back(pstack: BackupStack) -> None:
    # Enough WAL after the newest backup that replaying it takes a while.
    pstack.backup()
    pstack.psql("CREATE TABLE churn AS SELECT g AS id, md5(g::text) AS pad "
                "FROM generate_series(1, 1500000) g")  # fmt: skip
    for _ in range(2):
        pstack.psql("UPDATE churn SET pad = md5(pad)")
    target = pstack.psql("SELECT now()")
    _insert(pstack, "late", 4)
    rows = pstack.rows("true")
    env = pstack.env
    command = ["make", "--no-print-directory", "restore", f"TARGET_TIME={target}", "CONFIRM=1"]
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as restore:  # fmt: skip
        container = pstack.container("postgres")
        deadline = time.monotonic() + 300
        while b"restored log file" not in container.logs(since=int(time.time()) - 5):
            assert restore.poll() is None, restore.stdout.read() if restore.stdout else ""
            assert time.monotonic() < deadline, "replay never started"
            time.sleep(0.2)
            container.reload()
        # A real crash (SIGKILL from the host, not `docker kill`): docker restarts it.
        os.kill(int(container.attrs["State"]["Pid"]), signal.SIGKILL)
        output, _ = restore.communicate(timeout=600)
    assert restore.returncode != 0, output[-3000:]
    assert "postgres stopped during recovery" in output and "previous cluster is back" in output
    assert pstack.rows("true") == rows and pstack.rows("name = 'late'") == 4
    assert int(pstack.psql("SELECT count(*) FROM churn")) == 1500000
    _serving(pstack)
    pstack.psql("DROP TABLE churn")


def test_an_interrupted_recovery_is_rolled_back_by_hand_and_the_next_one_ignores_its_branch(
    pstack: BackupStack,
) -> None:
    """The command is killed once postgres has promoted (a closed terminal): the runbook's
    `make restore-rollback` puts the previous cluster back, and a later recovery follows the live
    cluster's history, not the abandoned branch the killed one left in the archive."""
    _insert(pstack, "kept-history", 3)
    time.sleep(1)
    target = pstack.psql("SELECT now()")
    command = ["make", "--no-print-directory", "restore", f"TARGET_TIME={target}", "CONFIRM=1"]
    restore = subprocess.Popen(
        command,
        cwd=REPO,
        env=pstack.env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    with restore:
        assert restore.stdout is not None
        for line in restore.stdout:
            if line.startswith("recovered and promoted"):
                os.killpg(restore.pid, signal.SIGKILL)
                break
        restore.wait(timeout=60)
    assert pstack.exec("postgres", "cat", "/var/lib/postgresql/data/RESTORE_IN_PROGRESS")[1] == (
        "replaying"
    )
    rolled = pstack.make("restore-rollback", timeout=300)
    assert rolled.returncode == 0, rolled.stdout[-2000:] + rolled.stderr[-2000:]
    assert pstack.exec("postgres", "ls", "/var/lib/postgresql/data")[1].split() == ["pgdata"]
    assert pstack.rows("name = 'kept-history'") == 3
    _serving(pstack)

    _insert(pstack, "after-rollback", 2)
    time.sleep(1)
    later = pstack.psql("SELECT now()")
    restored = _restore(pstack, later)
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-3000:]
    assert (pstack.rows("name = 'kept-history'"), pstack.rows("name = 'after-rollback'")) == (3, 2)
    _serving(pstack)


def test_retention_keeps_the_wal_of_the_kept_backups_and_recovery_from_them_works(
    pstack: BackupStack,
) -> None:
    # A second full backup; the next run's expire (one full chain kept) drops the older one.
    code, out = pstack.exec("backup", "pgbackrest", "--stanza=pgstack", "backup", "--type=full",
                            user="postgres")  # fmt: skip
    assert code == 0, out
    pstack.backup()
    fulls = [b for b in pstack.physical() if b["type"] == "full"]
    assert len(fulls) == 1, [b["label"] for b in pstack.physical()]
    code, out = pstack.exec("backup", "pgbackrest", "--stanza=pgstack", "verify", user="postgres")
    assert code == 0, out

    _insert(pstack, "after-expire", 2)
    time.sleep(1)
    target = pstack.psql("SELECT now()")
    _insert(pstack, "too-late", 2)
    restored = _restore(pstack, target)
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-3000:]
    assert (pstack.rows("name = 'after-expire'"), pstack.rows("name = 'too-late'")) == (2, 0)
    # And a time before the kept backup is now outside the window, said so with its bounds.
    refused = _restore(pstack, "2026-01-01 00:00:00+00")
    assert "you can restore to any time between" in last_event(refused.stdout, "refused")["error"]
