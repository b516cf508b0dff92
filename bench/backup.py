"""Backups and recovery on a pgbench database of scale BENCH_BACKUP_SCALE (150: ~2.2 GB), each
against a baseline measured in the same run on the same data:

- a full pgBackRest backup (zstd, BACKUP_PROCESS_MAX processes) vs a raw `pg_basebackup` with zstd
  compression (target: >= 0.9x its throughput), BENCH_BACKUP_ROUNDS interleaved rounds, medians;
- an incremental backup after changing 1% of the rows vs the full backup (target: <= 0.15x its
  time). The 1% is contiguous (`aid <= scale * 1000`, the hot end of a table): scattered updates
  of 1% of pgbench_accounts' rows touch most of its pages, which no block-level incremental can
  skip. Beside it, an incremental with nothing changed: the fixed cost of any backup;
- a point-in-time recovery, from stopping postgres to the API serving, vs copying the data
  directory once (target: <= 1.5x);
- beside them: how long the API is unavailable during a dump restore and a point-in-time recovery,
  and the dump and its test restore vs raw `pg_dump` / `pg_restore` of the same database.

Call from the bench driver with a running stack: `results["backup"] = backup.run(stack)`;
`python -m bench.backup --record` (make bench-backup) runs this phase alone and records it.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

from tests.stack.compose import REPO, Stack

SCALE = int(os.environ.get("BENCH_BACKUP_SCALE", "150"))
ROUNDS = int(os.environ.get("BENCH_BACKUP_ROUNDS", "3"))
_AS_POSTGRES = ("exec", "-T", "--user", "postgres")
_SOCKET = "host=/var/run/postgresql dbname=pgstack user=postgres"
_WORK = "/var/lib/pgstack-backup/bench"


def _log(message: str) -> None:
    print(f"[bench backup] {message}", flush=True)


def _timed(stack: Stack, service: str, script: str, timeout: float = 3600) -> tuple[float, str]:
    """Run a shell script in `service` as postgres; return (wall seconds, output)."""
    started = time.monotonic()
    result = stack.compose(*_AS_POSTGRES, service, "sh", "-ec", script, check=False,
                           timeout=timeout)  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"{script!r} failed: {result.stdout[-1500:]}{result.stderr[-1500:]}")
    return time.monotonic() - started, result.stdout


def _make(stack: Stack, *args: str) -> tuple[float, str]:
    started = time.monotonic()
    result = subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, env=stack.env,
                            capture_output=True, text=True, timeout=7200, check=False)  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(
            f"make {' '.join(args)} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return time.monotonic() - started, result.stdout


def _unavailable_s(output: str) -> float:
    match = re.search(r"the API was unavailable for (\d+(?:\.\d+)?) s", output)
    if not match:
        raise RuntimeError(f"no unavailability figure in: {output[-1500:]}")
    return float(match.group(1))


def _last(output: str, event: str) -> dict[str, Any]:
    lines = [json.loads(x) for x in output.splitlines() if x.startswith("{")]
    return [e for e in lines if e.get("event") == event][-1]


def run(stack: Stack, scale: int = SCALE) -> dict[str, Any]:
    figures: dict[str, Any] = {"scale": scale}
    _log(f"pgbench -i -s {scale}")
    _timed(stack, "postgres", f"pgbench -i -s {scale} -q --no-vacuum '{_SOCKET}' >/dev/null; "
                              f"psql -q '{_SOCKET}' -c 'VACUUM ANALYZE'")  # fmt: skip
    _make(stack, "backup")  # the stanza, and a first backup
    figures["database_bytes"] = int(stack.psql("SELECT pg_database_size('pgstack')"))
    _log(f"database: {figures['database_bytes'] / 1e9:.2f} GB")

    # Interleaved rounds, medians: one pair alone swung 0.80-0.97 with the machine's other load.
    raw_runs: list[float] = []
    full_runs: list[float] = []
    for round_no in range(1, ROUNDS + 1):
        _log(f"round {round_no}/{ROUNDS}: raw pg_basebackup (tar, zstd), a full pgBackRest backup")
        raw_runs.append(_timed(stack, "backup", (
            f"rm -rf {_WORK}; mkdir -p {_WORK}; pg_basebackup -h /var/run/postgresql -U postgres "
            f"-D {_WORK}/base -Ft --compress=client-zstd:3 --checkpoint=fast --wal-method=stream; "
            f"rm -rf {_WORK}"
        ))[0])  # fmt: skip
        full_runs.append(
            _timed(stack, "backup", "pgbackrest --stanza=pgstack backup --type=full")[0]
        )
    raw_s, full_s = statistics.median(raw_runs), statistics.median(full_runs)
    figures.update(basebackup_s=round(raw_s, 2), pgbackrest_full_s=round(full_s, 2),
                   basebackup_runs_s=[round(s, 2) for s in raw_runs],
                   pgbackrest_full_runs_s=[round(s, 2) for s in full_runs],
                   full_vs_basebackup_throughput=round(raw_s / full_s, 3))  # fmt: skip

    # The floor of any incremental: one with nothing changed since the full (the backup's start and
    # stop checkpoints, the manifest, the WAL it must wait for), to read the 1% figure against.
    _log("an incremental backup with nothing changed (the fixed cost of any backup)")
    floor_s, _ = _timed(stack, "backup", "pgbackrest --stanza=pgstack backup --type=incr")
    figures.update(pgbackrest_incr_unchanged_s=round(floor_s, 2),
                   incr_unchanged_vs_full_time=round(floor_s / full_s, 3))  # fmt: skip

    rows = scale * 1000
    _log(f"changing {rows} rows (1%), then an incremental backup")
    stack.psql(f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= {rows}")
    stack.psql("CHECKPOINT")
    incr_s, _ = _timed(stack, "backup", "pgbackrest --stanza=pgstack backup --type=incr")
    figures.update(pgbackrest_incr_s=round(incr_s, 2),
                   incr_vs_full_time=round(incr_s / full_s, 3))  # fmt: skip

    _log("copying the data directory once (the floor of any restore)")
    copy_s, _ = _timed(stack, "backup", (
        f"rm -rf {_WORK}; mkdir -p {_WORK}; cp -a /var/lib/postgresql/data/pgdata {_WORK}/copy; "
        f"sync; rm -rf {_WORK}"
    ))  # fmt: skip
    _log("point-in-time recovery to now")
    stack.psql("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
               "VALUES (1, 1, 1, 0, now())")  # fmt: skip
    time.sleep(1)
    target = stack.psql("SELECT now()")
    pitr_total_s, out = _make(stack, "restore", f"TARGET_TIME={target}", "CONFIRM=1")
    pitr_down_s = _unavailable_s(out)
    figures.update(copy_datadir_s=round(copy_s, 2), pitr_unavailable_s=pitr_down_s,
                   pitr_command_s=round(pitr_total_s, 1),
                   pitr_vs_copy=round(pitr_down_s / copy_s, 3))  # fmt: skip

    _log("the service's run (physical + dump + test restore), raw pg_dump and pg_restore beside it")
    _, out = _make(stack, "backup")
    dump = _last(out, "dump_finished")
    verified = _last(out, "verified")["restore"]
    raw_dump_s, _ = _timed(stack, "backup", (
        f"rm -rf {_WORK}; mkdir -p {_WORK}; pg_dump -Fc --compress=zstd:3 -f {_WORK}/raw.dump "
        f"'{_SOCKET}'"
    ))  # fmt: skip
    stack.psql("DROP DATABASE IF EXISTS bench_raw", database="postgres")
    stack.psql("CREATE DATABASE bench_raw", database="postgres")
    raw_restore_s, _ = _timed(stack, "backup", (
        f"pg_restore --no-owner --exit-on-error --single-transaction "
        f"-d 'host=/var/run/postgresql dbname=bench_raw user=postgres' {_WORK}/raw.dump; "
        f"rm -rf {_WORK}"
    ))  # fmt: skip
    stack.psql("DROP DATABASE bench_raw", database="postgres")
    figures.update(service_dump_s=float(dump["duration_s"]), raw_dump_s=round(raw_dump_s, 2),
                   dump_ratio=round(raw_dump_s / float(dump["duration_s"]), 3),
                   service_test_restore_s=float(verified["pg_restore_s"]),
                   raw_restore_s=round(raw_restore_s, 2),
                   test_restore_ratio=round(raw_restore_s / float(verified["pg_restore_s"]), 3),
                   dump_bytes=int(dump["size"]))  # fmt: skip

    _log("a dump restore of the same database")
    dump_total_s, out = _make(stack, "restore", "BACKUP=latest", "CONFIRM=1")
    figures.update(dump_restore_unavailable_s=_unavailable_s(out),
                   dump_restore_command_s=round(dump_total_s, 1))  # fmt: skip
    stack.psql("DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_tellers, "
               "pgbench_history")  # fmt: skip
    for name in stack.psql("SELECT datname FROM pg_database WHERE datname LIKE 'pgstack_before_%'",
                           database="postgres").split():  # fmt: skip
        stack.psql(f'DROP DATABASE "{name}"', database="postgres")
    _log(json.dumps(figures))
    return figures


def targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, in the shape of bench.report's target rows."""
    rows = [
        ("backup: full pgBackRest throughput vs raw pg_basebackup (zstd)",
         figures["full_vs_basebackup_throughput"], ">= 0.9",
         figures["full_vs_basebackup_throughput"] >= 0.9),
        ("backup: incremental after 1% of rows changed, time vs the full",
         figures["incr_vs_full_time"], "<= 0.15", figures["incr_vs_full_time"] <= 0.15),
        ("backup: PITR, postgres stopped to API serving, vs copying the data directory",
         figures["pitr_vs_copy"], "<= 1.5", figures["pitr_vs_copy"] <= 1.5),
    ]  # fmt: skip
    return [{"name": n, "value": float(v), "target": t, "met": bool(m)} for n, v, t, m in rows]


