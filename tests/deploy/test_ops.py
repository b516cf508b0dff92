"""Secrets and operations on a deployed host: the example vault refused before anything changes,
and the runbook's operations through the `pgstack` command on the host and `make deploy-*` from
the control node (backup, list, restore of a dump and to a point in time, status, check).

The tests run in file order, like an operator's first weeks with a host, on the host the
single-VM modules share (conftest.py): test_deploy's deployed host when the whole package runs,
a fresh one when this module runs alone (the first test deploys either way).
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests.deploy.conftest import API_PORT, Release
from tests.deploy.outsider import Outsider
from tests.deploy.steps import deploy, order, order_total, refused_with_the_example_vault
from tests.deploy.target import Target

_state: dict[str, int] = {}


def _pgstack(target: Target, *args: str, user: str = "root", timeout: float = 600) -> str:
    """`pgstack ARGS` on the target as `user`; fails with its output unless it exits 0."""
    quoted = " ".join(f"'{arg}'" for arg in args)
    result = target.sh(f"runuser -u {user} -- pgstack {quoted}", check=False, timeout=timeout)
    assert result.returncode == 0, (
        f"pgstack {quoted}: {result.returncode}\n{result.stdout}{result.stderr}"
    )
    return result.stdout


def _make(target: Target, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """A make target of the repository from the control node against this target."""
    return target.run_make(*args, timeout=timeout)


def _make_ok(target: Target, *args: str) -> subprocess.CompletedProcess[str]:
    """`_make` that must succeed; fails with the end of its output otherwise."""
    result = _make(target, *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _assert_restored(
    target: Target, *, kept: int, gone: int, dumps_before: list[str], safety: str
) -> None:
    """After a whole restore command: the API serves again, the order from before the backup or
    target time is there, the one placed after it is not, and the safety dump the restore took
    first (`safety`: pre-restore or pre-pitr) is still listed."""
    new = set(_dumps(_pgstack(target, "backup-list"))) - set(dumps_before)
    assert any(name.endswith(f"-{safety}") for name in new), (safety, new)
    target.wait_ready()
    assert order_total(target, kept) == 600
    with target.http() as http:
        assert http.get(f"/api/orders/{gone}").status_code == 404


def _dumps(listing: str) -> list[str]:
    """The dump names in `pgstack backup-list`'s first section."""
    logical = listing.split("physical backups", 1)[0].splitlines()[1:]
    return [line.split()[0] for line in logical if line.startswith("  ")]


def _started(target: Target, service: str) -> str:
    return target.sh(
        f"docker inspect --format '{{{{.State.StartedAt}}}}' pgstack-{service}-1"
    ).stdout.strip()


@pytest.mark.timeout(900)
def test_a_deploy_with_the_inventorys_own_settings_takes_the_api_back_to_loopback(
    target: Target, outsider: Outsider, releases: list[Release]
) -> None:
    # After test_deploy the API is published on every interface to a trusted network (its
    # exposure tests' extra vars); a fresh host gets its first deploy here.
    recap = deploy(target, releases[1])
    assert recap.failed == 0 and recap.changed > 0
    target.wait_ready()
    ports = target.sh("docker ps --filter name=pgstack-api- --format '{{.Ports}}'").stdout.strip()
    assert ports.startswith(f"127.0.0.1:{API_PORT}->"), ports
    assert not outsider.connects(API_PORT)
    assert outsider.https("/readyz").get("status") == 200
    assert target.sh("stat --format '%a %U' /usr/local/bin/pgstack").stdout.split() == [
        "755",
        "root",
    ]


@pytest.mark.timeout(300)
def test_the_example_vault_is_refused_on_a_deployed_host_and_the_secrets_stay(
    target: Target, releases: list[Release]
) -> None:
    def state() -> tuple[str, str]:
        secrets = target.sh("sha256sum /opt/pgstack/secrets/*").stdout
        containers = target.sh("docker ps --all --quiet --no-trunc | sort").stdout
        return secrets, containers

    before = state()
    refused_with_the_example_vault(target, releases[0], "--check", "--diff")
    refused_with_the_example_vault(target, releases[0])
    assert state() == before


def test_pgstack_status_as_the_deploy_user_reports_services_readiness_and_backup(
    target: Target,
) -> None:
    status = _pgstack(target, "status", user="pgstack")
    for service in ("postgres", "pgbouncer", "api", "backup"):
        assert any(
            line.split()[:3] == [service, "running", "healthy"] for line in status.splitlines()
        ), status
    assert "migrate" in status and "readyz: 200" in status and "backup: " in status, status


