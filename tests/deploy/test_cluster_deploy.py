"""The cluster layout deployed by Ansible to three fresh hosts (tests/deploy/fleet.py): etcd and
Patroni/PostgreSQL 17 on each, every connection between them over verified TLS from the CA the
deploy creates, the cluster's ports open to its members only; the API on two of them behind the
edge (HTTPS) on the third, released one host at a time.

One fleet for the whole module (three database hosts and an outsider on the same network), built
once per `make test`; the tests run in file order and build on each other, like an operator's
first deploy followed by checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from ssl import create_default_context

import docker
import httpx
import pytest

from tests.deploy.fleet import Fleet
from tests.deploy.target import REPO
from tests.deploy.tls import client_certificate, issue

DB_HOSTS = ["db1", "db2", "db3"]
API_HOSTS = ["db1", "db2"]
EDGE = "db3"
API_DIR = "/opt/pgstack-api"
DB_DIR = "/opt/pgstack-db"
TLS = f"{DB_DIR}/tls/patroni"
CLUSTER_PORTS = (5432, 8008, 2379, 2380)
ARTIFACT = REPO / ".test-artifacts" / "cluster-deploy.json"
EDGE_SERVERS = REPO / "ansible" / "scripts" / "edge_servers.py"
_measured: dict[str, object] = {}


def _record(**figures: object) -> None:
    _measured.update(figures)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(_measured, indent=2) + "\n")


# ---- fixtures: the cluster's images as one release archive, and the fleet -------------------


@pytest.fixture(scope="module")
def cluster_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The cluster layout's images (etcd, Patroni; HAProxy, PgBouncer and the API for the API
    tier), tagged for this run and saved in one `docker save` archive by `make deploy-images`:
    what `make deploy` ships to the cluster's hosts."""
    workdir = tmp_path_factory.mktemp("cluster-images")
    tag = f"pgstack-deploy-{os.getpid()}-c1"
    archive = workdir / f"images-{tag}.tar"
    try:
        built = subprocess.run(
            ["make", "deploy-images", *_make_images(tag, archive)],
            cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        yield tag, archive
    finally:
        client = docker.from_env()
        for image in client.images.list(filters={"reference": f"pgstack-*:{tag}"}):
            for ref in (ref for ref in image.tags if ref.endswith(f":{tag}")):
                with contextlib.suppress(docker.errors.ImageNotFound):
                    client.images.remove(ref, force=True, noprune=True)


def _make_images(tag: str, archive: Path) -> list[str]:
    """make's variables for this run's images: their tag and where the archives go (the single
    VM's too, which `make deploy-images` also saves); the build's secrets beside them."""
    return [
        f"PGSTACK_IMAGE_TAG={tag}",
        f"DEPLOY_CLUSTER_ARCHIVE={archive}",
        f"DEPLOY_ARCHIVE={archive.parent / f'single-vm-{tag}.tar'}",
        f"PGSTACK_SECRETS_DIR={archive.parent / 'secrets'}",
    ]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    hosts = Fleet(
        workdir=tmp_path_factory.mktemp("fleet"),
        groups={"pgstack_db": DB_HOSTS, "pgstack_api": API_HOSTS, "pgstack_edge": [EDGE]},
        outsiders=["outsider"],
    )
    try:
        hosts.create()
        _write_edge_tls(hosts)
        yield hosts
    finally:
        hosts.destroy()


def _write_edge_tls(fleet: Fleet) -> None:
    """The edge's certificate (for its address) and key where ansible/README.md tells an operator
    to put them: tls/server.crt, and the key encrypted with ansible-vault in the group's vars."""
    certificates = issue([EDGE], [_address(fleet, EDGE)])
    inventory = fleet.inventory.parent
    (inventory / "tls").mkdir(exist_ok=True)
    (inventory / "tls" / "server.crt").write_text(certificates.certificate)
    certificates.write_ca(fleet.workdir / "edge-ca.crt")
    encrypted = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), "encrypt_string",
         "--vault-password-file", str(fleet.vault_password), "--stdin-name", "vault_edge_tls_key"],
        input=certificates.key, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    (inventory / "group_vars" / "pgstack_db" / "edge_tls_key.yml").write_text(encrypted)


def _edge(fleet: Fleet, timeout: float = 5) -> httpx.Client:
    """A client of the edge's HTTPS, from the test's host, verified against the edge's CA."""
    return httpx.Client(
        base_url=f"https://{_address(fleet, EDGE)}",
        verify=create_default_context(cafile=fleet.workdir / "edge-ca.crt"),
        timeout=timeout,
    )


def _deploy(
    fleet: Fleet, archive: tuple[str, Path], *args: str, playbook: str = "cluster.yml"
) -> object:
    return fleet.playbook(playbook, *_images(archive), *args)


