"""`make bench`: every figure in one run, as ratios against a baseline measured in the same run.

Writes docs/benchmarks.json, docs/benchmarks.png and the results table in docs/benchmarks.md.
BENCH_QUICK=1 shortens every phase (for trying the harness, not for the published figures).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import httpx

from bench import backup, comparisons, connect_path, failover, http_load, report
from bench.baseline_api import pooled_direct_api
from tests.stack.compose import IMAGE_TAG, REPO, Stack, build_images

QUICK = os.environ.get("BENCH_QUICK") == "1"
HTTP_SECONDS = 5 if QUICK else 10
HTTP_ROUNDS = 1 if QUICK else 3
SOAK_SECONDS = 15 if QUICK else 120
CROWD = 1000


def _log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def _seed_product(base_url: str) -> int:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        response = http.post(
            "/api/products",
            json={
                "sku": f"BENCH-{uuid.uuid4().hex[:8]}",
                "name": "Bench",
                "price_cents": 100,
                "stock": 10,
            },
        )
        response.raise_for_status()
        return int(response.json()["id"])


def _seed_buyer(base_url: str) -> tuple[int, int]:
    """A user and a product with stock for the whole POST run."""
    with httpx.Client(base_url=base_url, timeout=10) as http:
        user = http.post("/api/users", json={"email": f"{uuid.uuid4().hex}@bench.test",
                                             "name": "Bench"})  # fmt: skip
        user.raise_for_status()
        product = http.post("/api/products", json={"sku": f"BENCH-{uuid.uuid4().hex[:8]}",
                                                   "name": "Bench", "price_cents": 1,
                                                   "stock": 2_000_000_000})  # fmt: skip
        product.raise_for_status()
        return int(user.json()["id"]), int(product.json()["id"])


def _server_connections_while(stack: Stack, work: threading.Thread) -> int:
    """Sample PostgreSQL's client backends of the app role while `work` runs; return the maximum."""
    peak = 0
    work.start()
    while work.is_alive():
        count = int(stack.psql(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE usename = 'app' AND backend_type = 'client backend'"
        ))  # fmt: skip
        peak = max(peak, count)
        time.sleep(0.5)
    work.join()
    return peak