@pytest.mark.timeout(300)
def test_pgstack_check_db_deploy_db_init_and_logs_work_on_the_host(target: Target) -> None:
    check = _pgstack(target, "check")
    assert "database check: OK" in check and "API path (PgBouncer)" in check, check
    _pgstack(target, "db-deploy")  # at head already: applies nothing, exits 0
    _pgstack(target, "db-init")
    # Compose clears each line (ESC [2K) even when no terminal is attached.
    shown = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", _pgstack(target, "logs", "api"))
    logs = [line for line in shown.splitlines() if line.strip()]
    assert logs and all(line.startswith("api-1") for line in logs), logs[:5]
    target.wait_ready()


def test_pgstack_refuses_a_user_who_may_not_use_docker(target: Target) -> None:
    result = target.sh("runuser -u debian -- pgstack status", check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "run as root or as the deploy user" in result.stderr


@pytest.mark.timeout(600)
def test_pgstack_backup_then_backup_list_shows_it(target: Target) -> None:
    before = _dumps(_pgstack(target, "backup-list"))
    _state["order"] = order(target)
    _pgstack(target, "backup")
    listing = _pgstack(target, "backup-list")
    new = set(_dumps(listing)) - set(before)
    assert len(new) == 1 and "verified" in listing, listing
    assert "point-in-time recovery: any time between" in listing, listing


@pytest.mark.timeout(600)
def test_pgstack_restore_needs_confirm_then_brings_the_backup_back(target: Target) -> None:
    order_id = _state.get("order") or pytest.fail("the backup test before this one failed")
    later = order(target)
    refused = target.sh("pgstack restore BACKUP=latest", check=False)
    assert refused.returncode == 4 and "CONFIRM=1" in refused.stderr, refused.stderr
    assert order_total(target, later) == 600, "an unconfirmed restore changed nothing"
    before = _dumps(_pgstack(target, "backup-list"))
    _pgstack(target, "restore", "BACKUP=latest", "CONFIRM=1")
    _assert_restored(target, kept=order_id, gone=later, dumps_before=before, safety="pre-restore")


@pytest.mark.timeout(300)
def test_a_typo_in_target_time_is_refused_with_the_window_and_nothing_changes(
    target: Target,
) -> None:
    started = _started(target, "postgres")
    # 2025 for 2026: before the oldest backup.
    result = target.sh(
        "pgstack restore 'TARGET_TIME=2025-11-27 10:00:00+00:00' CONFIRM=1", check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "outside the recoverable window: you can restore to any time between" in output
    assert _started(target, "postgres") == started, "postgres was touched"


@pytest.mark.timeout(900)
def test_pgstack_restore_to_a_point_in_time_brings_back_what_was_there(target: Target) -> None:
    kept = order(target)
    time.sleep(2)
    moment = target.sh("date -u '+%F %T+00:00'").stdout.strip()
    time.sleep(2)
    gone = order(target)
    before = _dumps(_pgstack(target, "backup-list"))
    _pgstack(target, "restore", f"TARGET_TIME={moment}", "CONFIRM=1", timeout=900)
    _assert_restored(target, kept=kept, gone=gone, dumps_before=before, safety="pre-pitr")


@pytest.mark.timeout(900)
def test_the_make_wrappers_back_up_list_and_restore_from_the_control_node(
    target: Target,
) -> None:
    order_id = order(target)
    _make_ok(target, "deploy-backup")
    listing = _make_ok(target, "deploy-backup-list")
    assert "point-in-time recovery: any time between" in listing.stdout
    later = order(target)
    refused = _make(target, "deploy-restore", "BACKUP=latest")
    assert refused.returncode != 0 and "CONFIRM=1" in refused.stderr, refused.stderr
    before = _dumps(_pgstack(target, "backup-list"))
    _make_ok(target, "deploy-restore", "BACKUP=latest", "CONFIRM=1")
    _assert_restored(target, kept=order_id, gone=later, dumps_before=before, safety="pre-restore")


@pytest.mark.timeout(300)
def test_make_deploy_status_and_deploy_check_report_the_stack(target: Target) -> None:
    status = _make_ok(target, "deploy-status")
    assert "readyz: 200" in status.stdout, status.stdout
    check = _make_ok(target, "deploy-check")
    assert "readyz: 200" in check.stdout and "failed=0" in check.stdout, check.stdout[-3000:]