def _images(archive: tuple[str, Path]) -> list[str]:
    """The extra vars that name the images this run built and the archive that holds them."""
    tag, path = archive
    return [
        "--extra-vars", f"pgstack_db_images_archive={path}",
        "--extra-vars", f"pgstack_db_image_tag={tag}",
    ]  # fmt: skip


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

# A TLS handshake with this host's certificate: "handshake done", or the error that ended it.
_HANDSHAKE = f"""
import socket, ssl, sys
context = ssl.create_default_context(cafile="{TLS}/ca.crt")
context.load_cert_chain("{TLS}/node.crt", "{TLS}/node.key")
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname=sys.argv[3]):
            print("handshake done")
except OSError as exc:
    print(type(exc).__name__)
"""

# An HTTP request over TLS with a given client certificate, the server verified against the
# CAs this host trusts: "answered", or why not. With TLS 1.3 a server refuses a client
# certificate after the client's handshake is done: only the request shows it.
_CLIENT = f"""
import socket, ssl, sys
address, port, cert, key = sys.argv[1:5]
context = ssl.create_default_context(cafile="{TLS}/ca.crt")
context.load_cert_chain(cert, key)
try:
    with socket.create_connection((address, int(port)), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname=address) as tls:
            tls.sendall(b"GET /health HTTP/1.0\\r\\nHost: pgstack\\r\\n\\r\\n")
            print("answered" if tls.recv(64) else "closed")
except OSError as exc:
    print(type(exc).__name__)
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


_POSTMASTER_START = "select pg_postmaster_start_time()"


def _until_shown(fleet: Fleet, on: str, setting: str, value: str) -> None:
    """SHOW setting on a host until it is value (Patroni applies a reload on its next loop)."""
    deadline, shown = time.monotonic() + 30, ""
    while (shown := _psql(fleet, on, f"show {setting}")) != value:
        assert time.monotonic() < deadline, f"{setting} on {on} is {shown}, not {value}"
        time.sleep(1)


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


def _services(fleet: Fleet, name: str, project_dir: str) -> list[dict[str, str]]:
    """A compose project's containers on host `name`, as `docker compose ps` reports them."""
    found = fleet.sh(name, f"docker compose --project-directory {project_dir} ps --format json")
    return [json.loads(line) for line in found.stdout.splitlines() if line]


def _container_ids(fleet: Fleet) -> dict[str, list[str]]:
    """Each database host's running etcd and Patroni containers: the same IDs mean nothing was
    restarted."""
    return {
        n: fleet.sh(
            n, "docker ps --quiet --no-trunc --filter label=com.docker.compose.project=pgstack-db"
        ).stdout.split()
        for n in DB_HOSTS
    }


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
        rows = _services(fleet, name, DB_DIR)
        assert {(r["Service"], r["State"], r["Health"]) for r in rows} == {
            ("etcd", "running", "healthy"),
            ("patroni", "running", "healthy"),
        }, rows


# ---- a host lost for good, right after the first converge ----------------------------------


def _until_whole(fleet: Fleet, name: str, timeout: float) -> None:
    """Until `make deploy-check` is green (the cluster, the API hosts, the edge), after host
    `name` came back or in."""
    deadline = time.monotonic() + timeout
    while (check := fleet.run_make("deploy-check")).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} not whole after {timeout} s:\n{check.stdout[-3000:]}")
        time.sleep(5)


def _closed_to_others_and_serving(fleet: Fleet, name: str) -> None:
    """Host `name`'s cluster and API TLS ports dropped for the outsider, its plain API port
    unreachable from another host, and a write through the edge served."""
    address = _address(fleet, name)
    for port in (*CLUSTER_PORTS, 8443):
        assert _connect(fleet, "outsider", address, port) != "open", (
            f"{name}'s port {port} answers the outsider"
        )
    assert _connect(fleet, EDGE, address, 8000) != "open", f"{name} serves plain HTTP"
    with _edge(fleet) as http:
        email = f"{uuid.uuid4().hex}@example.test"
        assert http.post("/api/users", json={"email": email, "name": name}).status_code == 201


def _etcd_members(fleet: Fleet, on: str) -> list[tuple[str, str]]:
    """etcd's members as host `on`'s etcd-admin job lists them: (status, name) per member."""
    listed = fleet.sh(
        on,
        f"docker compose --project-directory {DB_DIR} run --rm --no-TTY --entrypoint etcdctl "
        "etcd-admin member list --write-out simple",
    ).stdout
    return sorted((row.split(", ")[1], row.split(", ")[2]) for row in listed.splitlines() if row)


