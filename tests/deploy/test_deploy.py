"""The real playbook against a fresh target host over SSH: inventories refused before anything
changes, converge, idempotence, health, data surviving a re-deploy and a restart of
pgstack.service, backups on the target, and what the host exposes, seen from another host on its
network, not read off the rules.

The tests run in file order and build on each other, like an operator's first deploy followed by
a release, on the host the single-VM modules share (conftest.py). Its sshd listens on 2222, not
22. Exposure is asked of an outsider container
(tests/deploy/outsider): clients get HTTPS at the edge, the API's own port is on loopback, and
the firewall filters the ports Docker publishes as well as the host's own.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime

import pytest

from tests.deploy.conftest import API_PORT, SSHD_PORT, Release
from tests.deploy.outsider import LISTEN_PORT, Outsider
from tests.deploy.steps import (
    deploy,
    order,
    order_total,
    refused_with_the_example_vault,
    release_vars,
)
from tests.deploy.target import REPO, STACK_DIR, Downtime, Target

# What the deploy tests measured last, for ansible/README.md's figures.
ARTIFACT = REPO / ".test-artifacts" / "deploy.json"
_measured: dict[str, object] = {}


def _recorded_order() -> int:
    """The order the release test placed; the tests after it check that it survives."""
    if "order_id" not in _measured:
        pytest.fail("no order was recorded: the release test before this one failed (see above)")
    return int(str(_measured["order_id"]))


def _instant(stamp: str) -> datetime:
    """Docker's RFC 3339 time with nanoseconds, to microseconds."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


def _shipped_archive(target: Target) -> str:
    """When the host's copy of the image archive was last written (role ship_images)."""
    return target.sh(f"stat --format %y {STACK_DIR}/images/pgstack-images.tar").stdout.strip()


def _record(**figures: object) -> None:
    _measured.update(figures)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(_measured, indent=2) + "\n")


# ---- a fresh host: what is refused before anything changes ---------------------------------


@pytest.mark.timeout(300)
def test_the_example_vault_is_refused_on_a_fresh_host_before_anything_changes(
    target: Target, releases: list[Release]
) -> None:
    refused_with_the_example_vault(target, releases[0], "--check")
    refused_with_the_example_vault(target, releases[0])
    for path in ("/opt/pgstack", "/etc/default/pgstack", "/usr/local/bin/pgstack"):
        assert target.sh(f"test -e {path}", check=False).returncode != 0, path
    assert target.sh("command -v docker", check=False).returncode != 0, "Docker was installed"


@pytest.mark.timeout(300)
def test_a_missing_edge_key_is_refused_on_a_fresh_host_before_anything_changes(
    target: Target, releases: list[Release]
) -> None:
    # The operator's inventory with every secret from make vault, but the edge's key never added.
    inventory = target.workdir / "no-edge-key"
    shutil.copytree(target.inventory.parent, inventory)
    (inventory / "group_vars" / "pgstack" / "edge_tls_key.yml").unlink()
    result = target.run_playbook(
        "site.yml",
        *release_vars(releases[0]),
        inventory=inventory / target.inventory.name,
        timeout=300,
    )
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output[-3000:]
    assert "edge_tls_key" in output and "The edge: HTTPS and certificates" in output, output[-3000:]
    assert "changed=0" in output, "nothing may change before the refusal"
    assert target.sh("command -v docker", check=False).returncode != 0, "Docker was installed"


# ---- the first deploy ------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_check_mode_on_a_fresh_host_runs_and_changes_nothing(
    target: Target, releases: list[Release]
) -> None:
    # Ansible's apt module answers check mode only with python3-apt (a real run installs it
    # itself); ansible/README.md lists it under Requirements.
    target.sh("apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-apt")
    recap = deploy(target, releases[0], "--check", "--diff")
    assert recap.failed == 0 and recap.changed > 0
    assert target.sh("command -v docker", check=False).returncode != 0, (
        "check mode installed Docker"
    )
    assert target.sh("test -e /opt/pgstack", check=False).returncode != 0


@pytest.mark.timeout(900)
def test_the_playbook_converges_a_fresh_host(target: Target, releases: list[Release]) -> None:
    started = time.monotonic()
    recap = deploy(target, releases[0])
    _record(first_converge_s=round(time.monotonic() - started, 1))
    assert recap.failed == 0 and recap.changed > 0


