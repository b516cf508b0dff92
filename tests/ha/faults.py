"""Faults injected into the cluster through the Docker SDK, and the checks of a Ledger against
the cluster afterwards. Shared by tests/ha/test_faults.py and bench/failover.py."""

from __future__ import annotations

import json
import time
from typing import Any

import docker.models.networks

from tests.ha.cluster import Cluster, healthy
from tests.ha.ledger import Ledger

# Generous bounds for a loaded 2-core host; the figures are bench/failover.py's, not these.
REPLACED_BOUND_S = 120.0
REJOIN_BOUND_S = 180.0


def roles(members: list[dict[str, Any]]) -> dict[str, str]:
    return {m["Member"]: m["Role"] for m in members}


def timeline(members: list[dict[str, Any]], node: str) -> int:
    return int(next(m["TL"] for m in members if m["Member"] == node))


def cluster_network(cluster: Cluster) -> docker.models.networks.Network:
    return cluster.client.networks.get(f"{cluster.project}_cluster")


def disconnect(cluster: Cluster, service: str) -> None:
    """A partition: `service` loses the cluster network (etcd, the other nodes, HAProxy)."""
    cluster_network(cluster).disconnect(cluster.container(service))


def reconnect(cluster: Cluster, service: str) -> None:
    """The partition heals: back on the network under its service name, as compose put it."""
    cluster_network(cluster).connect(cluster.container(service), aliases=[service])


def etcd_leader(cluster: Cluster) -> str:
    """The etcd member that leads the raft group (endpoint status needs no credentials)."""
    code, out = cluster.exec(
        "etcd1", "etcdctl", "--endpoints=http://etcd1:2379,http://etcd2:2379,http://etcd3:2379",
        "endpoint", "status", "--write-out=json",
    )  # fmt: skip
    assert code == 0, out
    status = json.loads(out)
    names = {s["Status"]["header"]["member_id"]: s["Endpoint"].split("//")[1].split(":")[0]
             for s in status}  # fmt: skip
    return names[status[0]["Status"]["leader"]]


def evidence(cluster: Cluster, leader: str) -> str:
    """For a failure message: HAProxy's server state changes (a leader marked DOWN cuts every
    session to it) and the leader's last Patroni lines, which the client's log cannot show."""
    proxy = cluster.container("haproxy").logs(tail=400).decode(errors="replace").splitlines()
    # Each change is logged twice (its log line and a [WARNING] on stderr): the log line only.
    changes = [line for line in proxy if line.startswith("Server ") and " is " in line]
    node = cluster.container(leader).logs(tail=30).decode(errors="replace")
    return (f"\n--- HAProxy server changes:\n{chr(10).join(changes[-20:]) or '(none)'}"
            f"\n--- {leader}'s last log lines:\n{node[-4000:]}")  # fmt: skip


def wait_replaced(cluster: Cluster, old_leader: str, timeout: float = REPLACED_BOUND_S) -> str:
    """Another node leads, with a running PostgreSQL."""
    members = cluster.wait_members(
        lambda ms: any(
            m["Role"] == "Leader" and m["Member"] != old_leader and m["State"] == "running"
            for m in ms
        ),
        timeout=timeout,
        what=f"a leader other than {old_leader}",
    )
    return next(m["Member"] for m in members if m["Role"] == "Leader")


def wait_healthy(cluster: Cluster, timeout: float = REJOIN_BOUND_S) -> list[dict[str, Any]]:
    return cluster.wait_members(healthy, timeout=timeout, what="leader + sync standby + replica")


def orders_on(cluster: Cluster, node: str, user: int) -> list[int]:
    out = cluster.node_psql(node, f"SELECT id FROM orders WHERE user_id = {int(user)} ORDER BY id")
    return [int(x) for x in out.split()]


