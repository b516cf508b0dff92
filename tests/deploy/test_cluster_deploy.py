"""The cluster layout deployed by Ansible to three fresh hosts (tests/deploy/fleet.py): etcd and
Patroni/PostgreSQL 17 on each, every connection between them over verified TLS from the CA the
deploy creates, the cluster's ports open to its members only.

One fleet for the whole module (three database hosts and an outsider on the same network), built
once per `make test`; the tests run in file order and build on each other, like an operator's
first deploy followed by checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.deploy.fleet import Fleet
from tests.deploy.target import REPO
from tests.stack.compose import IMAGE_TAG, compose_env

DB_HOSTS = ["db1", "db2", "db3"]
DB_DIR = "/opt/pgstack-db"
TLS = f"{DB_DIR}/tls/patroni"
CLUSTER_PORTS = (5432, 8008, 2379, 2380)
ARTIFACT = REPO / ".test-artifacts" / "cluster-deploy.json"
_measured: dict[str, object] = {}


def _record(**figures: object) -> None:
    _measured.update(figures)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(_measured, indent=2) + "\n")


# ---- fixtures: the cluster's images as one release archive, and the fleet -------------------


@pytest.fixture(scope="module")
def cluster_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """pgstack-etcd and pgstack-patroni, built from this tree and tagged for this run, in one
    `docker save` archive: what `make deploy` ships to the database hosts."""
    workdir = tmp_path_factory.mktemp("cluster-images")
    secrets = workdir / "secrets"
    subprocess.run(
        [str(REPO / "scripts/secrets.sh"), str(secrets), "ha"], check=True, capture_output=True
    )
    env = {**compose_env("pgstack-build", secrets, 0), "COMPOSE_FILE": "docker-compose.ha.yml"}
    subprocess.run(
        ["docker", "compose", "build", "--quiet", "etcd1", "patroni1"],
        cwd=REPO, env=env, check=True,
    )  # fmt: skip
    client = docker.from_env()
    tag = f"pgstack-deploy-{os.getpid()}-c1"
    refs = [f"pgstack-etcd:{tag}", f"pgstack-patroni:{tag}"]
    archive = workdir / f"images-{tag}.tar"
    try:
        for ref in refs:
            client.images.get(f"{ref.split(':')[0]}:{IMAGE_TAG}").tag(ref)
        subprocess.run(["docker", "save", "--output", str(archive), *refs], check=True)
        yield tag, archive
    finally:
        archive.unlink(missing_ok=True)
        for ref in refs:
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(ref, force=True, noprune=True)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    hosts = Fleet(
        workdir=tmp_path_factory.mktemp("fleet"),
        groups={"pgstack_db": DB_HOSTS},
        outsiders=["outsider"],
    )
    try:
        hosts.create()
        yield hosts
    finally:
        hosts.destroy()


def _deploy(fleet: Fleet, archive: tuple[str, Path], *args: str) -> object:
    tag, path = archive
    return fleet.playbook(
        "cluster.yml",
        "--extra-vars", f"pgstack_db_images_archive={path}",
        "--extra-vars", f"pgstack_db_image_tag={tag}",
        *args,
    )  # fmt: skip


# ---- helpers: asking the cluster from its hosts ----------------------------------------------

# Patroni's REST API over HTTPS, the server verified against the cluster's CA, this host's
# certificate shown (the API requires one).
_REST = f"""
import ssl, sys, urllib.request
context = ssl.create_default_context(cafile="{TLS}/ca.crt")
if sys.argv[2] == "with-cert":
    context.load_cert_chain("{TLS}/node.crt", "{TLS}/node.key")
print(urllib.request.urlopen(sys.argv[1], context=context, timeout=5).read().decode())
"""

# A TCP connect with a bound: "open", or why not.
_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("open")
except OSError as exc:
    print(type(exc).__name__)
"""


# The serial number of the certificate a cluster port serves, verified against the CA (by the
# address, as the members connect), this host's certificate shown. PostgreSQL starts TLS after
# its SSLRequest message.
_SERVED = f"""
import socket, ssl, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
context = ssl.create_default_context(cafile="{TLS}/ca.crt")
context.load_cert_chain("{TLS}/node.crt", "{TLS}/node.key")
with socket.create_connection((host, port), timeout=5) as sock:
    if port == 5432:
        sock.sendall(struct.pack("!ii", 8, 80877103))
        assert sock.recv(1) == b"S", "PostgreSQL refused TLS"
    with context.wrap_socket(sock, server_hostname=host) as tls:
        print(tls.getpeercert()["serialNumber"])
"""


def _address(fleet: Fleet, name: str) -> str:
    return fleet.hosts[name].address


def _rest(fleet: Fleet, on: str, url: str, cert: str = "with-cert") -> str:
    return fleet.sh(on, f"python3 - '{url}' {cert}", input=_REST).stdout