@pytest.mark.timeout(1800)
def test_a_database_host_lost_for_good_is_replaced_by_a_new_machine_under_its_name(
    fleet: Fleet, cluster_archive: tuple[str, Path]
) -> None:
    """A replica's host (an API host too) is lost with everything on it, and a new machine comes
    up under its name and address. The operator runs `make deploy` (ansible/README.md, "A
    database host is lost for good"): a survivor replaces the member in etcd, Patroni clones
    the leader onto the new host, its API goes back behind the edge and its firewall closes the
    cluster's ports; the leader keeps leading. Early in the module, so every later test runs on a
    cluster with a replaced member."""
    leader = _leader(fleet)
    name = next(host for host in API_HOSTS if host != leader)
    marker = f"before-{uuid.uuid4().hex}"
    _psql(
        fleet,
        leader,
        "create table if not exists deploy_probe (marker text primary key); "
        f"insert into deploy_probe values ('{marker}')",
    )
    fleet.replace(name)
    lost = fleet.run_make("deploy-check")
    assert lost.returncode != 0, lost.stdout[-3000:]

    started = time.monotonic()
    recap = fleet.make("deploy", *_make_images(*cluster_archive))
    _record(replace_host_s=round(time.monotonic() - started, 1))
    said = " ".join(recap.output.split())
    assert f"{name} had no etcd data while" in said, said[-3000:]
    # On the first survivor in the inventory's order; nothing on the others.
    removed = _task_results(recap.output, "pgstack_db : Remove the lost member")
    survivor = min(set(DB_HOSTS) - {name})
    assert [r for r in removed if not r.startswith("skipping")] == [
        f"changed: [{name} -> {survivor}]"
    ], removed
    assert _leader(fleet) == leader
    # One member per host again, every one started (the lost one's entry is gone), asked on a
    # survivor and on the new host.
    for on in (survivor, name):
        assert _etcd_members(fleet, on) == [("started", host) for host in DB_HOSTS]
    _until_whole(fleet, name, 180)
    _record(replace_host_whole_s=round(time.monotonic() - started, 1))
    members = {str(m["name"]): m for m in _cluster(fleet)}
    assert members[name]["state"] == "streaming", members
    # Cloned from the leader: what was written before the loss is on the new host.
    query = f"select count(*) from deploy_probe where marker = '{marker}'"
    assert _psql(fleet, name, query) == "1"
    _write_reaches_the_replicas(fleet)
    assert _edge_servers(fleet)[name]["status"].startswith("UP"), _edge_servers(fleet)
    _closed_to_others_and_serving(fleet, name)
    # The next test's run of `make deploy` finds nothing to change, on the new host too.


@pytest.mark.timeout(900)
def test_a_second_run_of_make_deploy_changes_nothing(
    fleet: Fleet, cluster_archive: tuple[str, Path]
) -> None:
    """What an operator runs: `make deploy INVENTORY=...` builds the images again (the same
    ones, so the same archive) and the playbook finds nothing to change: a second run for the
    survivors of the replacement above, and for the new host."""
    started = time.monotonic()
    recap = fleet.make("deploy", *_make_images(*cluster_archive))
    _record(second_run_s=round(time.monotonic() - started, 1))
    assert recap.changed == 0, f"changed on the second run: {recap.changed_tasks()}"


@pytest.mark.timeout(900)
def test_a_dry_run_through_make_deploy_finds_nothing_to_change(
    fleet: Fleet, cluster_archive: tuple[str, Path]
) -> None:
    """What the README tells an operator to run before a release: `make deploy ...
    ANSIBLE_ARGS="--check --diff"`. On the converged cluster it fails nothing and would change
    nothing."""
    recap = fleet.make("deploy", *_make_images(*cluster_archive), "ANSIBLE_ARGS=--check --diff")
    assert recap.changed == 0, f"--check would change: {recap.changed_tasks()}"


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


# ---- the API tier behind the edge --------------------------------------------------------------


class _Load:
    """Clients through the edge while the `with` block runs: one creating users (a write on the
    leader each), one asking /readyz, each as fast as answers come. Counts every answer and
    keeps each failure (anything but 201 / 200: a status or an exception)."""

    def __init__(self, fleet: Fleet, limit: float = 900) -> None:
        self.fleet = fleet
        self.limit = limit
        self.counts = {"write": 0, "read": 0}
        self.failures: list[str] = []
        # When each failed request was sent (time.monotonic()), in the order of `failures`.
        self.failed_at: list[float] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(kind,), daemon=True) for kind in self.counts
        ]

    def __enter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, kind: str) -> None:
        started = time.monotonic()
        with _edge(self.fleet, timeout=30) as http:
            while not self._stop.is_set() and time.monotonic() - started < self.limit:
                sent = time.monotonic()
                try:
                    if kind == "write":
                        email = f"{uuid.uuid4().hex}@example.test"
                        answer = http.post("/api/users", json={"email": email, "name": "Load"})
                        ok = answer.status_code == 201
                    else:
                        answer = http.get("/readyz")
                        ok = answer.status_code == 200
                    outcome = f"{answer.status_code} {answer.text[:200]}"
                except httpx.HTTPError as error:
                    ok, outcome = False, f"{type(error).__name__}: {error}"
                self.counts[kind] += 1
                if not ok:
                    self.failed_at.append(sent)
                    self.failures.append(f"{round(sent - started, 1)} s {kind}: {outcome}")


