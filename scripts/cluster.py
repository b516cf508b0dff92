#!/usr/bin/env python3
"""cluster.py -- the PostgreSQL cluster (docker-compose.ha.yml) node by node, from the host.

Usage (the Makefile sets COMPOSE_PROJECT_NAME and COMPOSE_FILE to the cluster's):
  cluster.py leader [--wait S]   print the leader's name once Patroni names a running one
  cluster.py check               the split-brain alarm (make cluster-check); exit codes below
  cluster.py reinit NODE         rebuild NODE from the leader (make ha-reinit NODE=patroni3)
  cluster.py switchover [NODE]   hand the leader to NODE, default the sync standby (switchover)

`check` asks every node through `docker compose exec`, not over the cluster network, so a
partition between the nodes does not hide one of them: its PostgreSQL (pg_is_in_recovery() over
its own socket) and its Patroni (GET /patroni on its REST API). It sets that beside what Patroni
has agreed on in etcd (`patronictl list`): one leader, one timeline, a synchronous standby.
Standard library only: it runs wherever `make` does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

PATRONICTL = ("patronictl", "--config-file", "/run/pgstack-patroni")
# Run inside a node as postgres: its PostgreSQL's own answer and its Patroni's, as one JSON line.
_PROBE = """
import json, subprocess, urllib.request
out = {}
r = subprocess.run(["psql", "-XAtq", "-d", "postgres", "-c", "SELECT pg_is_in_recovery()"],
                   capture_output=True, text=True, timeout=10)
out["writable"] = {"f": True, "t": False}.get(r.stdout.strip())
if out["writable"] is None:
    out["pg_error"] = (r.stderr.strip().splitlines() or ["no answer"])[0].replace("psql: ", "")
try:
    with urllib.request.urlopen("http://127.0.0.1:8008/patroni", timeout=5) as response:
        out["patroni"] = json.load(response)
except Exception as exc:
    out["patroni_error"] = str(exc)
