"""Faults a backup must survive: the backup container killed in the middle of a dump (a stack of
its own); a test restore that the machine cannot finish (its scratch space full) and a full
backup volume (one stack whose backup volume and scratch space are small tmpfs mounts)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

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
    container.exec_run(["pgstack-backup", "run"], user="postgres", detach=True)

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
    dumps_listed = listing.stdout.split("physical backups")[0].splitlines()[1:]
    assert [line.split()[0] for line in dumps_listed] == [first], listing.stdout
    assert stack.backup_cli("verify", first).returncode == 0

    stack.psql("DROP TABLE public.bulk")  # keep the test short; the point is what was left behind
    summary = stack.backup()
    assert summary["verified"]["status"] == "ok"
    left = stack.backups()
    assert summary["backup"] in left and not [n for n in left if n.startswith(".partial-")]
    assert stack.backup_cli("health").returncode == 0
    stack.down()  # on failure, the session's teardown removes it


# Dumps only (the physical repository lives on the real volume, which postgres shares): the
# backup volume is a 16 MB tmpfs, the test restore's scratch space one of 64 MB.
SMALL_DISKS = """
services:
  backup:
    environment:
      BACKUP_PITR: "false"
      BACKUP_SCRATCH_DIR: /var/lib/pgstack-scratch
    volumes: !override
      - backups-offsite:/var/lib/pgstack-offsite
      - pgdata:/var/lib/postgresql/data:ro
      - pg-run:/var/run/postgresql
    tmpfs: !override
      - /tmp
      - /run/pgstack-backup
      - /run/pgstack-pgbackrest
      - /var/lib/pgstack-backup:size=16m,uid=999,gid=999,mode=0700
      - /var/lib/pgstack-scratch:size=64m,uid=999,gid=999,mode=0700
"""


@pytest.fixture(scope="module")
def small(backup_stack_factory: Callable[..., BackupStack]) -> Iterator[BackupStack]:
    stack = backup_stack_factory("small", override=SMALL_DISKS)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def test_a_test_restore_the_machine_cannot_finish_leaves_the_backup_unverified_and_kept(
    small: BackupStack,
) -> None:
    first = small.backup()["backup"]
    # Compresses to almost nothing in the dump, and needs ~60 MB once restored: the scratch
    # space (64 MB, initdb's ~40 MB included) runs out in the middle of the test restore.
    small.psql("CREATE TABLE public.roomy AS SELECT g AS id, repeat('x', 600) AS pad "
               "FROM generate_series(1, 100000) AS g")  # fmt: skip
    failed = small.backup_cli("run")
    assert failed.returncode == 1, failed.stdout
    summary = last_event(failed.stdout, "backup")
    assert "No space left on device" in summary["error"], summary
    dumps = [n for n in small.backups() if not n.startswith(".")]
    assert len(dumps) == 2 and first in dumps, dumps  # nothing deleted: retention did not run
    unverified = next(n for n in dumps if n != first)
    record = small.exec("backup", "cat", f"{DUMPS}/{unverified}/verification.json")[1]
    assert '"status": "unverified"' in record, record
    listing = small.make("backup-list").stdout
    assert any(unverified in line and "unverified (" in line for line in listing.splitlines())
    assert small.backup_cli("health").returncode == 5
    # The machine recovers: the next run verifies, the unverified dump is not treated as bad.
    small.psql("DROP TABLE public.roomy")
    assert small.backup()["status"] == "ok"
    assert small.backup_cli("health").returncode == 0


def test_a_full_backup_volume_fails_loudly_and_keeps_the_existing_backups(
    small: BackupStack,
) -> None:
    stack = small
    first = stack.backup()["backup"]
    # Fill what is left of the volume.
    _, out = stack.exec("backup", "sh", "-c",
                        "dd if=/dev/zero of=/var/lib/pgstack-backup/filler bs=4k; sync",
                        user="postgres")  # fmt: skip
    assert "No space left" in out, out

    failed = stack.backup_cli("run")
    assert failed.returncode == 1, failed.stdout
    summary = last_event(failed.stdout, "backup")
    assert summary["status"] == "failed"
    assert "No space left on device" in summary["error"]
    health = stack.backup_cli("health")
    assert health.returncode == 5 and "failed" in health.stdout
    _wait(lambda: stack.health("backup") == "unhealthy", 40, "docker to mark backup unhealthy")

    assert first in stack.backups()
    assert not [n for n in stack.backups() if n.startswith(".partial-")]
    assert stack.backup_cli("verify", first).returncode == 0
    assert all(
        e.get("status") != "failed" for e in events(stack.backup_cli("verify", first).stdout)
    )

    stack.exec("backup", "rm", "/var/lib/pgstack-backup/filler")
    recovered = stack.backup()
    assert recovered["status"] == "ok"
    assert stack.backup_cli("health").returncode == 0
    _wait(lambda: stack.health("backup") == "healthy", 40, "docker to mark backup healthy again")