def _edge_servers(fleet: Fleet) -> dict[str, dict[str, str]]:
    """The edge's view of its API servers, as deploy-check and a release read it (the deploy's
    scripts/edge_servers.py over HAProxy's admin socket): per server, its status and the
    sessions it has served."""
    found = fleet.sh(EDGE, "python3 - /run/haproxy/admin.sock api", input=EDGE_SERVERS.read_text())
    servers: dict[str, dict[str, str]] = json.loads(found.stdout)
    return {name: row for name, row in servers.items() if name in API_HOSTS}


def _find_all(text: str, needle: str) -> list[int]:
    found, at = [], text.find(needle)
    while at >= 0:
        found.append(at)
        at = text.find(needle, at + 1)
    return found


def _task_results(output: str, task: str) -> list[str]:
    """The result lines ("changed: [db1 -> db3]", "skipping: [db2]", ...) of every run of a task
    in a playbook's output, without their item details or the address of a delegated host."""
    results = []
    for at in _find_all(output, f"TASK [{task}"):
        section = re.split(r"\n(?:TASK|PLAY|RUNNING HANDLER) \[", output[at:])[0]
        results += [
            re.sub(r"\(.*?\)\]$", "]", line.split(" => ")[0])
            for line in section.splitlines()[1:]
            if ": [" in line
        ]
    return results


def _api_containers(fleet: Fleet) -> dict[str, dict[str, str]]:
    """Each API host's API tier: service -> container ID."""
    return {
        name: {row["Service"]: row["ID"] for row in _services(fleet, name, API_DIR)}
        for name in API_HOSTS
    }


def test_the_api_tier_runs_on_both_api_hosts_behind_the_edge(fleet: Fleet) -> None:
    for name in API_HOSTS:
        rows = _services(fleet, name, API_DIR)
        assert {(r["Service"], r["State"], r["Health"]) for r in rows} == {
            ("haproxy", "running", "healthy"),
            ("pgbouncer", "running", "healthy"),
            ("api", "running", "healthy"),
        }, rows
    before = {n: int(r["served"]) for n, r in _edge_servers(fleet).items()}
    with _edge(fleet) as http:
        for _ in range(20):
            assert http.get("/readyz").status_code == 200
    after = _edge_servers(fleet)
    assert {n: r["status"] for n, r in after.items()} == {n: "UP" for n in API_HOSTS}, after
    # Round robin: both API hosts served some of the requests.
    assert all(int(after[n]["served"]) > before[n] for n in API_HOSTS), (before, after)


def test_a_write_through_the_edge_lands_on_the_leader_over_verified_tls(fleet: Fleet) -> None:
    leader = _leader(fleet)
    email = f"{uuid.uuid4().hex}@example.test"
    with _edge(fleet) as http:
        created = http.post("/api/users", json={"email": email, "name": "Edge"})
    assert created.status_code == 201, created.text
    assert _psql(fleet, leader, f"select count(*) from users where email = '{email}'",
                 database="pgstack") == "1"  # fmt: skip
    # PgBouncer's server connections are TLS, to the leader's address through the leader proxy.
    tls = _psql(
        fleet, leader,
        "select count(*) from pg_stat_ssl join pg_stat_activity using (pid) "
        "where ssl and usename = 'app' and backend_type = 'client backend'",
    )  # fmt: skip
    assert int(tls) >= 1, "no app connection over TLS on the leader"
    plain = _psql(
        fleet, leader,
        "select count(*) from pg_stat_ssl join pg_stat_activity using (pid) "
        "where not ssl and usename in ('app', 'app_owner')",
    )  # fmt: skip
    assert plain == "0"


def test_the_api_hosts_serve_the_edge_over_tls_with_certificates_and_nobody_else(
    fleet: Fleet,
) -> None:
    for name in API_HOSTS:
        address = _address(fleet, name)
        # TLS on 8443, the host's certificate verified against the cluster's CA, a client
        # certificate from it required: the edge's host has one.
        ready = f"https://{address}:8443/readyz"
        assert json.loads(_rest(fleet, EDGE, ready))["status"] == "ready"
        refused = fleet.sh(EDGE, f"python3 - '{ready}' without-cert", input=_REST, check=False)
        assert refused.returncode != 0, f"{name}'s API answered a client without a certificate"
        # Dropped for a host outside the cluster; the plain API port is on loopback only.
        assert _connect(fleet, "outsider", address, 8443) != "open", (
            f"{name}'s API port answers a host outside the cluster"
        )
        assert _connect(fleet, EDGE, address, 8000) != "open", f"{name} serves plain HTTP"

    # Clients: the edge's HTTPS, from anywhere.
    assert _connect(fleet, "outsider", _address(fleet, EDGE), 443) == "open"


