"""The PostgreSQL cluster under test (docker-compose.ha.yml): a compose project like tests.stack's
Stack, plus Patroni's view of it, read with patronictl inside a node."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from tests.stack.compose import REPO, Stack

NODES = ("patroni1", "patroni2", "patroni3")
PATRONICTL = ("patronictl", "--config-file", "/run/pgstack-patroni")
# What a standby that is not yet consistent logs every second or so, from Patroni's heartbeat.
_NOISE = (
    "not yet accepting connections",
    "Consistent recovery state has not been yet reached",
    "establishing a new patroni heartbeat connection",
    "Lock owner:",
    "Still starting up as a standby",
    "Retry got exception: connection problems",
    "Failed to determine PostgreSQL state from the connection",
    "rejecting connections",
    "is starting up",
)


@dataclass
class Cluster(Stack):
    """Stack with the cluster's compose file; `up()` waits for every service to be healthy."""

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "COMPOSE_FILE": str(REPO / "docker-compose.ha.yml")}

    def make_target(self, *targets: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A Makefile target against this cluster (its project name, secrets and images)."""
        # On make's command line: a caller run by make (make bench-ha HA_PROJECT_NAME=...) hands
        # its own command-line variables down in MAKEFLAGS, and they would win over the
        # environment's.
        return subprocess.run(
            ["make", "--no-print-directory", *targets, f"HA_PROJECT_NAME={self.project}"],
            cwd=REPO, env=self.env,
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def running_nodes(self) -> list[str]:
        nodes = []
        for node in NODES:
            container = self.container(node)
            container.reload()
            if container.status == "running":
                nodes.append(node)
        return nodes

    def members(self) -> list[dict[str, Any]]:
        """`patronictl list` as JSON, from the first node that answers: Member, Role ("Leader",
        "Sync Standby", "Replica"), State, TL, "Lag in MB"."""
        errors = []
        for node in self.running_nodes():
            # Bounded: on a node cut off the network, patronictl can wait on etcd for ever.
            code, out = self.exec(
                node, "timeout", "15", *PATRONICTL, "list", "--format", "json", user="postgres"
            )
            # The table is the last line; warnings (an etcd member that does not resolve) come
            # before it on stderr, which exec merges.
            if code == 0:
                return list(json.loads(out.strip().splitlines()[-1]))
            errors.append(f"{node}: {out.strip()}")
        raise AssertionError(f"no node answers patronictl list: {errors}")

    def leader(self) -> str | None:
        leaders = [m["Member"] for m in self.members() if m["Role"] == "Leader"]
        assert len(leaders) <= 1, f"two leaders: {leaders}"
        return leaders[0] if leaders else None

    def wait_members(self, settled: Any, timeout: float, what: str) -> list[dict[str, Any]]:
        """Poll patronictl until `settled(members)` holds; fail with the last table."""
        deadline, members = time.monotonic() + timeout, []
        while time.monotonic() < deadline:
            try:
                members = self.members()
            except AssertionError:
                members = []
            if settled(members):
                return members
            time.sleep(1)
        raise AssertionError(
            f"{what} not reached after {timeout} s: {members}{self._unsettled_logs(members)}"
        )

    def _unsettled_logs(self, members: list[dict[str, Any]]) -> str:
        """Why each member neither leading nor streaming is stuck: its log without the lines a
        starting standby repeats every second (Patroni's heartbeat and the refusals it gets),
        which would push the startup process's and WAL receiver's lines out of any tail, and its
        control file (the WAL position a rewound node must replay to before it is consistent)."""
        tails = []
        for member in members:
            if member.get("State") in {"running", "streaming"}:
                continue
            name = str(member["Member"])
            try:
                text = self.container(name).logs(tail=3000).decode(errors="replace")
                lines = [line for line in text.splitlines() if not any(n in line for n in _NOISE)]
                control = self.exec(name, "pg_controldata", user="postgres")[1]
                wanted = ("TimeLineID", "REDO location", "Minimum recovery", "cluster state")
                control = "\n".join(c for c in control.splitlines() if any(w in c for w in wanted))
            except Exception as exc:  # a diagnostic only: the assertion it joins is what matters
                lines, control = [f"(no logs: {exc})"], ""
            state, log = member.get("State"), "\n".join(lines[-80:])
            tails.append(
                f"\n--- {name} ({state}), its last 80 log lines without heartbeat noise:\n{log}"
                f"\n--- {name} pg_controldata:\n{control}"
            )
        return "".join(tails)

    def node_psql(self, node: str, sql: str, database: str = "pgstack") -> str:
        """SQL on one node as the superuser, over its own socket (peer)."""
        code, out = self.exec(
            node, "psql", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "--tuples-only", "--no-align",
            "--dbname", database, "--command", sql, user="postgres",
        )  # fmt: skip
        if code != 0:
            raise AssertionError(f"psql on {node} failed ({code}): {out}")
        return out.strip()


def healthy(members: list[dict[str, Any]]) -> bool:
    """Three members on one timeline: a running leader, a streaming synchronous standby and a
    streaming replica."""
    roles = sorted(m["Role"] for m in members)
    return (
        roles == ["Leader", "Replica", "Sync Standby"]
        and all(m["State"] in ("running", "streaming") for m in members)
        and len({m.get("TL") for m in members}) == 1
    )
