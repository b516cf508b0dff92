"""Backups in the cluster (docker-compose.ha.yml's backup service; services/backup/README.md, "In
the cluster"): the leader archives WAL with pgBackRest, `make ha-backup` copies the files from a
standby, and a failover changes neither -- the new leader archives its new timeline into the same
repository and the next backup works. `make ha-restore` refuses a target outside the window
without touching the cluster, and recovers the whole cluster to a time between two orders:
exactly the rows before it, on every node, the replicas cloned again on the new timeline; and a
recovery that fails puts the previous cluster back, with every row. Its etcd step outwaits the
key a killed leader leaves, and says at once when etcd is gone. One cluster for the module;
the tests run in file order (each changes the leader or the data)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from typing import Any

import httpx

from tests.ha.cluster import Cluster, healthy
from tests.stack.compose import REPO, create_product, create_user

# A new leader within ttl + loop_wait, and a crashed one back as a replica, on a loaded host.
FAILOVER_BOUND_S = 120.0
PGBACKREST_REPO = "/var/lib/pgstack-backup/pgbackrest"
# A whole recovery (check, safety dump, stop, restore, replay, a backup, the replicas) took 91 s
# by hand on a quiet 2-core host.
RESTORE_BOUND_S = 600


def _pgbackrest(cluster: Cluster, *args: str) -> str:
    code, out = cluster.exec(
        "backup", "pgbackrest", "--stanza=pgstack", "--log-level-stderr=error", *args,
        user="postgres",
    )  # fmt: skip
    assert code == 0, f"pgbackrest {' '.join(args)} failed ({code}): {out}"
    return out


def _info(cluster: Cluster) -> dict[str, Any]:
    return dict(json.loads(_pgbackrest(cluster, "info", "--output=json"))[0])


def _timeline(wal: str) -> int:
    return int(wal[:8], 16)


def _leader_timeline(members: list[dict[str, Any]]) -> int:
    return int(next(m["TL"] for m in members if m["Role"] == "Leader"))


def _backup_came_from_a_standby(cluster: Cluster, label: str) -> bool:
    code, _ = cluster.exec(
        "backup", "grep", "-x", "option-backup-standby=true",
        f"{PGBACKREST_REPO}/backup/pgstack/{label}/backup.manifest", user="postgres",
    )  # fmt: skip
    return code == 0


def _ha_backup(cluster: Cluster) -> dict[str, Any]:
    """`make ha-backup`; the newest physical backup it added."""
    before = {b["label"] for b in _info(cluster).get("backup", [])}
    result = cluster.make_target("ha-backup")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    added = [b for b in _info(cluster)["backup"] if b["label"] not in before]
    assert len(added) == 1, added
    return dict(added[0])


def test_only_the_leader_archives_wal(cluster: Cluster) -> None:
    members = cluster.wait_members(healthy, timeout=60, what="a healthy cluster")
    for member in members:
        node = member["Member"]
        # A switch of WAL on the leader gives it something to archive at once.
        if member["Role"] == "Leader":
            cluster.node_psql(node, "SELECT pg_switch_wal()", database="postgres")
    leader = next(m["Member"] for m in members if m["Role"] == "Leader")
    deadline = time.monotonic() + 60
    while int(cluster.node_psql(leader, "SELECT archived_count FROM pg_stat_archiver",
                                database="postgres")) == 0:  # fmt: skip
        assert time.monotonic() < deadline, "the leader archived nothing in 60 s"
        time.sleep(1)
    # Archiving fails until the backup service has created the stanza (it starts after the
    # nodes); PostgreSQL keeps those files and retries. Since then, nothing has failed.
    recovered = cluster.node_psql(
        leader, "SELECT last_failed_time IS NULL OR last_failed_time < last_archived_time "
        "FROM pg_stat_archiver",
    )  # fmt: skip
    assert recovered == "t"
    for member in members:
        if member["Role"] != "Leader":
            archived = cluster.node_psql(
                member["Member"], "SELECT archived_count FROM pg_stat_archiver"
            )
            assert archived == "0", f"{member['Member']} archived {archived} files as a replica"


def test_make_ha_backup_copies_from_a_standby_and_lists_the_window(cluster: Cluster) -> None:
    cluster.wait_members(healthy, timeout=60, what="a healthy cluster")
    taken = _ha_backup(cluster)
    assert not taken["error"], taken
    assert _backup_came_from_a_standby(cluster, taken["label"]), taken["label"]
    listing = cluster.make_target("ha-backup-list")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert taken["label"] in listing.stdout, listing.stdout
    assert "point-in-time recovery: any time between" in listing.stdout, listing.stdout
    code, out = cluster.exec("backup", "pgstack-backup", "check-archive", user="postgres")
    assert code == 0, out


def test_after_a_failover_the_new_leader_archives_its_timeline_and_backups_go_on(
    cluster: Cluster,
) -> None:
    members = cluster.wait_members(healthy, timeout=60, what="a healthy cluster before the crash")
    old_leader = next(m["Member"] for m in members if m["Role"] == "Leader")
    old_timeline = _leader_timeline(members)

    # kill -9 of the leader's postmaster (as tests/ha/test_cluster.py): Patroni fails over.
    code, out = cluster.exec(
        old_leader, "bash", "-c", 'kill -KILL "$(head -1 "$PGDATA/postmaster.pid")"',
        user="postgres",
    )  # fmt: skip
    assert code == 0, out
    members = cluster.wait_members(
        lambda ms: healthy(ms) and _leader_timeline(ms) > old_timeline
        and next(m["Member"] for m in ms if m["Role"] == "Leader") != old_leader,
        timeout=FAILOVER_BOUND_S, what="a new leader on a new timeline, the old one following",
    )  # fmt: skip
    new_timeline = _leader_timeline(members)

    # pgbackrest check switches WAL on the (new) primary and waits until it is archived.
    _pgbackrest(cluster, "check")
    archive = _info(cluster)["archive"][0]
    assert _timeline(archive["max"]) == new_timeline, archive
    code, out = cluster.exec("backup", "pgstack-backup", "check-archive", user="postgres")
    assert code == 0, out

    taken = _ha_backup(cluster)
    assert not taken["error"], taken
    assert _timeline(taken["archive"]["start"]) == new_timeline, taken
    assert _backup_came_from_a_standby(cluster, taken["label"]), taken["label"]


def _make(cluster: Cluster, *args: str, timeout: float, **env: str
          ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """A Makefile target against this cluster, as Cluster.make_target, with a longer bound."""
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=REPO,
        env={**cluster.env, "HA_PROJECT_NAME": cluster.project, **env},
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _order(http: httpx.Client, user: int, product: int) -> int:
    response = http.post(
        "/api/orders",
        json={"user_id": user, "items": [{"product_id": product, "quantity": 1}]},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _orders_on(cluster: Cluster, node: str, user: int) -> list[int]:
    out = cluster.node_psql(node, f"SELECT id FROM orders WHERE user_id = {user} ORDER BY id")
    return [int(line) for line in out.splitlines()]


def test_a_target_outside_the_window_is_refused_and_nothing_is_touched(cluster: Cluster) -> None:
    before = cluster.wait_members(healthy, timeout=60, what="a healthy cluster")
    result = _make(cluster, "ha-restore", "TARGET_TIME=2020-01-01 00:00:00+00:00", "CONFIRM=1",
                   timeout=120)  # fmt: skip
    assert result.returncode != 0, result.stdout
    assert "outside the recoverable window: you can restore to any time between" in (
        result.stderr
    ), result.stdout + result.stderr
    assert "2/7" not in result.stdout, result.stdout  # no safety dump, no stop
    after = cluster.wait_members(healthy, timeout=10, what="the same healthy cluster")
    leader = [(m["Member"], m["TL"]) for m in before if m["Role"] == "Leader"]
    assert leader == [(m["Member"], m["TL"]) for m in after if m["Role"] == "Leader"]
    # Every container kept running (none was stopped or recreated).
    assert cluster.running_nodes() == ["patroni1", "patroni2", "patroni3"]


def _two_orders_around_a_target(
    cluster: Cluster, members: list[dict[str, Any]]
) -> tuple[int, int, int, str, int]:
    """(user, product, first order, a time read on the leader between them, second order)."""
    leader = next(m["Member"] for m in members if m["Role"] == "Leader")
    with cluster.http(timeout=20) as http:
        user = create_user(http)
        product = create_product(http, stock=100)
        first = _order(http, user, product)
        time.sleep(1.5)
        target = cluster.node_psql(leader, "SELECT now()")
        time.sleep(1.5)
        second = _order(http, user, product)
    return user, product, first, target, second


def test_make_ha_restore_recovers_the_cluster_to_a_time_between_two_orders(
    cluster: Cluster,
) -> None:
    members = cluster.wait_members(healthy, timeout=60, what="a healthy cluster")
    old_timeline = _leader_timeline(members)
    user, product, first, target, second = _two_orders_around_a_target(cluster, members)

    result = _make(cluster, "ha-restore", f"TARGET_TIME={target}", "CONFIRM=1",
                   timeout=RESTORE_BOUND_S)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    members = cluster.wait_members(
        lambda ms: healthy(ms) and _leader_timeline(ms) > old_timeline,
        timeout=FAILOVER_BOUND_S, what="three members on the recovered timeline",
    )  # fmt: skip
    # Exactly the rows committed before the target, on every node: the replicas were cloned
    # again from the recovered cluster, not left with the data after it.
    for member in members:
        assert _orders_on(cluster, member["Member"], user) == [first], member
    with cluster.http(timeout=20) as http:
        assert http.get(f"/api/orders/{first}").status_code == 200
        assert http.get(f"/api/orders/{second}").status_code == 404
        assert http.get(f"/api/products/{product}").json()["stock"] == 99
        _order(http, user, product)  # the API serves writes on the recovered cluster
    # Nothing is left of the recovery: no set-aside data, no bootstrap request.
    new_leader = next(m["Member"] for m in members if m["Role"] == "Leader")
    code, out = cluster.exec(new_leader, "bash", "-c", 'ls "${PGDATA%/*}"', user="postgres")
    assert (code, out.split()) == (0, ["pgdata"]), out
    # The recovered timeline is archived, and backed up.
    _pgbackrest(cluster, "check")
    info = _info(cluster)
    assert _timeline(info["archive"][0]["max"]) == _leader_timeline(members), info["archive"]
    assert _timeline(info["backup"][-1]["archive"]["start"]) == _leader_timeline(members)


def test_a_failed_recovery_puts_the_previous_cluster_back_with_every_row(cluster: Cluster) -> None:
    members = cluster.wait_members(healthy, timeout=60, what="a healthy cluster")
    old_timeline = _leader_timeline(members)
    leader = next(m["Member"] for m in members if m["Role"] == "Leader")
    user, product, first, target, second = _two_orders_around_a_target(cluster, members)

    # No time at all for the recovered node to lead: the recovery fails once it has started
    # (data set aside, replicas' copies gone, the restore under way) and must roll back.
    result = _make(cluster, "ha-restore", f"TARGET_TIME={target}", "CONFIRM=1",
                   timeout=RESTORE_BOUND_S, PITR_STALL_TIMEOUT="0")  # fmt: skip
    assert result.returncode != 0, result.stdout[-3000:]
    assert "the previous cluster is back" in result.stderr, result.stdout[-3000:] + result.stderr

    # Back on a timeline of its own, above whatever the failed recovery promoted, so the
    # replicas (cloned again) follow it.
    members = cluster.wait_members(
        lambda ms: healthy(ms) and _leader_timeline(ms) > old_timeline,
        timeout=FAILOVER_BOUND_S, what="the previous cluster back, three members",
    )  # fmt: skip
    assert next(m["Member"] for m in members if m["Role"] == "Leader") == leader
    for member in members:
        assert _orders_on(cluster, member["Member"], user) == [first, second], member
    with cluster.http(timeout=20) as http:
        _order(http, user, product)
    code, out = cluster.exec(leader, "bash", "-c", 'ls "${PGDATA%/*}"', user="postgres")
    assert (code, out.split()) == (0, ["pgdata"]), out


def _forget_cluster(cluster: Cluster) -> subprocess.CompletedProcess[str]:
    """ha-restore's step 4 on its own: the script sourced (which runs nothing), then the step."""
    return subprocess.run(
        ["bash", "-c", "source services/backup/ha-pitr-restore.sh && pitr_forget_cluster"],
        cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_removing_the_cluster_from_etcd_outwaits_a_killed_leaders_key_and_names_a_lost_etcd(
    cluster: Cluster,
) -> None:
    # Last in the module: it leaves the cluster stopped and gone from etcd.
    members = cluster.wait_members(healthy, timeout=60, what="a healthy cluster")
    leader = next(m["Member"] for m in members if m["Role"] == "Leader")
    for member in members:
        if member["Member"] != leader:
            cluster.container(member["Member"]).stop()
    # Killed, the leader cannot delete its key: it stays until its lease lapses (15 to 20 s
    # after the kill), and patronictl remove refuses while it is there.
    cluster.container(leader).kill()
    removed = _forget_cluster(cluster)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert "waiting up to 30 s for its lease to lapse" in removed.stderr, removed.stderr
    # The cluster is gone from etcd: nothing is left for a node to follow.
    root = (cluster.secrets_dir / "etcd_root_password").read_text().strip()
    code, out = cluster.container("etcd1").exec_run(
        ["etcdctl", "get", "--prefix", "--keys-only", "/service/pgstack/"],
        environment={"ETCDCTL_USER": "root", "ETCDCTL_PASSWORD": root},
    )  # fmt: skip
    assert (code, out.decode().strip()) == (0, ""), out

    # With etcd gone, patronictl alone would wait for it without end: the step says so in 15 s.
    cluster.compose("stop", "etcd1", "etcd2", "etcd3")
    lost = _forget_cluster(cluster)
    assert lost.returncode == 1, lost.stdout + lost.stderr
    assert "no answer from etcd in 15 s (patronictl remove)" in lost.stderr, lost.stderr
    assert "Failed to get list of machines" in lost.stderr, lost.stderr  # patronictl's words
    assert "waiting up to" not in lost.stderr, lost.stderr