def test_an_edge_backend_port_no_api_host_accepts_is_refused_before_the_edge_changes(
    fleet: Fleet,
) -> None:
    """A typo an operator makes: edge_backend_port not the API hosts' TLS port (8000, the
    single VM's). Refused with what to change, the edge's configuration untouched."""
    config = "sha256sum /etc/haproxy/haproxy.cfg"
    before = fleet.sh(EDGE, config).stdout
    refused = fleet.run_playbook(
        "api.yml", "--limit", EDGE, "--extra-vars", "edge_backend_port=8000"
    )
    said = " ".join(refused.stdout.split())
    assert refused.returncode != 0, said[-3000:]
    assert "on port 8000 (edge_backend_port)" in said, said[-3000:]
    assert "set edge_backend_port to the same value" in said, said[-3000:]
    assert fleet.sh(EDGE, config).stdout == before
    assert {n: r["status"] for n, r in _edge_servers(fleet).items()} == {"db1": "UP", "db2": "UP"}


@pytest.mark.timeout(1200)
def test_a_rolling_release_replaces_each_api_host_in_turn_and_fails_no_request(
    fleet: Fleet, cluster_archive: tuple[str, Path]
) -> None:
    before = _api_containers(fleet)
    started = time.monotonic()
    with _Load(fleet) as load:
        time.sleep(3)
        # A new setting for the API (its worker count): every API host's API must be replaced;
        # and one for the edge, which HAProxy takes by a reload while the clients keep going.
        recap = _deploy(
            fleet, cluster_archive,
            "--extra-vars", "pgstack_api_workers=2", "--extra-vars", "edge_timeout_server=61s",
        )  # fmt: skip
        time.sleep(3)
        # The edge's memory under load, after a reload (README.md's sizing quotes it).
        rss_kib = fleet.sh(EDGE, "ps -C haproxy -o rss=").stdout.split()
    _record(
        rolling_release_s=round(time.monotonic() - started, 1),
        rolling_release_requests=dict(load.counts),
        rolling_release_failed=len(load.failures),
        edge_haproxy_rss_mib=round(sum(int(kib) for kib in rss_kib) / 1024, 1),
    )
    assert recap.failed == 0  # type: ignore[attr-defined]
    # The inventory's settings come back with the next test's runs.
    after = _api_containers(fleet)
    assert all(after[n]["api"] != before[n]["api"] for n in API_HOSTS), "an API was not replaced"
    # One host at a time: each drained before it changed, put back before the next one began.
    output = recap.output  # type: ignore[attr-defined]
    steps = sorted(
        [(i, "drain") for i in _find_all(output, "TASK [pgstack_api : Take this host out")]
        + [(i, "back") for i in _find_all(output, "TASK [pgstack_api : Put this host back")]
    )
    assert [step for _, step in steps] == ["drain", "back", "drain", "back"], output[-5000:]
    assert "RUNNING HANDLER [edge : Reload haproxy]" in output, output[-5000:]
    assert load.counts["write"] > 20 and load.counts["read"] > 20, load.counts
    assert not load.failures, f"{len(load.failures)} failed requests: {load.failures[:20]}"


# HAProxy's admin socket on the edge, as community.general.haproxy drives it: one command.
_ADMIN = """
import socket, sys
with socket.socket(socket.AF_UNIX) as admin:
    admin.connect("/run/haproxy/admin.sock")
    admin.sendall(sys.argv[1].encode() + b"\\n")
    print(admin.recv(4096).decode())
"""