def _cluster(fleet: Fleet) -> list[dict[str, object]]:
    """The member list, from the first database host whose REST API answers."""
    for on in DB_HOSTS:
        with contextlib.suppress(AssertionError):
            body = _rest(fleet, on, f"https://{_address(fleet, on)}:8008/cluster")
            return list(json.loads(body)["members"])
    raise AssertionError("no Patroni REST API answers")


def _leader(fleet: Fleet, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(AssertionError, ValueError):
            leaders = [m["name"] for m in _cluster(fleet) if m["role"] == "leader"]
            if len(leaders) == 1:
                return str(leaders[0])
        if time.monotonic() > deadline:
            raise AssertionError(f"no single leader after {timeout} s")
        time.sleep(2)


def _psql(fleet: Fleet, on: str, sql: str, database: str = "postgres") -> str:
    """psql as postgres over the node's socket, tuples only, unaligned."""
    return fleet.sh(
        on,
        f"docker compose --project-directory {DB_DIR} exec --no-TTY --user postgres patroni "
        f'psql --no-psqlrc --tuples-only --no-align --dbname {database} --command "{sql}"',
    ).stdout.strip()


def _connect(fleet: Fleet, source: str, address: str, port: int) -> str:
    return fleet.sh(source, f"python3 - {address} {port}", input=_CONNECT).stdout.strip()


def _served_serials(fleet: Fleet) -> dict[tuple[str, int], str]:
    """Each database host's served certificate on PostgreSQL, Patroni's REST API and etcd's
    client port, asked from another member."""
    served = {}
    for name in DB_HOSTS:
        member = next(n for n in DB_HOSTS if n != name)
        for port in (5432, 8008, 2379):
            run = fleet.sh(member, f"python3 - {_address(fleet, name)} {port}", input=_SERVED)
            served[(name, port)] = run.stdout.strip()
    return served


def _container_ids(fleet: Fleet) -> dict[str, list[str]]:
    """Each database host's running containers: the same IDs mean nothing was restarted."""
    return {n: fleet.sh(n, "docker ps --quiet --no-trunc").stdout.split() for n in DB_HOSTS}


def _write_reaches_the_replicas(fleet: Fleet) -> None:
    leader = _leader(fleet)
    marker = uuid.uuid4().hex
    _psql(
        fleet,
        leader,
        "create table if not exists deploy_probe (marker text primary key); "
        f"insert into deploy_probe values ('{marker}')",
    )
    for name in set(DB_HOSTS) - {leader}:
        deadline = time.monotonic() + 30
        query = f"select count(*) from deploy_probe where marker = '{marker}'"
        while _psql(fleet, name, query) != "1":
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} never received the leader's write")
            time.sleep(1)
        assert _psql(fleet, name, "select pg_is_in_recovery()") == "t"


# ---- the deploy --------------------------------------------------------------------------------


@pytest.mark.timeout(1800)
def test_the_cluster_layout_converges_on_three_hosts(
    fleet: Fleet, cluster_archive: tuple[str, Path]
) -> None:
    started = time.monotonic()
    recap = _deploy(fleet, cluster_archive)
    _record(first_converge_s=round(time.monotonic() - started, 1))
    assert recap.failed == 0 and recap.changed > 0  # type: ignore[attr-defined]
    for name in DB_HOSTS:
        states = fleet.sh(name, f"docker compose --project-directory {DB_DIR} ps --format json")
        rows = [json.loads(line) for line in states.stdout.splitlines() if line]
        assert {(r["Service"], r["State"], r["Health"]) for r in rows} == {
            ("etcd", "running", "healthy"),
            ("patroni", "running", "healthy"),
        }, rows


@pytest.mark.timeout(600)
def test_a_second_run_changes_nothing(fleet: Fleet, cluster_archive: tuple[str, Path]) -> None:
    started = time.monotonic()
    recap = _deploy(fleet, cluster_archive)
    _record(second_run_s=round(time.monotonic() - started, 1))
    assert recap.changed == 0, f"changed on the second run: {recap.changed_tasks()}"  # type: ignore[attr-defined]


# ---- the cluster it made -----------------------------------------------------------------------


def test_the_cluster_has_a_leader_and_two_streaming_replicas_one_synchronous(
    fleet: Fleet,
) -> None:
    leader = _leader(fleet)
    deadline = time.monotonic() + 60
    while True:
        members = {str(m["name"]): m for m in _cluster(fleet)}
        roles = sorted(str(m["role"]) for m in members.values())
        states = {str(m["state"]) for n, m in members.items() if n != leader}
        if roles == ["leader", "replica", "sync_standby"] and states == {"streaming"}:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"cluster not complete after 60 s: {members}")
        time.sleep(2)
    assert set(members) == set(DB_HOSTS)
    # Every member registered its address on the shared network, over HTTPS.
    for name, member in members.items():
        assert member["api_url"] == f"https://{_address(fleet, name)}:8008/patroni", member
        assert member["host"] == _address(fleet, name), member