@pytest.mark.timeout(300)
def test_a_second_run_changes_nothing(target: Target, releases: list[Release]) -> None:
    started = time.monotonic()
    recap = deploy(target, releases[0])
    _record(second_run_s=round(time.monotonic() - started, 1))
    assert recap.changed == 0, f"changed on the second run: {recap.changed_tasks()}"


@pytest.mark.timeout(300)
def test_check_mode_with_diff_runs_and_predicts_no_change(
    target: Target, releases: list[Release]
) -> None:
    recap = deploy(target, releases[0], "--check", "--diff")
    assert recap.changed == 0, f"check mode predicts changes: {recap.changed_tasks()}"


def test_every_service_is_healthy_and_migrations_finished(target: Target) -> None:
    services = target.services()
    defined = target.stack("config", "--services").stdout.split()
    assert sorted(services) == sorted(defined)
    for name, row in services.items():
        if name == "migrate":
            assert (row["State"], row["ExitCode"]) == ("exited", 0), row
        else:
            assert (row["State"], row["Health"]) == ("running", "healthy"), row


def test_readyz_answers_200_through_the_edge(target: Target) -> None:
    with target.http() as http:
        assert http.get("/readyz").status_code == 200


@pytest.mark.timeout(300)
def test_deploy_check_passes(target: Target) -> None:
    recap = target.playbook("check.yml")
    assert recap.failed == 0 and recap.changed == 0


def test_secrets_are_private_files_that_no_output_shows(target: Target) -> None:
    listing = target.sh(
        "stat --format '%a %U %n' /opt/pgstack/secrets /opt/pgstack/secrets/*"
    ).stdout
    modes = dict(line.split(" ", 1)[::-1] for line in listing.splitlines())
    assert modes.pop("pgstack /opt/pgstack/secrets") == "700"
    assert len(modes) == 7 and set(modes.values()) == {"400"}, modes
    values = target.sh("cat /opt/pgstack/secrets/*; echo").stdout
    output = (target.workdir / "playbooks.log").read_text()
    assert "censored due to no_log" in output
    # Six 43-character values; none may appear in anything ansible printed so far.
    for value in filter(None, values.replace("\n", " ").split(" ")):
        assert value not in output


def test_only_ssh_and_https_answer_another_host_and_no_database_port_is_published(
    target: Target, outsider: Outsider
) -> None:
    assert outsider.banner(SSHD_PORT).startswith("SSH-2.0-")
    answer = outsider.https("/readyz")  # verified against the inventory's CA
    assert (answer.get("status"), answer.get("body")) == (200, '{"status":"ready"}'), answer
    # 22 is in no list (sshd moved); the API's own port is published on loopback only; nothing
    # publishes the database's ports.
    for port in (22, API_PORT, 5432, 6432, 80):
        assert not outsider.connects(port), f"port {port} answers another host"
    published = target.sh("docker ps --format '{{.Names}} {{.Ports}}'").stdout
    for line in published.splitlines():
        name, _, ports = line.partition(" ")
        assert ("-api-" in name) == bool(ports.strip()), line
        assert not ports.strip() or ports.startswith("127.0.0.1:"), line
    assert "5432" not in published and "6432" not in published


@pytest.mark.timeout(900)
def test_an_order_survives_a_release_with_migrations_before_the_new_api(
    target: Target, releases: list[Release]
) -> None:
    order_id = order(target)
    before = {name: row["ID"] for name, row in target.services().items()}
    shipped = _shipped_archive(target)
    with Downtime(f"{target.base_url}/readyz", target.ssl_context()) as downtime:
        started = time.monotonic()
        recap = deploy(target, releases[1])
        took = time.monotonic() - started
        target.wait_ready()
    _record(
        release_deploy_s=round(took, 1),
        release_unavailable_longest_s=round(downtime.longest_s, 2),
        release_unavailable_gaps=len(downtime.gaps),
        release_polls=downtime.polls,
    )
    assert recap.changed > 0
    after = target.services()
    assert all(after[name]["ID"] != before[name] for name in before), "every container is replaced"
    assert all(str(row["Image"]).endswith(f":{releases[1].tag}") for row in after.values())
    # The same build under a new tag: the host had every image, so only tags, no archive copy.
    assert _shipped_archive(target) == shipped
    # The API's new container started only after the migrations had finished.
    inspected = json.loads(target.sh("docker inspect pgstack-migrate-1 pgstack-api-1").stdout)
    migrate, api = (c["State"] for c in inspected)
    assert migrate["ExitCode"] == 0
    assert _instant(migrate["FinishedAt"]) <= _instant(api["StartedAt"])
    assert order_total(target, order_id) == 600
    # Bounded: a release restarts every service, each waiting for its healthcheck.
    assert downtime.longest_s < 60, (downtime.gaps, downtime.changes)
    _measured["order_id"] = order_id