@pytest.mark.timeout(900)
def test_a_release_stopped_halfway_is_put_back_into_rotation_by_the_next_run(
    fleet: Fleet, cluster_archive: tuple[str, Path]
) -> None:
    """A release that failed after the edge drained db1 and compose replaced its containers
    (they turned healthy only after the wait ran out): deploy-check names db1 as held out, and
    the next run puts it back, though compose has nothing left to change on it by then."""
    # That state, made without relying on a timeout: db1 released alone with the inventory's
    # worker count (the rolling release left 2, db2 keeps them), then held out as the drain does.
    _deploy(fleet, cluster_archive, "--limit", "db1", playbook="api.yml")
    fleet.sh(EDGE, "python3 - 'disable server api/db1'", input=_ADMIN)
    assert {n: r["status"] for n, r in _edge_servers(fleet).items()} == {
        "db1": "MAINT", "db2": "UP",
    }  # fmt: skip
    red = fleet.run_playbook("check.yml")
    said = " ".join(red.stdout.split())
    assert red.returncode != 0 and "db1 MAINT, db2 UP" in said, said[-3000:]
    assert "MAINT or DRAIN: a release took it out and did not finish" in said, said[-3000:]

    recap = _deploy(fleet, cluster_archive, playbook="api.yml")
    assert recap.failed == 0  # type: ignore[attr-defined]
    # "UP 1/2": just back, serving, one check short of full health.
    assert {n: r["status"].split()[0] for n, r in _edge_servers(fleet).items()} == {
        "db1": "UP", "db2": "UP",
    }  # fmt: skip
    # db1 only put back (nothing left to change on it); db2 released (its worker count changed).
    output = recap.output  # type: ignore[attr-defined]
    drained = _task_results(output, "pgstack_api : Take this host out")
    back = _task_results(output, "pgstack_api : Put this host back")
    assert [r for r in drained if r.startswith("changed:")] == ["changed: [db2 -> db3]"], drained
    assert [r for r in back if r.startswith("changed:")] == [
        "changed: [db1 -> db3]", "changed: [db2 -> db3]",
    ], back  # fmt: skip
    assert fleet.playbook("check.yml").changed == 0


# ---- rotating the certificates ---------------------------------------------------------------


def test_a_postgresql_setting_postgresql_refuses_stops_the_deploy_before_host_yml_changes(
    fleet: Fleet, cluster_archive: tuple[str, Path]
) -> None:
    """What a tired operator types: a misspelt name and a unit PostgreSQL does not know. Each is
    refused by the image's own PostgreSQL, named with its reason; no host's settings change
    (Patroni would drop the name with a warning in its log, PostgreSQL's reload the value)."""
    host_yml = f"sha256sum {DB_DIR}/patroni/patroni.d/host.yml"
    before = {name: fleet.sh(name, host_yml).stdout for name in DB_HOSTS}
    typos = '{"pgstack_db_postgresql_parameters": {"work_mme": "12MB", "work_mem": "12MBs"}}'
    refused = fleet.run_playbook("cluster.yml", *_images(cluster_archive), "--extra-vars", typos)
    said = " ".join(refused.stdout.split())
    assert refused.returncode != 0, said[-3000:]
    for name in DB_HOSTS:
        assert f"pgstack_db_postgresql_parameters on {name} has settings PostgreSQL refuses" in said
    assert "work_mme=12MB: unrecognized configuration parameter" in said, said[-3000:]
    assert "work_mem=12MBs: invalid value for parameter" in said, said[-3000:]
    assert {name: fleet.sh(name, host_yml).stdout for name in DB_HOSTS} == before
    assert {_psql(fleet, name, "show work_mem") for name in DB_HOSTS} == {"8MB"}


@pytest.mark.timeout(900)
def test_rotated_certificates_are_served_without_a_restart_and_the_leader_keeps_leading(
    fleet: Fleet, cluster_archive: tuple[str, Path]
) -> None:
    """Rotation, and in the same run a PostgreSQL setting from the inventory (a changed
    host.yml): both reach the running nodes by reloads, no container or PostgreSQL restarts."""
    leader = _leader(fleet)
    before = _served_serials(fleet)
    containers = _container_ids(fleet)
    postmasters = {name: _psql(fleet, name, _POSTMASTER_START) for name in DB_HOSTS}
    assert {_psql(fleet, name, "show work_mem") for name in DB_HOSTS} == {"8MB"}
    tuned = '{"pgstack_db_postgresql_parameters": {"work_mem": "12MB"}}'
    started = time.monotonic()
    recap = _deploy(
        fleet, cluster_archive, "--extra-vars", "pgstack_db_tls_rotate=true", "--extra-vars", tuned
    )
    _record(rotation_run_s=round(time.monotonic() - started, 1))
    assert recap.failed == 0 and recap.changed > 0  # type: ignore[attr-defined]
    after = _served_serials(fleet)
    kept = [where for where in before if after[where] == before[where]]
    assert not kept, f"still serving the old certificate (host, port): {kept}"
    # Reloaded, not restarted: the same containers and postmasters, the same leader, replication
    # over the new certificates (a replica reconnecting verifies the leader's new one).
    assert _container_ids(fleet) == containers
    for name in DB_HOSTS:
        _until_shown(fleet, name, "work_mem", "12MB")
    assert {name: _psql(fleet, name, _POSTMASTER_START) for name in DB_HOSTS} == postmasters
    assert _leader(fleet) == leader
    _write_reaches_the_replicas(fleet)
    # Back to ordinary runs: the rotated files and the setting are what the next deploy wants.
    recap = _deploy(fleet, cluster_archive, "--extra-vars", tuned)
    assert recap.changed == 0, f"changed after the rotation: {recap.changed_tasks()}"  # type: ignore[attr-defined]