def record() -> None:
    """`make bench-backup`: this phase alone, on a stack of its own, written into the last
    `make bench` run's files (docs/benchmarks.*) beside the figures already there."""
    from bench import report
    from tests.stack.compose import build_images

    secrets = pathlib.Path(tempfile.mkdtemp(prefix="pgstack-bench-secrets-"))
    subprocess.run([str(REPO / "scripts/secrets.sh"), str(secrets)], check=True,
                   capture_output=True)  # fmt: skip
    build_images(secrets)
    project = f"{os.environ.get('COMPOSE_PROJECT_NAME', 'pgstack')}-bench-backup"
    stack = Stack(project=project, secrets_dir=secrets)
    stack.down()
    try:
        stack.up()
        figures = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                   "load_average_at_start": round(os.getloadavg()[0], 2),
                   **run(stack)}  # fmt: skip
        figures["load_average_at_end"] = round(os.getloadavg()[0], 2)
    finally:
        stack.down()
    report.record("backup", figures)
    for t in targets(figures):
        _log(f"{'MET ' if t['met'] else 'MISS'} {t['name']}: {t['value']:.2f} ({t['target']})")


if __name__ == "__main__":
    if sys.argv[1:] == ["--record"]:
        record()
    else:  # on a running stack: python -m bench.backup
        project = os.environ.get("COMPOSE_PROJECT_NAME", "pgstack")
        secrets = pathlib.Path(os.environ.get("PGSTACK_SECRETS_DIR", "secrets")).resolve()
        print(json.dumps(run(Stack(project=project, secrets_dir=secrets)), indent=2))
