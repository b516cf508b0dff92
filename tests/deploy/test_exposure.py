"""What the deployed host exposes, seen from another host on its network, not read off the rules.

One target whose sshd listens on 2222 (not 22), deployed with the example inventory: clients get
HTTPS at the edge, the API's own port is on loopback, and the firewall filters the ports Docker
publishes as well as the host's own. Each test asks an outsider container (tests/deploy/outsider)
whether a port answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.deploy.conftest import Release
from tests.deploy.outsider import LISTEN_PORT, Outsider
from tests.deploy.target import Target

SSHD_PORT = 2222
API_PORT = 8000


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A fresh target whose sshd listens on a port other than 22."""
    host = Target(workdir=tmp_path_factory.mktemp("target"), sshd_port=SSHD_PORT)
    try:
        host.create()
        yield host
    finally:
        host.destroy()


def _deploy(target: Target, release: Release, **extra: object) -> None:
    recap = target.playbook(
        "site.yml",
        "--extra-vars", f"pgstack_images_archive={release.archive}",
        "--extra-vars", f"pgstack_image_tag={release.tag}",
        "--extra-vars", json.dumps(extra),
    )  # fmt: skip
    assert recap.failed == 0


def _stack_reaches_the_outsider(target: Target, outsider: Outsider) -> bool:
    """Whether the API container can open a connection out of the target (Docker's NAT)."""
    # Double quotes only: target.stack() single-quotes each argument for the shell.
    address = (outsider.address, LISTEN_PORT)
    script = f"import socket; socket.create_connection({address!r}, 3).close()".replace("'", '"')
    run = target.stack("exec", "--no-TTY", "api", "python", "-c", script, check=False)
    return run.returncode == 0


@pytest.mark.timeout(900)
def test_the_playbook_converges_a_host_whose_sshd_is_not_on_22(
    target: Target, releases: list[Release]
) -> None:
    _deploy(target, releases[0])
    target.wait_ready()


def test_another_host_gets_the_api_over_https_verified_against_the_inventory_ca(
    outsider: Outsider,
) -> None:
    answer = outsider.https("/readyz")
    assert (answer.get("status"), answer.get("body")) == (200, '{"status":"ready"}'), answer


def test_ssh_stays_reachable_on_its_own_port_and_nothing_else_is_open(outsider: Outsider) -> None:
    assert outsider.banner(SSHD_PORT).startswith("SSH-2.0-")
    # 22 is in no list (sshd moved); the API is on loopback; the database ports are never published.
    for port in (22, API_PORT, 5432, 6432, 80):
        assert not outsider.connects(port), f"port {port} answers another host"
    assert outsider.connects(443)


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
    target: Target, outsider: Outsider, releases: list[Release]
) -> None:
    _deploy(target, releases[0], pgstack_http_bind="0.0.0.0")
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
def test_an_allowed_published_port_opens_to_another_host(
    target: Target, outsider: Outsider, releases: list[Release]
) -> None:
    _deploy(
        target, releases[0], pgstack_http_bind="0.0.0.0", firewall_allowed_tcp_ports=[443, API_PORT]
    )
    assert outsider.http("/livez", API_PORT).get("status") == 200


@pytest.mark.timeout(600)
def test_a_trusted_network_reaches_a_published_port_that_is_not_allowed(
    target: Target, outsider: Outsider, releases: list[Release]
) -> None:
    _deploy(
        target,
        releases[0],
        pgstack_http_bind="0.0.0.0",
        firewall_allowed_tcp_ports=[443],
        firewall_trusted_networks=[f"{outsider.address}/32"],
    )
    assert outsider.http("/livez", API_PORT).get("status") == 200
