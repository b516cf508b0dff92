"""Faults under a writer: a lost etcd member, a planned switchover, the leader's container
stopped, killed (the machine lost) and cut off the network. For each, a Ledger places keyed
orders through the API throughout, and afterwards: every acknowledged order is on the new leader
and none is there twice; every failed answer was a 503 JSON with Retry-After within the bound;
the API serves again without a restart; the old leader rejoins as a replica by itself.

One cluster for the module; the faults run in sequence, each from a healthy cluster, and each
leaves one behind. The bounds are generous (a loaded 2-core host); the figures are
bench/failover.py's (make bench-ha)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from tests.ha import faults
from tests.ha.cluster import Cluster
from tests.ha.ledger import Ledger
from tests.stack.compose import create_product, create_user


@pytest.fixture
def ledger(cluster: Cluster) -> Iterator[Ledger]:
    """A running writer on a healthy cluster, with a few orders acknowledged already."""
    faults.wait_healthy(cluster)
    with cluster.http() as http:
        user, product = create_user(http), create_product(http, stock=1_000_000, price_cents=1)
    writer = Ledger(cluster.base_url, user, product).start()
    try:
        writer.wait_acks(5, timeout=60)
        yield writer
    finally:
        if writer.stopped == 0.0:
            writer.stop()
        print(json.dumps(writer.summary()))


def _api_started(cluster: Cluster) -> str:
    return str(cluster.container("api").attrs["State"]["StartedAt"])


def _serving_after(ledger: Ledger, count: int = 5, timeout: float = 120) -> None:
    """The writer gets `count` more acknowledgements: the API serves writes again by itself."""
    ledger.wait_acks(count, timeout)


def test_losing_an_etcd_member_changes_nothing_for_writers(
    cluster: Cluster, ledger: Ledger
) -> None:
    api_started, leader = _api_started(cluster), cluster.leader()
    # The raft leader: the harder loss (etcd elects another before it can write again).
    member = faults.etcd_leader(cluster)
    cluster.container(member).kill()
    lost_at = time.monotonic()
    # Two of Patroni's loops and more: the leader renews its key through the other members.
    while time.monotonic() - lost_at < 20:
        assert cluster.leader() == leader
        time.sleep(2)
    _serving_after(ledger)
    ledger.stop()
    faults.assert_ledger_holds(cluster, ledger, leader, api_started)
    assert cluster.leader() == leader, "the leader changed"
    assert not ledger.failures, (
        f"writes failed with two etcd members of three: {ledger.failures}"
        f"{faults.evidence(cluster, leader)}"
    )
    cluster.container(member).start()
    cluster.wait_healthy(member, timeout=120)


def test_make_switchover_refuses_a_candidate_that_is_not_a_healthy_sync_standby(
    cluster: Cluster,
) -> None:
    members = faults.wait_healthy(cluster)
    leader = next(m["Member"] for m in members if m["Role"] == "Leader")
    replica = next(m["Member"] for m in members if m["Role"] == "Replica")
    for candidate, says in (
        ("patroni9", "not a member"),
        (leader, "already the leader"),
        (replica, "asynchronous replica"),
    ):
        result = cluster.make_target("switchover", f"CANDIDATE={candidate}")
        assert result.returncode != 0, result.stdout
        assert says in result.stderr, result.stderr
    assert cluster.leader() == leader


def test_a_switchover_under_load_loses_nothing_and_fails_only_with_503(
    cluster: Cluster, ledger: Ledger
) -> None:
    members = faults.wait_healthy(cluster)
    api_started = _api_started(cluster)
    old = next(m["Member"] for m in members if m["Role"] == "Leader")
    standby = next(m["Member"] for m in members if m["Role"] == "Sync Standby")
    result = cluster.make_target("switchover")
    assert result.returncode == 0, result.stdout + result.stderr
    # It says what happened: the handover and the new table.
    assert f"switchover: {old} (leader) -> {standby}" in result.stdout, result.stdout
    assert f'Successfully switched over to "{standby}"' in result.stdout, result.stdout
    assert cluster.leader() == standby
    _serving_after(ledger)
    ledger.stop()
    faults.assert_ledger_holds(cluster, ledger, standby, api_started)
    members = faults.wait_healthy(cluster)
    assert faults.roles(members)[old] in ("Replica", "Sync Standby")


def _lose_the_leader(cluster: Cluster, ledger: Ledger, lose: str) -> None:
    """The leader's container stopped or killed under the writer: the sync standby takes over,
    nothing acknowledged is lost, and the old leader, started again, rejoins with every order."""
    members = faults.wait_healthy(cluster)
    api_started = _api_started(cluster)
    old = next(m["Member"] for m in members if m["Role"] == "Leader")
    standby = next(m["Member"] for m in members if m["Role"] == "Sync Standby")
    getattr(cluster.container(old), lose)()
    assert faults.wait_replaced(cluster, old) == standby
    _serving_after(ledger)
    ledger.stop()
    faults.assert_ledger_holds(cluster, ledger, standby, api_started)
    if lose == "kill":
        assert ledger.failures, "no request failed: was the leader really lost?"
    cluster.container(old).start()
    members = faults.wait_healthy(cluster)
    assert faults.roles(members)[old] in ("Replica", "Sync Standby")
    faults.wait_orders(cluster, old, ledger.user, sorted(ledger.acked_ids()))


def test_a_stopped_leader_container_is_replaced_and_rejoins_as_a_replica(
    cluster: Cluster, ledger: Ledger
) -> None:
    # docker stop: Patroni's clean stop (SIGTERM) releases the leader key on its way out (the
    # container's stop_grace_period, 60 s, lets it finish).
    _lose_the_leader(cluster, ledger, "stop")


def test_a_killed_leader_container_loses_its_key_when_the_lease_expires(
    cluster: Cluster, ledger: Ledger
) -> None:
    # The machine lost: nothing releases the key; the others wait for its lease (ttl) to expire.
    _lose_the_leader(cluster, ledger, "kill")


def test_a_partitioned_leader_demotes_itself_and_rejoins_rewound_on_the_new_timeline(
    cluster: Cluster, ledger: Ledger
) -> None:
    members = faults.wait_healthy(cluster)
    api_started = _api_started(cluster)
    old = next(m["Member"] for m in members if m["Role"] == "Leader")
    standby = next(m["Member"] for m in members if m["Role"] == "Sync Standby")
    old_tl = faults.timeline(members, old)
    cluster.node_psql(old, "CREATE TABLE IF NOT EXISTS fault_marker (note text)", "postgres")

    faults.disconnect(cluster, old)
    cut = time.time()
    # WAL that only the isolated leader gets: a commit that does not wait for the standby. It
    # may never be acknowledged by any node but this one, and must be gone after the rejoin.
    cluster.node_psql(
        old, "SET synchronous_commit = local; INSERT INTO fault_marker VALUES ('isolated')",
        "postgres",
    )  # fmt: skip
    # The isolated leader cannot renew its key: it stops taking writes (Patroni stops its
    # PostgreSQL) before the lease can expire elsewhere, and never takes one for the API again.
    deadline = time.monotonic() + faults.REPLACED_BOUND_S
    while faults.accepts_writes(cluster, old):
        assert time.monotonic() < deadline, f"{old} still writable while cut off"
        time.sleep(1)
    new = faults.wait_replaced(cluster, old)
    assert new == standby
    _serving_after(ledger)
    ledger.stop()
    faults.assert_ledger_holds(cluster, ledger, new, api_started)

    # The hardest moment to rejoin at: the new leader quiet right after a segment switch, so
    # the recovery point pg_rewind sets lies past its last WAL record (pgstack-rewind's reason).
    idle_at = faults.quiet_after_a_segment_switch(cluster, new)
    faults.reconnect(cluster, old)
    members = faults.wait_healthy(cluster)
    new_tl = faults.timeline(members, new)
    assert new_tl > old_tl
    faults.wait_streaming(cluster, old, new_tl)
    # The divergent WAL was rewound away: Patroni says so, the control file is on the new
    # timeline, and neither the marker nor an unacknowledged order survived.
    log = faults.patroni_log(cluster, old, since=cut)
    assert "running pg_rewind from" in log, log[-3000:]
    # pg_rewind's recovery point was the quiet leader's insert position (idle_at) or later; the
    # record pgstack-rewind wrote on it right after the rewind ends past that point.
    wrote = re.search(r"pgstack-rewind: wrote a WAL record on the source at (\S+)", log)
    assert wrote, log[-3000:]
    assert faults.lsn(wrote[1]) > faults.lsn(idle_at), (wrote[1], idle_at)
    # A standby's control file moves to a timeline at its first restartpoint there: a
    # checkpoint on the leader, replayed, then one on the old leader.
    deadline, tli, control = time.monotonic() + 60, 0, ""
    while tli != new_tl and time.monotonic() < deadline:
        cluster.node_psql(new, "CHECKPOINT", "postgres")
        time.sleep(1)
        cluster.node_psql(old, "CHECKPOINT", "postgres")
        control = cluster.exec(old, "pg_controldata", user="postgres")[1]
        tli = int(control.split("Latest checkpoint's TimeLineID:")[1].split()[0])
    assert tli == new_tl, control
    # The isolated commit was never acknowledged. It may be gone, or it may have reached the new
    # leader through the shared WAL archive (the cut-off leader archives its last segments while
    # it stops, and the standby replays the archive before it promotes): either way the rejoined
    # node now holds exactly the new leader's history, nothing of its own.
    marker = "SELECT count(*) FROM fault_marker"
    deadline = time.monotonic() + 30
    while cluster.node_psql(old, marker, "postgres") != cluster.node_psql(new, marker, "postgres"):
        assert time.monotonic() < deadline, f"{old} kept a write the new leader {new} lacks"
        time.sleep(1)
    on_old = set(faults.orders_on(cluster, old, ledger.user))
    assert on_old <= set(faults.orders_on(cluster, new, ledger.user))