@pytest.mark.timeout(600)
def test_an_api_only_release_replaces_only_the_api_and_keeps_the_data(
    target: Target, api_only_release: Release
) -> None:
    order_id = _recorded_order()
    before = {name: row["ID"] for name, row in target.services().items()}
    shipped = _shipped_archive(target)
    with Downtime(f"{target.base_url}/readyz", target.ssl_context()) as downtime:
        recap = deploy(target, api_only_release)
        target.wait_ready()
    _record(
        api_release_unavailable_longest_s=round(downtime.longest_s, 2),
        api_release_unavailable_gaps=len(downtime.gaps),
    )
    assert recap.changed > 0
    after = target.services()
    replaced = {name for name in before if after[name]["ID"] != before[name]}
    # The data path stays up; the backup service (if any) follows migrate, which it depends on.
    assert {"api", "migrate"} <= replaced and not {"postgres", "pgbouncer"} & replaced, replaced
    # A rebuilt API image is one the host lacks: this time the archive was copied and loaded.
    assert _shipped_archive(target) != shipped
    assert order_total(target, order_id) == 600
    assert downtime.longest_s < 30, (downtime.gaps, downtime.changes)


@pytest.mark.timeout(600)
def test_an_archive_without_the_deployed_tag_is_refused_and_leaves_the_stack_as_it_was(
    target: Target, releases: list[Release]
) -> None:
    """The tired operator's release: release 1's archive, a tag that no archive holds. The stop
    comes before the compose file and .env change, so the restart test after this one also
    proves that a restart after a failed deploy finds every image it runs."""
    files = f"sha256sum {STACK_DIR}/docker-compose.yml {STACK_DIR}/.env"
    before = (target.sh(files).stdout, {n: row["ID"] for n, row in target.services().items()})
    typo = f"{releases[1].tag}-typo"
    failed = target.run_playbook(
        "site.yml", "--extra-vars", f"pgstack_images_archive={releases[0].archive}",
        "--extra-vars", f"pgstack_image_tag={typo}",
    )  # fmt: skip
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, output[-3000:]
    assert "does not hold" in output and f"pgstack-api:{typo}" in output, output[-3000:]
    after = (target.sh(files).stdout, {n: row["ID"] for n, row in target.services().items()})
    assert after == before
    env = target.sh(f"cat {STACK_DIR}/.env").stdout
    assert f"PGSTACK_IMAGE_TAG={releases[1].tag}\n" in env
    # What a restart would run is all on the host.
    refs = target.stack("config", "--images").stdout.split()
    assert refs and all(ref.endswith(f":{releases[1].tag}") for ref in refs), refs
    target.sh(f"docker image inspect --format ok {' '.join(sorted(set(refs)))}")


@pytest.mark.timeout(600)
def test_the_order_survives_a_restart_of_pgstack_service(target: Target) -> None:
    order_id = _recorded_order()
    started = time.monotonic()
    target.sh("systemctl restart pgstack.service", timeout=540)
    target.wait_ready()
    _record(systemctl_restart_s=round(time.monotonic() - started, 1))
    assert target.sh("systemctl is-active pgstack.service").stdout.strip() == "active"
    assert target.sh("systemctl is-enabled pgstack.service").stdout.strip() == "enabled"
    assert order_total(target, order_id) == 600