print(json.dumps(out))
"""


class Exit(IntEnum):
    OK = 0
    ALARM = 1  # two writable nodes, no leader, the leader not writable, no synchronous standby
    USAGE = 2  # a bad NODE, the leader given to reinit, ...
    DEGRADED = 3  # writes are safe, but a node is down, behind or on another timeline, or paused


@dataclass
class Node:
    """One node as it answers for itself (None: it did not answer)."""

    name: str
    writable: bool | None = None
    patroni: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Verdict:
    alarms: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def exit(self) -> Exit:
        return Exit.ALARM if self.alarms else Exit.DEGRADED if self.warnings else Exit.OK


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def diagnose(nodes: list[Node], members: list[dict[str, Any]] | None) -> Verdict:
    """The alarm's logic, on what the nodes said (`nodes`) and what Patroni agreed on in etcd
    (`members`: patronictl list's rows; None when no node's patronictl answered)."""
    verdict = Verdict()
    alarm, warn = verdict.alarms.append, verdict.warnings.append
    writable = [n.name for n in nodes if n.writable]
    if members is None:
        alarm(
            "NO ANSWER FROM PATRONI: no node's patronictl can read the cluster from etcd, so no "
            "node can hold or renew the leader key; writable now: "
            f"{_and(writable) if writable else 'none'}. Check etcd and the nodes: make ha-ps, "
            "make ha-logs SERVICE=etcd1 (a leader needs a majority of the three members)."
        )
        return verdict
    by_name = {m["Member"]: m for m in members}
    leaders = [m["Member"] for m in members if m["Role"] == "Leader"]
    leader = leaders[0] if leaders else None
    if len(writable) > 1:
        others = [n for n in writable if n != leader]
        both = "both" if len(writable) == 2 else "all"
        alarm(
            f"SPLIT BRAIN: {_and(writable)} {both} accept writes; Patroni's leader is "
            f"{leader or 'nobody'}. Writes to {_and(others)} are outside the cluster's history "
            "and are lost when it rejoins (HAProxy sends clients only to the leader; anything "
            f"connected to {_and(others)} directly is not). If Patroni is paused, `patronictl "
            f"resume` lets it demote and rewind {_and(others)}; otherwise rebuild it from the "
            f"leader: make ha-reinit NODE={others[0]}. Dump what you need from it first."
        )
    elif writable and leader and writable != [leader]:
        alarm(
            f"{writable[0]} accepts writes but Patroni's leader is {leader}: {writable[0]}'s "
            f"writes will be lost. Rebuild it from the leader: make ha-reinit NODE={writable[0]}."
        )
    if leader is None:
        alarm(
            "NO LEADER: Patroni names no leader, so writes fail (the API answers 503). A failover "
            "takes up to ttl (30 s); if it lasts, read make ha-logs SERVICE=patroni1 (and 2, 3): "
            "no node may be healthy enough to promote, or etcd has lost its majority (make ha-ps)."
        )
    else:
        node = next((n for n in nodes if n.name == leader), None)
        if node is None or node.writable is not True:
            why = "does not answer" if node is None or node.writable is None else "is read-only"
            alarm(
                f"THE LEADER DOES NOT TAKE WRITES: Patroni's leader is {leader}, but its "
                f"PostgreSQL {why}{f' ({node.error})' if node and node.error else ''}. Patroni "
                f"retries for ttl (30 s), then fails over; read make ha-logs SERVICE={leader}."
            )
        sync = [m["Member"] for m in members if m["Role"] == "Sync Standby"]
        if not sync:
            alarm(
                f"NO SYNCHRONOUS STANDBY: {leader} acknowledges commits on its own "
                "(synchronous_mode_strict is off), so losing it now loses them. Bring a replica "
                "back: make cluster-status shows which is down; start it (make ha-up) or rebuild "
                "it: make ha-reinit NODE=<node>."
            )
        timeline = by_name[leader].get("TL")
        for m in members:
            tl = m.get("TL")
            if m["Member"] != leader and tl not in (None, "") and tl != timeline:
                warn(
                    f"{m['Member']} is on timeline {tl}, the leader on {timeline}: it has not "
                    "followed the new leader yet (Patroni rewinds it within a minute of a "
                    f"failover); if it stays there, make ha-reinit NODE={m['Member']}."
                )
    answering = sum(1 for n in nodes if n.writable is not None)
    for n in nodes:
        state = by_name.get(n.name, {}).get("State")
        if n.name not in by_name or n.writable is None:
            why = f"Patroni: {state}; " if state else ""
            warn(
                f"{n.name} is down ({why}{n.error or 'not in patronictl list'}): the cluster "
                f"runs on {answering} of {len(nodes)} nodes. Read make ha-logs SERVICE={n.name}; "
                "start it (make ha-up starts what is stopped) or rebuild it: "
                f"make ha-reinit NODE={n.name}."
            )
        elif state not in ("running", "streaming"):
            warn(f"{n.name} is {state}, not streaming; make ha-logs SERVICE={n.name}.")
    if any(n.patroni and n.patroni.get("pause") for n in nodes):
        warn(
            "Patroni is paused (maintenance mode): it will neither fail over nor repair a node "
            "until `patronictl resume` (make cluster-status shows it)."
        )
    return verdict


# ---- talking to the nodes (docker compose exec with the Makefile's project and file) ----------


def _compose(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "compose", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _exec(node: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return _compose("exec", "--no-TTY", "--user", "postgres", node, *cmd, timeout=timeout)


def node_names() -> list[str]:
    """The Patroni nodes, as docker-compose.ha.yml names them."""
    result = _compose("config", "--services")
    if result.returncode != 0:
        raise SystemExit(f"cluster.py: docker compose config failed: {result.stderr.strip()}")
    return sorted(s for s in result.stdout.split() if s.startswith("patroni"))


def probe(name: str) -> Node:
    result = _exec(name, "python3", "-c", _PROBE, timeout=30)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return Node(name, error=lines[-1] if lines else f"exit {result.returncode}")
    data = json.loads(result.stdout)
    return Node(
        name,
        writable=data.get("writable"),
        patroni=data.get("patroni"),
        error=data.get("pg_error") or data.get("patroni_error"),
    )


def members(nodes: list[str]) -> list[dict[str, Any]] | None:
    """patronictl list from the first node that answers (all read the same keys in etcd)."""
    for name in nodes:
        # patronictl waits for etcd without end when no member answers; one call takes a second.
        result = _exec(name, "timeout", "15", *PATRONICTL, "list", "--format", "json")
        if result.returncode == 0:
            return list(json.loads(result.stdout or "[]"))
    return None


def _table(nodes: list[Node], rows: list[dict[str, Any]] | None) -> str:
    by_name = {m["Member"]: m for m in rows or []}
    lines = [f"{'node':<10} {'PostgreSQL':<12} {'Patroni role':<14} {'state':<10} TL"]
    for n in nodes:
        pg = "writable" if n.writable else "read-only" if n.writable is False else "no answer"
        m = by_name.get(n.name, {})
        lines.append(
            f"{n.name:<10} {pg:<12} {m.get('Role', '-'):<14} {m.get('State', '-'):<10} "
            f"{m.get('TL', '-')}"
        )
    return "\n".join(lines)


def check() -> Exit:
    names = node_names()
    with ThreadPoolExecutor(len(names)) as pool:
        nodes = list(pool.map(probe, names))
    rows = members(names)
    verdict = diagnose(nodes, rows)
    print(_table(nodes, rows))
    print()
    for line in verdict.alarms:
        print(f"ALARM: {line}")
    for line in verdict.warnings:
        print(f"WARNING: {line}")
    if verdict.exit is Exit.OK:
        leader = next(m["Member"] for m in rows or [] if m["Role"] == "Leader")
        print(f"OK: one writable node, the leader {leader}; one timeline; a synchronous standby.")
    return verdict.exit


def leader(wait: float) -> str | None:
    """The leader's name once Patroni names one and its PostgreSQL, asked directly, takes writes
    (None after `wait` s). Right after a crash etcd still names the old leader "running" until
    Patroni's next loop; its own PostgreSQL does not answer."""
    names = node_names()
    deadline = time.monotonic() + wait
    while True:
        rows = members(names) or []
        found = [m for m in rows if m["Role"] == "Leader" and m["State"] == "running"]
        if found and probe(found[0]["Member"]).writable:
            project = os.environ.get("COMPOSE_PROJECT_NAME", "the cluster")
            print(f"{project}: leader {found[0]['Member']}, timeline {found[0].get('TL')}",
                  file=sys.stderr)  # fmt: skip
            return str(found[0]["Member"])
        if time.monotonic() >= deadline:
            return None
        time.sleep(1)


