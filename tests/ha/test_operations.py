"""Operating the cluster with make: the db-* targets on its leader (HA=1), the split-brain alarm
(make cluster-check) on states produced for real (etcd lost whole included), a broken node
rebuilt (make ha-reinit), and the db-* targets again right after a failover. One cluster for the
module, in file order: the failover test runs last, because it changes the leader."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.ha.cluster import PATRONICTL, Cluster, healthy

# Patroni repairs a node within a few of its loops (loop_wait 10 s); generous on a loaded host.
REPAIR_BOUND_S = 150.0


def _role(members: list[dict[str, Any]], role: str) -> str:
    return next(m["Member"] for m in members if m["Role"] == role)


def _ok(result: Any) -> str:
    output = str(result.stdout + result.stderr)
    assert result.returncode == 0, output
    return output


def _wait_check_passes(cluster: Cluster, what: str) -> str:
    """make cluster-check until it passes (exit 0); fail with its last output."""
    deadline, output = time.monotonic() + REPAIR_BOUND_S, ""
    while time.monotonic() < deadline:
        result = cluster.make_target("cluster-check")
        output = result.stdout + result.stderr
        if result.returncode == 0:
            return output
        time.sleep(3)
    raise AssertionError(f"{what}: cluster-check still fails after {REPAIR_BOUND_S} s:\n{output}")


def test_the_db_targets_with_ha_1_act_on_the_leader_and_name_it(cluster: Cluster) -> None:
    leader = _role(cluster.wait_members(healthy, 60, "a healthy cluster"), "Leader")
    named = f"{cluster.project}: leader {leader}, timeline"

    status = cluster.make_target("db-status", "HA=1")
    assert named in _ok(status), status.stderr
    assert json.loads(status.stdout)["at_head"] is True, status.stdout
    deploy = cluster.make_target("db-deploy", "HA=1")
    assert '"event":"migrate"' in _ok(deploy), deploy.stdout
    check = cluster.make_target("db-check", "HA=1")
    assert "database check: OK" in _ok(check), check.stdout
    init = cluster.make_target("db-init", "HA=1")
    assert '"event": "db_init", "status": "ok"' in _ok(init), init.stdout

    refused = cluster.make_target("db-reset", "HA=1")
    assert refused.returncode != 0
    assert f"every table and row of {cluster.project}" in refused.stderr, refused.stderr
    assert "make db-reset HA=1 CONFIRM=1" in refused.stderr, refused.stderr
    _ok(cluster.make_target("db-reset", "HA=1", "CONFIRM=1"))
    _ok(cluster.make_target("db-seed", "HA=1"))
    # The seed was written on the leader (and streamed to the others).
    assert int(cluster.node_psql(leader, "SELECT count(*) FROM products")) > 0


def test_cluster_check_passes_on_a_healthy_cluster(cluster: Cluster) -> None:
    leader = _role(cluster.wait_members(healthy, 60, "a healthy cluster"), "Leader")
    result = cluster.make_target("cluster-check")
    output = _ok(result)
    assert f"OK: one writable node, the leader {leader}" in output, output
    assert "ALARM" not in output and "WARNING" not in output, output


def _until_setting(cluster: Cluster, node: str, name: str, value: str) -> None:
    """SHOW name on node until it answers value (Patroni applies a reload on its next loop)."""
    deadline, now = time.monotonic() + 60, ""
    while time.monotonic() < deadline:
        now = cluster.node_psql(node, f"SHOW {name}")
        if now == value:
            return
        time.sleep(1)
    raise AssertionError(f"{name} on {node} is still {now}, not {value}, 60 s after the reload")


def test_a_changed_host_setting_reaches_the_running_node_by_a_reload(cluster: Cluster) -> None:
    """What a deploy runs when a host's Patroni settings changed (roles/pgstack_db): the image's
    pgstack-patroni-reload. The node takes the file's values without a restart and the leader
    keeps leading; a file taken away takes its values with it."""
    leader = _role(cluster.wait_members(healthy, 60, "a healthy cluster"), "Leader")
    started = cluster.node_psql(leader, "SELECT pg_postmaster_start_time()")
    default = cluster.node_psql(leader, "SHOW work_mem")
    assert default != "12MB"
    # The nodes' root file system is read-only: the host's settings directory is put on /tmp.
    node = cluster.container(leader)
    settings = "/tmp/patroni.d"  # noqa: S108 (a tmpfs inside the node container)

    def reload() -> str:
        code, said = node.exec_run(
            ["pgstack-patroni-reload"], environment={"PGSTACK_PATRONI_HOST_DIR": settings}
        )
        assert code == 0 and b'"event": "patroni_reload"' in said, said
        return str(said.decode())

    written = node.exec_run([
        "sh", "-c",
        f"mkdir -p {settings} && "
        f"printf 'postgresql:\\n  parameters:\\n    work_mem: 12MB\\n' > {settings}/test.yml",
    ])  # fmt: skip
    assert written.exit_code == 0, written.output
    try:
        assert "15-test.yml" in reload()
        _until_setting(cluster, leader, "work_mem", "12MB")
    finally:
        node.exec_run(["rm", "-rf", settings])
        said = reload()
    assert "15-test.yml" not in said, said
    _until_setting(cluster, leader, "work_mem", default)
    assert cluster.node_psql(leader, "SELECT pg_postmaster_start_time()") == started
    assert cluster.leader() == leader


def test_cluster_check_alarms_when_the_synchronous_standby_is_gone(cluster: Cluster) -> None:
    members = cluster.wait_members(healthy, 60, "a healthy cluster")
    leader = _role(members, "Leader")
    replicas = sorted(m["Member"] for m in members if m["Member"] != leader)
    cluster.compose("stop", *replicas)
    try:
        result = cluster.make_target("cluster-check")
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        assert f"ALARM: NO SYNCHRONOUS STANDBY: {leader} acknowledges commits on its own" in output
        for replica in replicas:
            assert f"WARNING: {replica} is down" in output, output
    finally:
        cluster.compose("start", *replicas)
    cluster.wait_members(healthy, REPAIR_BOUND_S, "the replicas back")
    _wait_check_passes(cluster, "replicas started again")


def test_with_every_etcd_member_gone_no_node_writes_and_the_targets_say_so_in_bounded_time(
    cluster: Cluster,
) -> None:
    cluster.wait_members(healthy, 60, "a healthy cluster")
    cluster.compose("stop", "etcd1", "etcd2", "etcd3")
    try:
        # patronictl alone waits for etcd without end; the targets bound it (15 s a node), so
        # these return (make_target's own bound is 120 s) and name etcd.
        status = cluster.make_target("cluster-status")
        assert status.returncode != 0, status.stdout
        assert "could read the cluster from etcd" in status.stderr, status.stderr
        # The leader cannot renew its key: it demotes itself once its lease would have lapsed.
        deadline, output = time.monotonic() + REPAIR_BOUND_S, ""
        while "writable now: none" not in output:
            assert time.monotonic() < deadline, f"a node still writes without etcd:\n{output}"
            result = cluster.make_target("cluster-check")
            output = result.stdout + result.stderr
            assert result.returncode != 0, output
            assert "ALARM: NO ANSWER FROM PATRONI" in output, output
    finally:
        cluster.compose("start", "etcd1", "etcd2", "etcd3")
    cluster.wait_members(healthy, REPAIR_BOUND_S, "the cluster back with etcd")
    _wait_check_passes(cluster, "etcd back")


def test_cluster_check_alarms_on_two_writable_nodes_and_patroni_repairs_it_on_resume(
    cluster: Cluster,
) -> None:
    members = cluster.wait_members(healthy, 60, "a healthy cluster")
    leader, rogue = _role(members, "Leader"), _role(members, "Replica")
    code, out = cluster.exec(leader, *PATRONICTL, "pause", "--wait", user="postgres")
    assert code == 0, out
    try:
        # By hand, behind Patroni's back: a replica promoted while Patroni does not watch.
        code, out = cluster.exec(
            rogue, "bash", "-c", 'pg_ctl promote --wait --pgdata "$PGDATA"', user="postgres"
        )
        assert code == 0, out
        cluster.node_psql(rogue, "CREATE TABLE split_brain_write (id int)")
        result = cluster.make_target("cluster-check")
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        pair = " and ".join(sorted((leader, rogue)))
        assert f"ALARM: SPLIT BRAIN: {pair} both accept writes; Patroni's leader is {leader}" in (
            output
        )
        assert f"make ha-reinit NODE={rogue}" in output and "Patroni is paused" in output, output
    finally:
        code, out = cluster.exec(leader, *PATRONICTL, "resume", "--wait", user="postgres")
        assert code == 0, out
    # Patroni demotes the rogue and rewinds it onto the leader's history: its write is gone.
    _wait_check_passes(cluster, "resume after a manual promote")
    cluster.wait_members(healthy, 60, "a healthy cluster after the repair")
    assert cluster.node_psql(rogue, "SELECT pg_is_in_recovery()") == "t"
    assert cluster.node_psql(rogue, "SELECT to_regclass('split_brain_write') IS NULL") == "t"
    # Nothing of the rogue's timeline reached the shared archive (pgstack-leader-guard): its
    # history file there would send every replica after it, and none could start.
    rogue_history = f"{int(members[0]['TL']) + 1:08X}.history"
    code, listing = cluster.exec(
        "backup", "pgbackrest", "--stanza=pgstack", "repo-ls", "--recurse", "archive/pgstack",
        user="postgres",
    )  # fmt: skip
    assert code == 0, listing
    assert rogue_history not in listing, listing


def test_ha_reinit_refuses_a_bad_node_and_the_leader(cluster: Cluster) -> None:
    leader = _role(cluster.wait_members(healthy, 60, "a healthy cluster"), "Leader")
    for bad in ("NODE=patroni9", "NODE="):
        result = cluster.make_target("ha-reinit", bad)
        assert result.returncode != 0, result.stdout
        assert "is not a node of this cluster; give one of patroni1, patroni2, patroni3" in (
            result.stderr
        )
    result = cluster.make_target("ha-reinit", f"NODE={leader}")
    assert result.returncode != 0, result.stdout
    assert f"{leader} is the leader; it cannot be rebuilt from itself" in result.stderr
    assert "make switchover" in result.stderr


@pytest.mark.parametrize("damage", ["pg_control removed", "container stopped"])
def test_ha_reinit_rebuilds_a_broken_replica_from_the_leader(cluster: Cluster, damage: str) -> None:
    members = cluster.wait_members(healthy, 60, "a healthy cluster")
    leader, node = _role(members, "Leader"), _role(members, "Replica")
    if damage == "pg_control removed":
        # The node's PostgreSQL crashes and cannot start again: Patroni alone does not repair it.
        code, out = cluster.exec(
            node, "bash", "-c",
            'pid=$(head -1 "$PGDATA/postmaster.pid"); rm "$PGDATA/global/pg_control"; '
            'kill -KILL "$pid"',
            user="postgres",
        )  # fmt: skip
        assert code == 0, out
        cluster.wait_members(
            lambda ms: any(m["Member"] == node and m["State"] == "start failed" for m in ms),
            REPAIR_BOUND_S, f"{node} failing to start",
        )  # fmt: skip
    else:
        cluster.compose("stop", node)
    result = cluster.make_target("ha-reinit", f"NODE={node}", timeout=400)
    output = _ok(result)
    assert f"rebuilding {node} from {leader}" in output, output
    assert f"{node} is streaming from {leader} again" in output, output
    cluster.wait_members(healthy, 60, "a healthy cluster after the rebuild")
    # It streams: a write on the leader arrives there.
    cluster.node_psql(leader, "CREATE TABLE IF NOT EXISTS reinit_probe (n int)")
    cluster.node_psql(leader, "INSERT INTO reinit_probe VALUES (1)")
    deadline = time.monotonic() + 30
    while cluster.node_psql(node, "SELECT count(*) FROM reinit_probe") == "0":
        assert time.monotonic() < deadline, f"{node} does not replay the leader's writes"
        time.sleep(0.5)
    cluster.node_psql(leader, "DROP TABLE reinit_probe")


# Connects N times through HAProxy (postgres:PORT) from the backend network, as the migrate job
# would, and prints what each server says about itself.
_THROUGH_HAPROXY = """
import json, os, sys, psycopg
password = open(os.environ["PGSTACK_ADMIN_DATABASE_PASSWORD_FILE"]).read().strip()
seen = []
for _ in range(int(sys.argv[2])):
    with psycopg.connect(host="postgres", port=int(sys.argv[1]), user="app_owner",
                         dbname="pgstack", password=password, connect_timeout=5) as conn:
        seen.append(conn.execute("SELECT pg_is_in_recovery(), host(inet_server_addr())").fetchone())