def _stale_client_answers(fleet: Fleet, stale: Path) -> dict[str, str]:
    """From the edge's host, with a client certificate of the retired CA: what db1's Patroni
    REST API, etcd and API TLS port do with it."""
    address = _address(fleet, "db1")
    return {
        str(port): fleet.sh(
            EDGE, f"python3 - {address} {port} {stale}.crt {stale}.key", input=_CLIENT
        ).stdout.strip()
        for port in (8008, 2379, 8443)
    }


@pytest.mark.timeout(2700)
def test_a_ca_rotation_moves_every_host_to_a_new_ca_with_no_failed_request(
    fleet: Fleet, cluster_archive: tuple[str, Path]
) -> None:
    """`make deploy-ca-rotate`: a new CA trusted beside the old one, then signing every host's
    new certificate, then the old one dropped, each step a whole deploy, under a writer and a
    reader through the edge. After it every host trusts and serves the new CA alone, a client
    certificate of the old CA is refused where it was accepted, the leader is the same."""
    pki = fleet.inventory.parent / "pki"
    old_ca = (pki / "ca.crt").read_text()
    certificate, key = client_certificate(old_ca, (pki / "ca.key").read_text(), "stale-client")
    stale = Path("/root/stale-client")
    fleet.sh(EDGE, f"install -m 0644 /dev/stdin {stale}.crt", input=certificate)
    fleet.sh(EDGE, f"install -m 0600 /dev/stdin {stale}.key", input=key)
    # Accepted before: the check below can fail.
    assert set(_stale_client_answers(fleet, stale).values()) == {"answered"}
    leader = _leader(fleet)
    started = time.monotonic()
    with _Load(fleet, limit=2400) as load:
        recap = fleet.make("deploy-ca-rotate", *_make_images(*cluster_archive), timeout=2400)
    _record(
        ca_rotation_s=round(time.monotonic() - started, 1),
        ca_rotation_requests=dict(load.counts),
        ca_rotation_failed=len(load.failures),
    )
    assert recap.failed == 0
    assert not load.failures, load.failures[:20]
    new_ca = (pki / "ca.crt").read_text()
    assert new_ca != old_ca
    assert sorted(p.name for p in pki.glob("ca*")) == ["ca.crt", "ca.key"]
    for name in DB_HOSTS:
        trusted = fleet.sh(name, f"cat {TLS}/ca.crt").stdout
        assert trusted.strip() == new_ca.strip(), f"{name} trusts more than the new CA"
    # Every host's PostgreSQL, REST API and etcd serve a certificate the new CA alone verifies.
    _served_serials(fleet)
    refused = _stale_client_answers(fleet, stale)
    assert "answered" not in refused.values(), f"the old CA's client is still let in: {refused}"
    assert _leader(fleet) == leader
    _write_reaches_the_replicas(fleet)
    again = fleet.playbook("cluster.yml", *_images(cluster_archive))
    assert again.changed == 0, f"changed after the CA rotation: {again.changed_tasks()}"


# ---- operations: deploy-check and a planned switchover ---------------------------------------


def test_deploy_check_shows_the_cluster_and_finds_it_whole(fleet: Fleet) -> None:
    recap = fleet.make("deploy-check")
    assert recap.changed == 0
    leader = _leader(fleet)
    assert f"{leader} leads" in recap.output and "every member streams" in recap.output
    for name in API_HOSTS:
        assert f"{name}: HAProxy, PgBouncer and API healthy; /readyz 200." in recap.output
    assert f"{EDGE}: db1 UP, db2 UP." in recap.output, recap.output[-3000:]


def test_deploy_check_names_an_edge_whose_haproxy_is_down(fleet: Fleet) -> None:
    """The edge's HAProxy stopped (every client's way in): deploy-check says so and where to
    look, not a traceback of the script that asks it."""
    fleet.sh(EDGE, "systemctl stop haproxy")
    try:
        red = fleet.run_make("deploy-check")
    finally:
        fleet.sh(EDGE, "systemctl start haproxy")
    said = " ".join(red.stdout.split())
    assert red.returncode != 0, said[-3000:]
    assert "HAProxy does not answer on /run/haproxy/admin.sock" in said, said[-3000:]
    assert "Traceback" not in said, said[-3000:]
    assert fleet.make("deploy-check").changed == 0


def _writable(fleet: Fleet, name: str) -> bool:
    """The host's PostgreSQL answers and is not in recovery (a stopped one takes no writes)."""
    try:
        return _psql(fleet, name, "select pg_is_in_recovery()") == "f"
    except AssertionError:
        return False