def test_replication_runs_over_tls_to_verified_addresses(fleet: Fleet) -> None:
    leader = _leader(fleet)
    rows = _psql(
        fleet,
        leader,
        "select r.application_name, r.sync_state, s.ssl, s.version, r.client_addr "
        "from pg_stat_replication r join pg_stat_ssl s using (pid) order by 1",
    ).splitlines()
    replicas = {row.split("|")[0]: row.split("|") for row in rows}
    assert set(replicas) == set(DB_HOSTS) - {leader}, rows
    assert sorted(r[1] for r in replicas.values()) == ["async", "sync"], rows
    for name, (_, _, ssl, version, client) in replicas.items():
        assert (ssl, version) == ("t", "TLSv1.3"), rows
        assert client == _address(fleet, name), rows
    # The replicas asked for verify-full: the leader's certificate, checked against its address.
    for name in replicas:
        conninfo = _psql(fleet, name, "select conninfo from pg_stat_wal_receiver")
        assert "sslmode=verify-full" in conninfo, conninfo
        assert f"host={_address(fleet, leader)}" in conninfo, conninfo


def test_patroni_rest_api_is_https_and_wants_a_certificate_from_the_ca(fleet: Fleet) -> None:
    url = f"https://{_address(fleet, 'db2')}:8008/health"
    assert json.loads(_rest(fleet, "db1", url))["state"] == "running"
    refused = fleet.sh("db1", f"python3 - '{url}' without-cert", input=_REST, check=False)
    assert refused.returncode != 0, "the REST API answered a client without a certificate"
    plain = fleet.sh(
        "db1", f"python3 - 'http://{_address(fleet, 'db2')}:8008/health' x", input=_REST,
        check=False,
    )  # fmt: skip
    assert plain.returncode != 0, "the REST API answered plain HTTP"


def test_etcd_members_are_healthy_over_tls_and_refuse_clients_without_a_certificate(
    fleet: Fleet,
) -> None:
    endpoints = ",".join(f"https://{_address(fleet, n)}:2379" for n in DB_HOSTS)
    etcdctl = (
        f"docker compose --project-directory {DB_DIR} exec --no-TTY etcd etcdctl "
        f"--endpoints={endpoints} --cacert=/etc/pgstack/tls/ca.crt --command-timeout=5s"
    )
    health = fleet.sh(
        "db1",
        f"{etcdctl} --cert=/etc/pgstack/tls/node.crt --key=/etc/pgstack/tls/node.key "
        "endpoint health --write-out=json",
    )
    rows = json.loads(health.stdout)
    assert len(rows) == 3 and all(row["health"] for row in rows), rows
    members = fleet.sh(
        "db1",
        f"{etcdctl} --cert=/etc/pgstack/tls/node.crt --key=/etc/pgstack/tls/node.key "
        "member list --write-out=json",
    )
    peers = sorted(u for m in json.loads(members.stdout)["members"] for u in m["peerURLs"])
    assert peers == sorted(f"https://{_address(fleet, n)}:2380" for n in DB_HOSTS)
    anonymous = fleet.sh("db1", f"{etcdctl} endpoint health", check=False)
    assert anonymous.returncode != 0, anonymous.stdout


def test_a_write_on_the_leader_reaches_both_replicas(fleet: Fleet) -> None:
    _write_reaches_the_replicas(fleet)


def test_cluster_ports_answer_members_and_nobody_else(fleet: Fleet) -> None:
    for port in CLUSTER_PORTS:
        for name in DB_HOSTS:
            member = next(n for n in DB_HOSTS if n != name)
            reached = _connect(fleet, member, _address(fleet, name), port)
            if reached != "open":  # once more: a node may be between two checks of its own
                time.sleep(5)
                reached = _connect(fleet, member, _address(fleet, name), port)
            assert reached == "open", (member, name, port, reached)
            # Dropped, not refused: the outsider learns nothing, and waits out its timeout.
            assert _connect(fleet, "outsider", _address(fleet, name), port) != "open", (
                f"{name}:{port} answers a host outside the cluster"
            )
    # The outsider reaches the hosts at all (SSH is open), so the closed ports are the firewall's.
    assert _connect(fleet, "outsider", _address(fleet, "db1"), 22) == "open"


# ---- rotating the certificates ---------------------------------------------------------------


