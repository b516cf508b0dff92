"""`make bench-ha`: the cluster (docker-compose.ha.yml) under faults, with a writer running.

A cluster of its own; for each fault in turn, from a healthy cluster, a Ledger (tests/ha/ledger.py)
places keyed orders through the API before, during and after it, and the figures are:

- seconds without a writable leader: from the first attempt that failed to the next
  acknowledgement, as the client saw it (its retries wait Retry-After, capped at 1 s), and the
  longest time between two acknowledgements (a stall without failures shows there);
- acknowledged writes lost (acknowledged, not on the new leader) and orders no acknowledgement
  explains (a key placed twice), both to be 0;
- failed requests, and among them answers outside the contract (anything but 503 JSON with
  Retry-After within 15 s), to be 0.

Faults: a lost etcd member (its raft leader, killed), a planned switchover (make switchover), the
leader's container stopped (docker stop) and killed (machine loss: the key must expire), the
leader cut off the cluster network (partition). Then throughput of the API on the cluster: orders
(POST, synchronous commit on two nodes) and GET /api/products/{id}, with wrk inside the API's
container; BENCH_HA_SINGLE=1 (the default) measures the single node the same way, beside it.

`python -m bench.failover --record` (make bench-ha) writes the figures into docs/benchmarks.*
beside the last `make bench` run's.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import docker
import httpx

from bench import http_load
from tests.ha import faults
from tests.ha.cluster import Cluster
from tests.ha.ledger import Ledger
from tests.stack.compose import IMAGE_TAG, REPO, Stack, build_images, create_product, create_user

FAULTS = ("etcd_member_lost", "switchover", "leader_stopped", "leader_killed", "leader_partitioned")
HTTP_SECONDS = int(os.environ.get("BENCH_HA_HTTP_SECONDS", "10"))
# The goal of issue 8: a writable leader again within 15 s of any fault; 30 s at worst.
GOAL_S, WORST_S = 15.0, 30.0


def _log(message: str) -> None:
    print(f"[bench ha] {message}", flush=True)


def _inject(cluster: Cluster, fault: str, leader: str) -> Callable[[], None]:
    """Inject `fault`; returns how to undo it (the machine back, the network healed)."""
    if fault == "etcd_member_lost":
        member = faults.etcd_leader(cluster)
        cluster.container(member).kill()
        return lambda: cluster.container(member).start()
    if fault == "switchover":
        result = cluster.make_target("switchover")
        if result.returncode != 0:
            raise RuntimeError(f"make switchover failed: {result.stdout}{result.stderr}")
        return lambda: None
    if fault == "leader_stopped":
        cluster.container(leader).stop(timeout=60)
        return lambda: cluster.container(leader).start()
    if fault == "leader_killed":
        cluster.container(leader).kill()
        return lambda: cluster.container(leader).start()
    if fault == "leader_partitioned":
        faults.disconnect(cluster, leader)
        return lambda: faults.reconnect(cluster, leader)
    raise ValueError(fault)


def run_fault(cluster: Cluster, fault: str) -> dict[str, Any]:
    members = faults.wait_healthy(cluster)
    leader = next(m["Member"] for m in members if m["Role"] == "Leader")
    with cluster.http() as http:
        user, product = create_user(http), create_product(http, stock=10_000_000, price_cents=1)
    ledger = Ledger(cluster.base_url, user, product).start()
    undo: Callable[[], None] | None = None
    try:
        ledger.wait_acks(20, timeout=60)
        undo = _inject(cluster, fault, leader)
        if fault == "etcd_member_lost":
            time.sleep(20)  # four of Patroni's loops on two etcd members
            new_leader = cluster.leader() or "none"
        else:
            new_leader = faults.wait_replaced(cluster, leader)
        ledger.wait_acks(20, timeout=120)
    finally:
        ledger.stop()
    stored = set(faults.orders_on(cluster, new_leader, user))
    acked = ledger.acked_ids()
    figures = {
        "fault": fault,
        "old_leader": leader,
        "new_leader": new_leader,
        "unavailable_s": ledger.outage_s(),
        "longest_gap_s": ledger.longest_gap_s(),
        "acknowledged": len(ledger.acks),
        "acknowledged_lost": len(acked - stored),
        "unexplained_orders": len(stored - acked),
        "failed_requests": len(ledger.failures),
        "answers_outside_contract": len(ledger.bad_answers()),
        "failure_statuses": sorted({str(f.status) for f in ledger.failures}),
    }  # fmt: skip
    if undo is not None:
        undo()
    faults.wait_healthy(cluster)
    _log(json.dumps(figures))
    return figures


def _throughput(stack: Stack, label: str) -> dict[str, Any]:
    with httpx.Client(base_url=stack.base_url, timeout=10) as http:
        user, product = create_user(http), create_product(http, stock=2_000_000_000, price_cents=1)
    order = http_load.post_script(
        "/api/orders",
        f'{{"user_id": {user}, "items": [{{"product_id": {product}, "quantity": 1}}]}}',
    )
    api = str(stack.container("api").name)
    out = {}
    for name, path, script in (("order_post", "/", order),
                               ("product_get", f"/api/products/{product}", None)):  # fmt: skip
        _log(f"{label} {name}: 64 connections, {HTTP_SECONDS} s")
        result = http_load.wrk(f"{label}/{name}", f"http://127.0.0.1:8000{path}",
                               seconds=HTTP_SECONDS, script=script, inside=api)  # fmt: skip
        out[name] = result.as_dict()
        _log(f"  {result.requests_per_s:,.0f} req/s, p99 {result.p99_ms:.1f} ms, "
             f"{result.errors} errors")  # fmt: skip
    return out


def run(cluster: Cluster) -> dict[str, Any]:
    figures: dict[str, Any] = {"faults": [run_fault(cluster, f) for f in FAULTS]}
    figures["throughput_cluster"] = _throughput(cluster, "cluster")
    return figures


def targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, in the shape of bench.report's target rows."""
    rows = []
    for f in figures["faults"]:
        worst = max(f["unavailable_s"], f["longest_gap_s"])
        rows.append((f"HA {f['fault']}: seconds without a writable leader", worst,
                     f"<= {GOAL_S:.0f} (at worst {WORST_S:.0f})", worst <= GOAL_S))  # fmt: skip
    lost = sum(f["acknowledged_lost"] + f["unexplained_orders"] for f in figures["faults"])
    rows.append(("HA: acknowledged writes lost or doubled, all faults", lost, "== 0", lost == 0))
    bad = sum(f["answers_outside_contract"] for f in figures["faults"])
    rows.append(("HA: failed requests other than 503 + Retry-After", bad, "== 0", bad == 0))
    return [{"name": n, "value": float(v), "target": t, "met": bool(m)} for n, v, t, m in rows]