def reinit(node: str, timeout: float) -> Exit:
    names = node_names()
    if node not in names:
        print(f"cluster.py: NODE={node or '(empty)'} is not a node of this cluster; give one of "
              f"{', '.join(names)}: make ha-reinit NODE={names[-1]}", file=sys.stderr)  # fmt: skip
        return Exit.USAGE
    current = leader(wait=60)
    if current is None:
        print("cluster.py: the cluster has no leader to copy from; see make cluster-check",
              file=sys.stderr)  # fmt: skip
        return Exit.ALARM
    if node == current:
        print(f"cluster.py: {node} is the leader; it cannot be rebuilt from itself. Move the "
              f"leadership first (make switchover), then make ha-reinit NODE={node}",
              file=sys.stderr)  # fmt: skip
        return Exit.USAGE
    # A stopped or removed node's container first: Patroni must run there to rebuild it.
    started = _compose("up", "--detach", "--no-deps", node, timeout=120)
    if started.returncode != 0:
        print(f"cluster.py: cannot start {node}: {started.stderr.strip()}", file=sys.stderr)
        return Exit.ALARM
    deadline = time.monotonic() + timeout
    while (answer := probe(node)).patroni is None:
        if time.monotonic() > deadline:
            print(f"cluster.py: {node}'s Patroni does not answer: {answer.error}", file=sys.stderr)
            return Exit.ALARM
        time.sleep(2)
    print(f"rebuilding {node} from {current}: its data directory is erased and cloned again...",
          file=sys.stderr)  # fmt: skip
    result = _exec(node, *PATRONICTL, "reinit", "--force", "--wait", "pgstack", node,
                   timeout=timeout)  # fmt: skip
    if result.returncode != 0:
        print(f"cluster.py: patronictl reinit failed:\n{result.stdout}{result.stderr}",
              file=sys.stderr)  # fmt: skip
        return Exit.ALARM
    while True:
        rows = members(names) or []
        row = next((m for m in rows if m["Member"] == node), {})
        lead = next((m for m in rows if m["Role"] == "Leader"), {})
        if row.get("State") == "streaming" and row.get("TL") == lead.get("TL"):
            print(f"{node} is streaming from {lead['Member']} again (timeline {row['TL']}).",
                  file=sys.stderr)  # fmt: skip
            return Exit.OK
        if time.monotonic() > deadline:
            print(f"cluster.py: {node} is not streaming after {timeout:.0f} s: {row}",
                  file=sys.stderr)  # fmt: skip
            return Exit.ALARM
        time.sleep(2)