@pytest.mark.timeout(900)
def test_rotated_certificates_are_served_without_a_restart_and_the_leader_keeps_leading(
    fleet: Fleet, cluster_archive: tuple[str, Path]
) -> None:
    leader = _leader(fleet)
    before = _served_serials(fleet)
    containers = _container_ids(fleet)
    started = time.monotonic()
    recap = _deploy(fleet, cluster_archive, "--extra-vars", "pgstack_db_tls_rotate=true")
    _record(rotation_run_s=round(time.monotonic() - started, 1))
    assert recap.failed == 0 and recap.changed > 0  # type: ignore[attr-defined]
    after = _served_serials(fleet)
    kept = [where for where in before if after[where] == before[where]]
    assert not kept, f"still serving the old certificate (host, port): {kept}"
    # Reloaded, not restarted: the same containers, the same leader, replication over the new
    # certificates (a replica reconnecting verifies the leader's new one).
    assert _container_ids(fleet) == containers
    assert _leader(fleet) == leader
    _write_reaches_the_replicas(fleet)
    # Back to ordinary runs: the rotated files are what the next deploy wants.
    recap = _deploy(fleet, cluster_archive)
    assert recap.changed == 0, f"changed after the rotation: {recap.changed_tasks()}"  # type: ignore[attr-defined]


# ---- operations: deploy-check and a planned switchover ---------------------------------------


def test_deploy_check_shows_the_cluster_and_finds_it_whole(fleet: Fleet) -> None:
    recap = fleet.playbook("check.yml")
    assert recap.changed == 0
    leader = _leader(fleet)
    assert f"{leader} leads" in recap.output and "every member streams" in recap.output


def _roles(fleet: Fleet) -> dict[str, str]:
    """Leader, synchronous standby and asynchronous replica, once the cluster is complete."""
    deadline = time.monotonic() + 60
    while True:
        roles = {str(m["role"]): str(m["name"]) for m in _cluster(fleet)}
        if set(roles) == {"leader", "sync_standby", "replica"}:
            return roles
        if time.monotonic() > deadline:
            raise AssertionError(f"cluster not complete after 60 s: {roles}")
        time.sleep(2)


@pytest.mark.timeout(600)
def test_a_planned_switchover_hands_over_to_the_sync_standby_and_refuses_any_other(
    fleet: Fleet,
) -> None:
    before = _roles(fleet)
    # What a tired operator types: the asynchronous replica, a host that is not a member.
    for wrong, why in ((before["replica"], "is an asynchronous replica"),
                       ("db9", "is not a member of the cluster")):  # fmt: skip
        candidate = f"pgstack_db_candidate={wrong}"
        refused = fleet.run_playbook("switchover.yml", "--extra-vars", candidate)
        assert refused.returncode != 0 and why in refused.stdout, refused.stdout[-3000:]
        assert _leader(fleet) == before["leader"]
    started = time.monotonic()
    recap = fleet.playbook("switchover.yml")
    _record(switchover_s=round(time.monotonic() - started, 1))
    assert recap.changed > 0
    # Returned only once the new leader serves and the old one streams from it.
    after = {str(m["name"]): m for m in _cluster(fleet)}
    assert after[before["sync_standby"]]["role"] == "leader", after
    assert after[before["leader"]]["state"] == "streaming", after
    assert len({m.get("timeline") for m in after.values()}) == 1, after
    _write_reaches_the_replicas(fleet)
    assert fleet.playbook("check.yml").changed == 0


# ---- failover --------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_stopping_the_leader_hosts_patroni_elects_a_new_leader(fleet: Fleet) -> None:
    old = _leader(fleet)
    started = time.monotonic()
    fleet.sh(old, f"docker compose --project-directory {DB_DIR} stop patroni", timeout=120)
    try:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(AssertionError, ValueError):
                leaders = [m["name"] for m in _cluster(fleet) if m["role"] == "leader"]
                if leaders and leaders[0] != old:
                    break
            if time.monotonic() > deadline:
                raise AssertionError("no new leader 90 s after the leader's Patroni stopped")
            time.sleep(1)
        _record(failover_stopped_leader_s=round(time.monotonic() - started, 1))
        new = str(leaders[0])
        # deploy-check says the cluster is not whole, while the old leader's node is away.
        incomplete = fleet.run_playbook("check.yml")
        assert incomplete.returncode != 0, incomplete.stdout[-3000:]
        assert "The cluster is not whole" in incomplete.stdout, incomplete.stdout[-3000:]
        # Named leader a moment before its PostgreSQL has left recovery: retry briefly.
        deadline = time.monotonic() + 30
        while True:
            try:
                _psql(fleet, new, f"insert into deploy_probe values ('after-{uuid.uuid4().hex}')")
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    finally:
        fleet.sh(old, f"docker compose --project-directory {DB_DIR} start patroni", timeout=300)
    # The old leader rejoins as a replica of the new one.
    deadline = time.monotonic() + 120
    while True:
        members = {str(m["name"]): m for m in _cluster(fleet)}
        if members.get(old, {}).get("state") == "streaming":
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"{old} did not rejoin as a streaming replica: {members}")
        time.sleep(2)