@pytest.mark.timeout(420)
def test_deploy_check_names_etcd_when_no_member_answers_and_the_cluster_leads_again_after(
    fleet: Fleet,
) -> None:
    """etcd stopped on every database host: patronictl alone would wait for it without end, so
    deploy-check would hang. It says within its bound that no etcd member answers, and where to
    look; with etcd started again, Patroni elects a leader by itself and the check is green."""
    etcd = f"docker compose --project-directory {DB_DIR} %s etcd"
    for name in DB_HOSTS:
        fleet.sh(name, etcd % "stop", timeout=120)
    try:
        red = fleet.run_make("deploy-check", timeout=300)  # hung without end before
        # The leader cannot renew its key: it demotes itself (Patroni stops or restarts its
        # PostgreSQL read-only), so no node takes writes while etcd is away.
        deadline = time.monotonic() + 60
        while writable := [name for name in DB_HOSTS if _writable(fleet, name)]:
            assert time.monotonic() < deadline, f"{writable} still take writes without etcd"
            time.sleep(2)
    finally:
        for name in DB_HOSTS:
            fleet.sh(name, etcd % "start", timeout=120)
    said = " ".join(red.stdout.split())
    assert red.returncode != 0, said[-3000:]
    for name in DB_HOSTS:
        assert f"{name}: patronictl list failed (exit 124): no etcd member answered in 15 s" in (
            said
        ), said[-3000:]
    assert "Failed to get list of machines" in said, said[-3000:]  # patronictl's own words
    _leader(fleet, timeout=120)
    _until_whole(fleet, "the cluster, etcd back", timeout=180)


@pytest.mark.timeout(300)
def test_a_lost_api_host_leaves_the_edge_rotation_and_deploy_check_names_it(
    fleet: Fleet,
) -> None:
    """db2's API stops (its host gone, for the edge): the edge's check takes it out, requests go
    on through db1, and deploy-check says which host and service; back once it runs again."""
    api = f"docker compose --project-directory {API_DIR}"
    with _Load(fleet) as load:
        time.sleep(2)
        fleet.sh("db2", f"{api} stop api", timeout=120)
        try:
            deadline = time.monotonic() + 30
            while _edge_servers(fleet)["db2"]["status"] != "DOWN":
                assert time.monotonic() < deadline, _edge_servers(fleet)
                time.sleep(1)
            out_at = time.monotonic()
            served = dict(load.counts)
            time.sleep(5)
            assert load.counts["write"] > served["write"], "no write served without db2"
            red = fleet.run_playbook("check.yml")
            output = " ".join(red.stdout.split())
            assert red.returncode != 0, output[-3000:]
            assert "The API tier on db2 is not well." in output, output[-3000:]
            assert "Services not running and healthy: api;" in output, output[-3000:]
            assert "db2 DOWN" in output, output[-3000:]
            # What lets the edge retry elsewhere: db2's HAProxy ends the connection before any
            # TLS while its API is down (a finished handshake would mean an empty reply).
            said = fleet.sh(
                EDGE, f"python3 - {_address(fleet, 'db2')} 8443 db2", input=_HANDSHAKE
            ).stdout.strip()
            assert said != "handshake done", said
        finally:
            fleet.sh("db2", f"{api} start api", timeout=120)
        deadline = time.monotonic() + 60
        while _edge_servers(fleet)["db2"]["status"] != "UP":
            assert time.monotonic() < deadline, _edge_servers(fleet)
            time.sleep(1)
    _record(
        lost_api_host_requests=dict(load.counts),
        lost_api_host_failed_before_out=len(load.failures),
    )
    # Requests db2 had taken when it stopped may fail (as for any lost host: reported above);
    # none sent once the edge has taken it out, or while it comes back, may.
    late = [f for t, f in zip(load.failed_at, load.failures, strict=True) if t > out_at]
    assert not late, f"sent after the edge took db2 out, and failed: {late}"
    assert fleet.playbook("check.yml").changed == 0


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
        refused = fleet.run_make("deploy-switchover", f"CANDIDATE={wrong}")
        assert refused.returncode != 0 and why in refused.stdout, refused.stdout[-3000:]
        assert _leader(fleet) == before["leader"]
    started = time.monotonic()
    recap = fleet.make("deploy-switchover")
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


# ---- a host reboots --------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_a_rebooted_api_and_database_host_comes_back_by_itself_behind_its_firewall(
    fleet: Fleet,
) -> None:
    """A replica's host that also runs the API reboots, and nobody runs a playbook: systemd and
    the restart policies bring its member, its API tier and its firewall back; the edge takes it
    back, deploy-check turns green, and its ports are as closed to the outsider as before."""
    leader = _leader(fleet)
    name = next(host for host in API_HOSTS if host != leader)
    started = time.monotonic()
    fleet.reboot(name)
    _until_whole(fleet, name, 300)
    _record(reboot_back_s=round(time.monotonic() - started, 1))
    assert _leader(fleet) == leader
    members = {str(m["name"]): m for m in _cluster(fleet)}
    assert members[name]["state"] == "streaming", members
    _closed_to_others_and_serving(fleet, name)
