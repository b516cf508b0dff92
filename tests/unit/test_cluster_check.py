"""make cluster-check's verdict (scripts/cluster.py diagnose) on what the nodes and Patroni
say: the alarm's logic without a cluster. tests/ha/test_operations.py produces such states for
real."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cluster", REPO / "scripts/cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cluster"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


cluster = _load()
Exit, Node = cluster.Exit, cluster.Node


def _member(name: str, role: str, state: str = "streaming", tl: int = 1) -> dict[str, Any]:
    return {"Member": name, "Role": role, "State": state, "TL": tl}


HEALTHY_MEMBERS = [
    _member("patroni1", "Leader", "running"),
    _member("patroni2", "Sync Standby"),
    _member("patroni3", "Replica"),
]
HEALTHY_NODES = [
    Node("patroni1", True, {}),
    Node("patroni2", False, {}),
    Node("patroni3", False, {}),
]


def test_a_healthy_cluster_passes() -> None:
    verdict = cluster.diagnose(HEALTHY_NODES, HEALTHY_MEMBERS)
    assert (verdict.alarms, verdict.warnings, verdict.exit) == ([], [], Exit.OK)


def test_two_writable_nodes_are_a_split_brain_naming_both_and_the_one_to_rebuild() -> None:
    nodes = [Node("patroni1", True, {}), Node("patroni2", False, {}), Node("patroni3", True, {})]
    verdict = cluster.diagnose(nodes, HEALTHY_MEMBERS)
    assert verdict.exit == Exit.ALARM
    (alarm,) = verdict.alarms
    assert alarm.startswith("SPLIT BRAIN: patroni1 and patroni3 both accept writes"), alarm
    assert "make ha-reinit NODE=patroni3" in alarm


def test_a_writable_node_that_is_not_patronis_leader_is_an_alarm() -> None:
    nodes = [Node("patroni1", None, None, "down"), Node("patroni2", False, {}),
             Node("patroni3", True, {})]  # fmt: skip
    verdict = cluster.diagnose(nodes, HEALTHY_MEMBERS)
    assert verdict.exit == Exit.ALARM
    assert any(a.startswith("THE LEADER DOES NOT TAKE WRITES: Patroni's leader is patroni1")
               for a in verdict.alarms), verdict.alarms  # fmt: skip
    assert any("patroni3 accepts writes but Patroni's leader is patroni1" in a
               for a in verdict.alarms), verdict.alarms  # fmt: skip


def test_no_leader_is_an_alarm() -> None:
    members = [_member("patroni2", "Replica"), _member("patroni3", "Replica")]
    nodes = [Node("patroni1", None, None, "stopped"), Node("patroni2", False, {}),
             Node("patroni3", False, {})]  # fmt: skip
    verdict = cluster.diagnose(nodes, members)
    assert verdict.exit == Exit.ALARM
    assert any(a.startswith("NO LEADER") for a in verdict.alarms), verdict.alarms


def test_no_synchronous_standby_is_an_alarm_and_the_stopped_nodes_are_named() -> None:
    members = [_member("patroni1", "Leader", "running"), _member("patroni2", "Replica", "stopped"),
               _member("patroni3", "Replica", "stopped")]  # fmt: skip
    nodes = [Node("patroni1", True, {}), Node("patroni2", None, None, "not running"),
             Node("patroni3", None, None, "not running")]  # fmt: skip
    verdict = cluster.diagnose(nodes, members)
    assert verdict.exit == Exit.ALARM
    assert [a.split(":")[0] for a in verdict.alarms] == ["NO SYNCHRONOUS STANDBY"]
    assert [w.split(" ")[0] for w in verdict.warnings] == ["patroni2", "patroni3"]
    assert "runs on 1 of 3 nodes" in verdict.warnings[0]


@pytest.mark.parametrize(
    ("nodes", "members", "says"),
    [
        ([*HEALTHY_NODES[:2], Node("patroni3", None, None, "not running")],
         HEALTHY_MEMBERS[:2], "patroni3 is down (not running)"),
        (HEALTHY_NODES, [*HEALTHY_MEMBERS[:2], _member("patroni3", "Replica", tl=0)],
         "patroni3 is on timeline 0, the leader on 1"),
        ([Node("patroni1", True, {"pause": True}), *HEALTHY_NODES[1:]], HEALTHY_MEMBERS,
         "Patroni is paused"),
    ],
)  # fmt: skip
def test_a_lost_or_lagging_node_or_a_pause_is_degraded_not_an_alarm(
    nodes: list[Any], members: list[dict[str, Any]], says: str
) -> None:
    verdict = cluster.diagnose(nodes, members)
    assert verdict.exit == Exit.DEGRADED and verdict.alarms == [], verdict
    assert any(w.startswith(says) for w in verdict.warnings), verdict.warnings


def test_no_answer_from_patroni_is_an_alarm_that_still_says_who_takes_writes() -> None:
    verdict = cluster.diagnose(HEALTHY_NODES, None)
    assert verdict.exit == Exit.ALARM
    assert "writable now: patroni1" in verdict.alarms[0]


def test_a_switchover_goes_to_the_sync_standby_unless_told_otherwise() -> None:
    assert cluster.switchover_plan(HEALTHY_MEMBERS, "") == ("patroni1", "patroni2")
    assert cluster.switchover_plan(HEALTHY_MEMBERS, "patroni2") == ("patroni1", "patroni2")


@pytest.mark.parametrize(
    ("members", "wanted", "says"),
    [
        (HEALTHY_MEMBERS, "patroni9", "is not a member of the cluster"),
        (HEALTHY_MEMBERS, "patroni1", "is already the leader"),
        (HEALTHY_MEMBERS, "patroni3", "is an asynchronous replica"),
        (
            [_member("patroni1", "Leader", "running"), _member("patroni2", "Sync Standby", tl=0)],
            "",
            "is not a healthy replica",
        ),
        ([_member("patroni1", "Leader", "running"), _member("patroni3", "Replica")], "", "no sync"),
        ([_member("patroni2", "Sync Standby")], "", "no running leader"),
    ],
)
def test_a_switchover_that_cannot_be_safe_is_refused_with_the_reason(
    members: list[dict[str, Any]], wanted: str, says: str
) -> None:
    with pytest.raises(SystemExit) as refused:
        cluster.switchover_plan(members, wanted)
    assert says in str(refused.value)