def main() -> int:
    client = docker.from_env()
    secrets_dir = Path(tempfile.mkdtemp(prefix="pgstack-bench-secrets-"))
    subprocess.run(
        [str(REPO / "scripts/secrets.sh"), str(secrets_dir)], check=True, capture_output=True
    )
    _log("building images")
    build_images(secrets_dir)
    _log(f"building the API as of {comparisons.OLD_COMMIT} ({comparisons.OLD_IMAGE})")
    comparisons.build_old_api()
    client.images.build(
        path=str(REPO / "bench/loadgen"),
        tag=f"pgstack-loadgen:{IMAGE_TAG}",
        buildargs={"BASE_IMAGE": os.environ.get("BASE_IMAGE", "debian:trixie-slim")},
        rm=True,
    )
    # Named after the caller's project, so that benches of two checkouts never share a stack.
    project = f"{os.environ.get('COMPOSE_PROJECT_NAME', 'pgstack')}-bench"
    stack = Stack(project=project, secrets_dir=secrets_dir)
    stack.down()
    _log("starting the stack")
    stack.up()
    results: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "quick": QUICK,
            # Other work on the machine shows here; the targets are ratios for that reason.
            "load_average_at_start": os.getloadavg()[0],
        },
    }
    try:
        _log("connect path: pgbench -C, three authentications")
        pgbench = connect_path.run(stack)
        results["connect_path"] = [vars(r) for r in pgbench]
        for r in pgbench:
            _log(f"  {r.name}: {r.tps:,.0f} tps ({r.failed} failed)")

        product = _seed_product(stack.base_url)
        buyer, stocked = _seed_buyer(stack.base_url)
        order = http_load.post_script(
            "/api/orders",
            f'{{"user_id": {buyer}, "items": [{{"product_id": {stocked}, "quantity": 1}}]}}',
        )
        workers = int(os.environ.get("PGSTACK_API_WORKERS", "3"))
        api = str(stack.container("api").name)
        with (
            pooled_direct_api(stack) as pooled,
            comparisons.old_api(stack) as old,
            comparisons.bare_starlette(stack, workers) as bare,
        ):
            # (container, path, wrk script): each is loaded on its own loopback, so the
            # figures compare servers, not Docker's userland proxy (bench/http_load.py).
            targets: dict[str, tuple[str, str, str | None]] = {
                "nullpool_pgbouncer/livez": (api, "/livez", None),
                "bare_starlette/livez": (bare, "/livez", None),
                "nullpool_pgbouncer/readyz": (api, "/readyz", None),
                "nullpool_pgbouncer/product": (api, f"/api/products/{product}", None),
                f"api_{comparisons.OLD_COMMIT}/product": (old, f"/api/products/{product}", None),
                "pooled_direct/product": (pooled, f"/api/products/{product}", None),
                "nullpool_pgbouncer/order_post": (api, "/", order),
            }
            rounds: dict[str, list[http_load.LoadResult]] = {name: [] for name in targets}
            # Interleaved rounds, as for the connect path: compared figures share the drift.
            for round_no in range(HTTP_ROUNDS):
                for name, (container, path, script) in targets.items():
                    _log(f"HTTP {name}: 64 connections, {HTTP_SECONDS} s (round {round_no + 1})")
                    rounds[name].append(http_load.wrk(
                        name, f"http://127.0.0.1:8000{path}", seconds=HTTP_SECONDS,
                        script=script, inside=container,
                    ))  # fmt: skip
        http_results = [http_load.median(samples) for samples in rounds.values()]
        results["http"] = [r.as_dict() for r in http_results]
        for r in http_results:
            _log(
                f"  {r.name}: {r.requests_per_s:,.0f} req/s p50 {r.p50_ms:.2f} ms"
                f" p99 {r.p99_ms:.2f} ms, {r.errors} errors"
            )

        _log(f"{CROWD} concurrent clients for 20 s: PostgreSQL backends in use")
        crowd: dict[str, http_load.LoadResult] = {}
        work = threading.Thread(
            target=lambda: crowd.setdefault("r", http_load.wrk(
                "crowd/product", f"{stack.base_url}/api/products/{product}",
                connections=CROWD, seconds=20)),
        )  # fmt: skip
        peak = _server_connections_while(stack, work)
        results["crowd"] = {**crowd["r"].as_dict(), "peak_server_connections": peak,
                            "pool_limit": 25, "max_db_connections": 30}  # fmt: skip
        _log(
            f"  peak backends {peak}, {crowd['r'].errors} errors,"
            f" {crowd['r'].requests_per_s:,.0f} req/s"
        )

        _log(f"soak: {SOAK_SECONDS} s at 64 connections")
        soak = http_load.wrk(
            "soak/product", f"{stack.base_url}/api/products/{product}", seconds=SOAK_SECONDS
        )
        results["soak"] = soak.as_dict()
        _log(f"  {soak.requests:,} requests, {soak.errors} errors")

        if os.environ.get("BENCH_BACKUP", "1") == "1":
            _log("backups and recovery (bench/backup.py; BENCH_BACKUP=0 skips them)")
            results["backup"] = backup.run(stack, scale=10 if QUICK else backup.SCALE)
    finally:
        stack.down()

    results["machine"]["load_average_at_end"] = os.getloadavg()[0]
    if os.environ.get("BENCH_HA", "1") == "1":
        _log("the cluster under faults (bench/failover.py; BENCH_HA=0 skips it)")
        results["ha"] = failover.measure()
    results["targets"] = report.all_targets(results)
    report.write(results)
    failed = [t for t in results["targets"] if not t["met"]]
    for t in results["targets"]:
        _log(
            f"{'MET ' if t['met'] else 'MISS'} {t['name']}: {t['value']:.2f} (target {t['target']})"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