def measure() -> dict[str, Any]:
    """A cluster of its own, every fault under the writer, then throughput beside a single node
    (BENCH_HA_SINGLE=0 skips it): the figures of docs/benchmarks.json's "ha" section."""
    secrets = pathlib.Path(tempfile.mkdtemp(prefix="pgstack-bench-secrets-"))
    subprocess.run([str(REPO / "scripts/secrets.sh"), str(secrets), "ha"], check=True,
                   capture_output=True)  # fmt: skip
    build_images(secrets)
    env = {**os.environ, "PGSTACK_SECRETS_DIR": str(secrets), "PGSTACK_IMAGE_TAG": IMAGE_TAG,
           "COMPOSE_FILE": "docker-compose.ha.yml",
           "COMPOSE_PROJECT_NAME": "pgstack-build"}  # fmt: skip
    subprocess.run(["docker", "compose", "build", "--quiet", "etcd1", "patroni1", "haproxy"],
                   cwd=REPO, env=env, check=True)  # fmt: skip
    docker.from_env().images.build(
        path=str(REPO / "bench/loadgen"), tag=f"pgstack-loadgen:{IMAGE_TAG}", rm=True,
        buildargs={"BASE_IMAGE": os.environ.get("BASE_IMAGE", "debian:trixie-slim")},
    )  # fmt: skip
    base = os.environ.get("HA_PROJECT_NAME", "pgstack-ha")
    cluster = Cluster(project=f"{base}-bench", secrets_dir=secrets)
    cluster.down()
    figures: dict[str, Any] = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                               "load_average_at_start": round(os.getloadavg()[0], 2)}  # fmt: skip
    try:
        _log("starting the cluster")
        cluster.up(wait_timeout=400)
        faults.wait_healthy(cluster, timeout=120)
        figures.update(run(cluster))
    except Exception:
        # The nodes' own account, before the cluster goes: a node that does not rejoin says why.
        logs = cluster.compose("logs", "--no-color", "--tail=60", "patroni1", "patroni2",
                               "patroni3", check=False)  # fmt: skip
        _log(f"failed; the nodes' last lines:\n{logs.stdout}")
        raise
    finally:
        cluster.down()
    if os.environ.get("BENCH_HA_SINGLE", "1") == "1":
        single = Stack(project=f"{base}-bench-single", secrets_dir=secrets)
        single.down()
        try:
            _log("the single node, for comparison")
            single.up()
            figures["throughput_single"] = _throughput(single, "single")
        finally:
            single.down()
    figures["load_average_at_end"] = round(os.getloadavg()[0], 2)
    return figures


def record() -> None:
    """`make bench-ha`: measure(), written into the last `make bench` run's files
    (docs/benchmarks.*) beside the figures already there."""
    from bench import report

    figures = measure()
    report.record("ha", figures)
    for t in targets(figures):
        _log(f"{'MET ' if t['met'] else 'MISS'} {t['name']}: {t['value']:.2f} ({t['target']})")


if __name__ == "__main__":
    if sys.argv[1:] == ["--record"]:
        record()
    else:  # on a running cluster: python -m bench.failover (HA_PROJECT_NAME, PGSTACK_SECRETS_DIR)
        secrets_dir = pathlib.Path(os.environ.get("PGSTACK_SECRETS_DIR", "secrets")).resolve()
        running = Cluster(project=os.environ.get("HA_PROJECT_NAME", "pgstack-ha"),
                          secrets_dir=secrets_dir,
                          http_port=int(os.environ.get("PGSTACK_HTTP_PORT", "8000")))  # fmt: skip
        print(json.dumps(run(running), indent=2))