def assert_ledger_holds(cluster: Cluster, ledger: Ledger, leader: str, api_started: str) -> None:
    """What must hold after a fault, the writer stopped: every failed answer was a 503 JSON
    with Retry-After within the bound; every acknowledged order is on `leader`, and no other
    order of the writer's (none placed twice for a key, none placed unacknowledged); the API
    served again without being restarted."""
    bad = ledger.bad_answers()
    assert not bad, f"{len(bad)} answers outside the contract, e.g. {bad[:3]}"
    assert len({a.key for a in ledger.acks}) == len(ledger.acks), "a key acknowledged twice"
    stored = orders_on(cluster, leader, ledger.user)
    acked = sorted(ledger.acked_ids())
    lost = sorted(set(acked) - set(stored))
    assert not lost, f"{len(lost)} acknowledged orders missing on {leader}: {lost[:20]}"
    extra = sorted(set(stored) - set(acked))
    assert not extra, f"orders on {leader} that no acknowledgement explains: {extra[:20]}"
    assert len(stored) == len(acked), (len(stored), len(acked))
    api = cluster.container("api")
    api.reload()
    assert api.attrs["State"]["StartedAt"] == api_started, "the API was restarted"
    assert api.attrs["State"]["Status"] == "running"


def lsn(text: str) -> int:
    """A WAL position as PostgreSQL prints it (0/9000028), as a number."""
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def quiet_after_a_segment_switch(cluster: Cluster, leader: str, quiet_s: float = 10.0) -> str:
    """Leave `leader` as archive_timeout leaves a cluster that has just gone quiet: its WAL
    switched to a new segment and nothing written since, so its insert position (the new
    segment's first record place) lies past its last record. Returns that insert position once
    it has held for `quiet_s`.

    A switch is WAL activity, so the background writer follows it with a standby snapshot, at
    most one per 15 s (LOG_SNAPSHOT_INTERVAL_MS). Switching again right after that snapshot
    leaves 15 s without one: `quiet_s` fits inside them with room for slow `docker exec`s on a
    loaded machine. Anything else may still write (autovacuum): then it tries again. Whether a
    node rewound from it then waits depends on what else writes before the leader's next timed
    checkpoint (autovacuum may, or nothing); pgstack-rewind's record makes it not matter."""
    where = "SELECT pg_current_wal_insert_lsn()"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        cluster.node_psql(leader, "SELECT pg_switch_wal()", "postgres")
        switched = cluster.node_psql(leader, where, "postgres")
        snapshot_due = time.monotonic() + 30  # 15 s, and the writer's 10 s hibernation
        while cluster.node_psql(leader, where, "postgres") == switched:
            if time.monotonic() > snapshot_due:
                break
            time.sleep(0.5)
        cluster.node_psql(leader, "SELECT pg_switch_wal()", "postgres")
        switched = cluster.node_psql(leader, where, "postgres")
        time.sleep(quiet_s)
        if cluster.node_psql(leader, where, "postgres") == switched:
            return switched
    raise AssertionError(f"{leader} kept writing WAL: no quiet {quiet_s} s after a switch")


def patroni_log(cluster: Cluster, service: str, since: float) -> str:
    return cluster.container(service).logs(since=int(since) - 1).decode(errors="replace")


def wait_streaming(cluster: Cluster, node: str, tl: int, timeout: float = REJOIN_BOUND_S) -> None:
    """`node`'s WAL receiver streams from the leader on timeline `tl`."""
    deadline, row = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            row = cluster.node_psql(
                node, "SELECT status, received_tli FROM pg_stat_wal_receiver", "postgres"
            )
        except AssertionError as exc:
            row = str(exc)
        if row == f"streaming|{tl}":
            return
        time.sleep(1)
    raise AssertionError(f"{node} not streaming on timeline {tl} after {timeout} s: {row!r}")


def wait_orders(cluster: Cluster, node: str, user: int, expected: list[int]) -> None:
    """`node` holds exactly `expected` of the user's orders (a replica replays a moment late)."""
    deadline, got = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        if (got := orders_on(cluster, node, user)) == expected:
            return
        time.sleep(0.5)
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    raise AssertionError(f"{node}: missing {missing[:20]}, extra {extra[:20]}")


def accepts_writes(cluster: Cluster, node: str) -> bool:
    """`node`'s PostgreSQL answers as a primary. False once it is a replica, and while it is shut
    down: a leader cut off from etcd stops its PostgreSQL (Patroni's "offline" demotion; the stop
    itself waits up to wal_sender_timeout for the unreachable standbys) and starts it again only
    when it can reach etcd."""
    try:
        return cluster.node_psql(node, "SELECT pg_is_in_recovery()", "postgres") == "f"
    except AssertionError:  # refusing connections: shutting down, stopped or starting
        return False