@pytest.mark.timeout(600)
def test_a_backup_taken_on_the_target_restores(target: Target) -> None:
    if "backup" not in target.services():
        pytest.fail(
            "the compose file has no backup service; this test expects one (services/backup)"
        )
    order_id = _recorded_order()
    target.stack("exec", "--no-TTY", "backup", "pgstack-backup", "run", timeout=300)
    copies = target.sh("find /var/backups/pgstack -type f | wc -l").stdout.strip()
    assert int(copies) > 0, "the off-site copy reaches the operator's backup directory"
    later = order(target)
    admin = ("run", "--rm", "--no-deps", "--no-TTY", "backup", "pgstack-backup")
    target.stack(*admin, "restore", "latest", "--yes", timeout=300)
    target.stack("run", "--rm", "--no-TTY", "migrate", timeout=300)
    target.stack("exec", "--no-TTY", "postgres", "pgstack-db-init")
    target.stack(*admin, "reopen")
    target.wait_ready()
    assert order_total(target, order_id) == 600
    with target.http() as http:
        assert http.get(f"/api/orders/{later}").status_code == 404, (
            "the restore brings back the backup's data"
        )
    assert target.playbook("check.yml").failed == 0


# ---- exposure: what another host reaches -----------------------------------------------------


def _redeploy(target: Target, release: Release, **extra: object) -> None:
    """The release already on the target (nothing to replace), with other variables."""
    recap = deploy(target, release, "--extra-vars", json.dumps(extra))
    assert recap.failed == 0


def _stack_reaches_the_outsider(target: Target, outsider: Outsider) -> bool:
    """Whether the API container can open a connection out of the target (Docker's NAT)."""
    # Double quotes only: target.stack() single-quotes each argument for the shell.
    address = (outsider.address, LISTEN_PORT)
    script = f"import socket; socket.create_connection({address!r}, 3).close()".replace("'", '"')
    run = target.stack("exec", "--no-TTY", "api", "python", "-c", script, check=False)
    return run.returncode == 0


@pytest.mark.parametrize("action", ["restart", "reload"])
def test_the_stack_keeps_its_network_when_nftables_is_restarted_or_reloaded(
    target: Target, outsider: Outsider, action: str
) -> None:
    assert _stack_reaches_the_outsider(target, outsider), "no way out before the test"
    target.sh(f"systemctl {action} nftables.service")
    target.wait_ready(timeout=30)
    assert outsider.https("/readyz").get("status") == 200
    assert _stack_reaches_the_outsider(target, outsider), (
        f"after `systemctl {action} nftables` the API container cannot reach another host: "
        "Docker's NAT rules are gone"
    )
    # Our rules are back too: the API's port is still closed to another host.
    assert not outsider.connects(API_PORT)
    assert outsider.banner(SSHD_PORT).startswith("SSH-2.0-")


@pytest.mark.timeout(600)
def test_an_api_published_on_every_interface_is_closed_unless_the_firewall_allows_it(
    target: Target, outsider: Outsider, api_only_release: Release
) -> None:
    _redeploy(target, api_only_release, pgstack_http_bind="0.0.0.0")
    target.wait_ready()
    # Published on every interface: the target itself reaches it through its own address...
    own_address = target.sh("hostname --ip-address").stdout.split()[0]
    target.sh(
        f"python3 -c 'import urllib.request as u; u.urlopen(\"http://{own_address}:{API_PORT}/livez\")'"
    )
    # ...but the firewall drops it on the way from another host.
    assert not outsider.connects(API_PORT)
    assert outsider.https("/readyz").get("status") == 200


@pytest.mark.timeout(600)
@pytest.mark.parametrize("opened_by", ["its port allowed", "the client's network trusted"])
def test_a_published_port_opens_to_another_host_when_the_firewall_lets_it(
    target: Target, outsider: Outsider, api_only_release: Release, opened_by: str
) -> None:
    firewall: dict[str, object] = {"firewall_allowed_tcp_ports": [443, API_PORT]}
    if opened_by == "the client's network trusted":  # the port itself stays not allowed
        firewall = {
            "firewall_allowed_tcp_ports": [443],
            "firewall_trusted_networks": [f"{outsider.address}/32"],
        }
    _redeploy(target, api_only_release, pgstack_http_bind="0.0.0.0", **firewall)
    assert outsider.http("/livez", API_PORT).get("status") == 200
