"""Faults a backup must survive, each on a stack of its own: the backup container killed in the
middle of a dump, and a full backup volume."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.backup.conftest import BackupStack, events, last_event

DUMPS = "/var/lib/pgstack-backup/dumps"
pytestmark = pytest.mark.chaos


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def test_a_backup_killed_mid_dump_leaves_nothing_that_looks_complete_and_the_next_run_succeeds(
    backup_stack_factory: Callable[..., BackupStack],
) -> None:
    # zstd at level 19 makes pg_dump slow enough on ~100 MB to be caught in the middle.
    stack = backup_stack_factory("kill", env={"BACKUP_COMPRESSION": "zstd:19"})
    stack.up()
    first = stack.backup()["backup"]
    stack.psql("CREATE TABLE public.bulk AS SELECT g AS id, md5(g::text) || md5((-g)::text) AS pad "
               "FROM generate_series(1, 1000000) AS g")  # fmt: skip
    container = stack.container("backup")
    container.exec_run(["pgstack-backup", "run"], user="pgbackup", detach=True)

    def dumping() -> bool:
        code, out = stack.exec("backup", "sh", "-c", f"stat -c %s {DUMPS}/.partial-*/pgstack.dump")
        return code == 0 and int(out.split()[0]) > 0

    _wait(dumping, 60, "pg_dump to start writing")
    container.kill()  # SIGKILL: no cleanup handler runs
    container.reload()
    assert container.status != "running"

    container.start()
    _wait(lambda: stack.exec("backup", "true")[0] == 0, 30, "the backup container to run again")
    # Only the complete backup is listed; the killed run's directory is marked partial.
    assert [n for n in stack.backups() if not n.startswith(".partial-")] == [first]
    listing = stack.backup_cli("list")
    assert first in listing.stdout and listing.stdout.count("\n") == 1, listing.stdout
    assert stack.backup_cli("verify", first).returncode == 0

    stack.psql("DROP TABLE public.bulk")  # keep the test short; the point is what was left behind
    summary = stack.backup()
    assert summary["verified"]["ok"] is True
    left = stack.backups()
    assert summary["backup"] in left and not [n for n in left if n.startswith(".partial-")]
    assert stack.backup_cli("health").returncode == 0


FULL_VOLUME = """
services:
  backup:
    volumes: !override
      - backups-offsite:/var/lib/pgstack-offsite
      - wal-archive:/var/lib/pgstack-wal
    tmpfs: !override
      - /tmp
      - /run/pgstack-backup
      - /var/lib/pgstack-backup:size=4m,uid=10003,gid=10003,mode=0700
"""


def test_a_full_backup_volume_fails_loudly_and_keeps_the_existing_backups(
    backup_stack_factory: Callable[..., BackupStack],
) -> None:
    stack = backup_stack_factory("full", override=FULL_VOLUME)
    stack.up()
    first = stack.backup()["backup"]
    # Fill what is left of the volume.
    _, out = stack.exec("backup", "sh", "-c",
                        "dd if=/dev/zero of=/var/lib/pgstack-backup/filler bs=4k; sync",
                        user="pgbackup")  # fmt: skip
    assert "No space left" in out, out

    failed = stack.backup_cli("run")
    assert failed.returncode == 1, failed.stdout
    summary = last_event(failed.stdout, "backup")
    assert summary["status"] == "failed"
    assert "No space left on device" in summary["error"]
    health = stack.backup_cli("health")
    assert health.returncode == 5 and "failed" in health.stdout
    _wait(lambda: stack.health("backup") == "unhealthy", 40, "docker to mark backup unhealthy")

    assert [n for n in stack.backups() if n != "filler"] == [first]
    assert stack.backup_cli("verify", first).returncode == 0
    assert all(
        e.get("status") != "failed" for e in events(stack.backup_cli("verify", first).stdout)
    )

    stack.exec("backup", "rm", "/var/lib/pgstack-backup/filler")
    recovered = stack.backup()
    assert recovered["status"] == "ok"
    assert stack.backup_cli("health").returncode == 0
    _wait(lambda: stack.health("backup") == "healthy", 40, "docker to mark backup healthy again")