def switchover_plan(rows: list[dict[str, Any]], wanted: str) -> tuple[str, str]:
    """(leader, candidate) for a planned switchover to `wanted` (default: the synchronous
    standby), or SystemExit saying why not. In synchronous mode Patroni hands the leader only to
    the synchronous standby, the one node known to have every acknowledged commit."""
    members = {m["Member"]: m for m in rows}
    leaders = [n for n, m in members.items() if m["Role"] == "Leader" and m["State"] == "running"]
    if not leaders:
        raise SystemExit("error: no running leader to switch over from (a failover under way?); "
                         "see make cluster-status")  # fmt: skip
    sync = [n for n, m in members.items() if m["Role"] == "Sync Standby"]
    wanted = wanted or (sync[0] if sync else "")
    if not wanted:
        raise SystemExit("error: the cluster has no synchronous standby to hand over to; name "
                         "one: make switchover CANDIDATE=patroniN")  # fmt: skip
    if wanted not in members:
        raise SystemExit(f"error: CANDIDATE={wanted} is not a member of the cluster (members: "
                         f"{', '.join(sorted(members))})")  # fmt: skip
    member = members[wanted]
    if member["Role"] == "Leader":
        others = ", ".join(sorted(set(members) - {wanted}))
        raise SystemExit(f"error: {wanted} is already the leader; name another member: {others}")
    if member["Role"] != "Sync Standby":
        raise SystemExit(
            f"error: {wanted} is an asynchronous replica; in synchronous mode Patroni hands the "
            f"leader only to the synchronous standby ({', '.join(sync) or 'none now'}), the node "
            "with every acknowledged commit"
        )
    if member["State"] != "streaming" or member.get("TL") != members[leaders[0]].get("TL"):
        raise SystemExit(f"error: {wanted} is not a healthy replica (state {member['State']}, "
                         f"timeline {member.get('TL')}); see make cluster-status")  # fmt: skip
    return leaders[0], wanted


def switchover(wanted: str) -> Exit:
    """Hand the leader over (patronictl switchover on the candidate) and say what happened."""
    names = node_names()
    rows = members(names)
    if rows is None:
        project = os.environ.get("COMPOSE_PROJECT_NAME", "the cluster")
        print(f"error: no node of {project} could read the cluster from etcd: are the nodes "
              "and etcd up? (make ha-ps; make ha-logs SERVICE=etcd1)", file=sys.stderr)  # fmt: skip
        return Exit.ALARM
    current, candidate = switchover_plan(rows, wanted)
    print(f"switchover: {current} (leader) -> {candidate}", flush=True)
    result = _exec(candidate, *PATRONICTL, "switchover", "--leader", current,
                   "--candidate", candidate, "--force", timeout=120)  # fmt: skip
    # patronictl exits 0 when Patroni refuses, too: its sentence is the only verdict.
    print(result.stdout + result.stderr, end="", flush=True)
    if "Successfully switched over" not in result.stdout:
        print("error: Patroni did not switch over (its answer is above); the cluster is as make "
              "cluster-status shows", file=sys.stderr)  # fmt: skip
        return Exit.ALARM
    return Exit.OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("leader", help="print the leader's name (exit 1: none)")
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for one (default 0)")
    sub.add_parser("check", help="the split-brain alarm")
    p = sub.add_parser("reinit", help="rebuild NODE from the leader")
    p.add_argument("node")
    p.add_argument("--timeout", type=float, default=300)
    p = sub.add_parser("switchover", help="hand the leader to CANDIDATE (default: sync standby)")
    p.add_argument("candidate", nargs="?", default="")
    args = parser.parse_args(argv)
    if args.command == "leader":
        name = leader(args.wait)
        if name is None:
            print(f"cluster.py: no running leader after {args.wait:.0f} s; see make cluster-check",
                  file=sys.stderr)  # fmt: skip
            return Exit.ALARM
        print(name)
        return Exit.OK
    if args.command == "check":
        return check()
    if args.command == "switchover":
        return switchover(args.candidate)
    return reinit(args.node, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