print(json.dumps(seen))
"""


def _through_haproxy(cluster: Cluster, port: int, count: int) -> list[list[Any]]:
    result = cluster.compose(
        "run", "--rm", "--no-deps", "--no-TTY", "migrate",
        "python3", "-c", _THROUGH_HAPROXY, str(port), str(count), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


def test_port_5433_reaches_only_the_replicas_in_turn_and_5432_the_leader(cluster: Cluster) -> None:
    cluster.wait_members(healthy, 60, "a healthy cluster")
    time.sleep(3)  # HAProxy marks a node up after its next check (1 s)
    replicas = _through_haproxy(cluster, 5433, 6)
    assert all(in_recovery for in_recovery, _ in replicas), replicas
    assert len({address for _, address in replicas}) == 2, replicas  # round robin over both
    leader = _through_haproxy(cluster, 5432, 2)
    assert [in_recovery for in_recovery, _ in leader] == [False, False], leader


def test_after_a_failover_the_db_targets_reach_and_name_the_new_leader(cluster: Cluster) -> None:
    members = cluster.wait_members(healthy, 60, "a healthy cluster before the crash")
    old_leader, standby = _role(members, "Leader"), _role(members, "Sync Standby")
    code, out = cluster.exec(
        old_leader, "bash", "-c", 'kill -KILL "$(head -1 "$PGDATA/postmaster.pid")"',
        user="postgres",
    )  # fmt: skip
    assert code == 0, out
    # At once, while etcd still names the dead leader: the targets wait for the new one.
    status = cluster.make_target("db-status", "HA=1")
    assert f"{cluster.project}: leader {standby}, timeline" in _ok(status), status.stderr
    assert json.loads(status.stdout)["at_head"] is True
    deploy = cluster.make_target("db-deploy", "HA=1")
    assert f"leader {standby}" in _ok(deploy) and '"event":"migrate"' in deploy.stdout
    assert "database check: OK" in _ok(cluster.make_target("db-check", "HA=1"))
    # The crashed leader rejoins as a replica on the new timeline; the alarm clears.
    output = _wait_check_passes(cluster, "the old leader rejoining")
    assert f"OK: one writable node, the leader {standby}" in output, output
