"""Backups in the cluster (docker-compose.ha.yml's backup service; services/backup/README.md, "In
the cluster"): the leader archives WAL with pgBackRest, `make ha-backup` copies the files from a
standby, and a failover changes neither -- the new leader archives its new timeline into the same
repository and the next backup works. One cluster for the module; the tests run in file order
(the failover changes the leader)."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.ha.cluster import Cluster, healthy

# A new leader within ttl + loop_wait, and a crashed one back as a replica, on a loaded host.
FAILOVER_BOUND_S = 120.0
REPO = "/var/lib/pgstack-backup/pgbackrest"


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
        f"{REPO}/backup/pgstack/{label}/backup.manifest", user="postgres",
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
