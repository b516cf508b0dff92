"""Backup and restore on a generated database of BENCH_BACKUP_MB (default 1024) MB, beside raw
`pg_dump -Fc` / `pg_restore` of the same database in the same run, and zstd vs pg_dump's
default compression (gzip).

Call from the bench driver with a running stack (it must include the backup service):
    results["backup"] = backup.run(stack)
Targets: raw_dump_s / service_dump_s >= 0.9 and raw_restore_s / service_restore_s >= 0.9
(the service adds at most ~10% over the raw tools); the zstd/gzip size ratio is reported, and the
verification's own cost (exact row counts, dropping the scratch database) beside the restore.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from tests.stack.compose import Stack

SIZE_MB = int(os.environ.get("BENCH_BACKUP_MB", "1024"))
# ~240 bytes a row on disk (three md5 texts, a 128-char text, a timestamp): rows for SIZE_MB.
_ROW_BYTES = 240
_CLI = ("exec", "-T", "--user", "pgbackup", "backup")
_CONN = "host=postgres dbname=pgstack user=app_backup"
_SCRATCH = "pgstack_bench_restore"


def _log(message: str) -> None:
    print(f"[bench backup] {message}", flush=True)


def _sh(stack: Stack, script: str, timeout: float = 1800) -> float:
    """Run a shell script in the backup container as its user; return the wall time."""
    started = time.monotonic()
    result = stack.compose(*_CLI, "sh", "-ec", script, check=False, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{script!r} failed: {result.stdout[-1000:]}{result.stderr[-1000:]}")
    return time.monotonic() - started


def _events(stdout: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            found[event["event"]] = event
    return found


def _generate(stack: Stack, size_mb: int) -> int:
    rows = size_mb * 1024 * 1024 // _ROW_BYTES
    stack.psql("DROP TABLE IF EXISTS public.bench_backup")
    stack.psql(
        "CREATE TABLE public.bench_backup AS SELECT g AS id, md5(g::text) AS a, "
        "md5((g * 7)::text) AS b, repeat(md5((g * 13)::text), 4) AS c, "
        f"now() - g * interval '1 second' AS t FROM generate_series(1, {rows}) AS g"
    )
    stack.psql("ALTER TABLE public.bench_backup ADD PRIMARY KEY (id)")
    return int(stack.psql("SELECT pg_database_size('pgstack')"))


def run(stack: Stack, size_mb: int = SIZE_MB) -> dict[str, Any]:
    _log(f"generating a {size_mb} MB table")
    db_bytes = _generate(stack, size_mb)
    _log(f"database is {db_bytes / 1e6:.0f} MB; the service's backup (dump + verify + base)")
    result = stack.compose(*_CLI, "pgstack-backup", "run", check=False, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"pgstack-backup run failed: {result.stdout[-2000:]}")
    events = _events(result.stdout)
    service_dump_s = float(events["dump_finished"]["duration_s"])
    verified = events["verified"]["restore"]
    # Like for like: the service's pg_restore step against a raw pg_restore of the same archive;
    # the verification around it (exact row counts, dropping the scratch database) beside it.
    service_restore_s = float(verified["pg_restore_s"])
    verify_total_s = float(verified["duration_s"])
    zstd_bytes = int(events["dump_finished"]["size"])

    _log("raw pg_dump -Fc --compress=zstd:3, then the default (gzip)")
    raw = "/var/lib/pgstack-backup/bench-raw.dump"
    raw_dump_s = _sh(stack, f"pg_dump -Fc --compress=zstd:3 -f {raw} '{_CONN}'")
    gzip_path = "/var/lib/pgstack-backup/bench-gzip.dump"
    gzip_dump_s = _sh(stack, f"pg_dump -Fc -f {gzip_path} '{_CONN}'")
    sizes = stack.compose(*_CLI, "stat", "-c", "%s", raw, gzip_path).stdout.split()
    raw_zstd_bytes, gzip_bytes = int(sizes[0]), int(sizes[1])

    _log("raw pg_restore of the same archive into a scratch database")
    writable = "PGOPTIONS='-c default_transaction_read_only=off'"
    admin = f"{writable} psql -q 'host=postgres dbname=postgres user=app_backup'"
    raw_restore_s = _sh(stack, (
        f"{admin} -c 'DROP DATABASE IF EXISTS {_SCRATCH}' -c 'CREATE DATABASE {_SCRATCH}'; "
        f"pg_restore -l {raw} | grep -v EXTENSION > /tmp/bench.list; "
        f"{writable} pg_restore --no-owner --no-privileges --exit-on-error --single-transaction "
        f"-L /tmp/bench.list -d 'host=postgres dbname={_SCRATCH} user=app_backup' {raw}"
    ))  # fmt: skip
    _sh(stack, f"{admin} -c 'DROP DATABASE {_SCRATCH}'; rm -f {raw} {gzip_path} /tmp/bench.list")
    stack.psql("DROP TABLE public.bench_backup")
    figures = {
        "database_bytes": db_bytes,
        "service_dump_s": service_dump_s,
        "raw_dump_s": round(raw_dump_s, 3),
        "dump_ratio": round(raw_dump_s / service_dump_s, 3),
        "service_restore_s": service_restore_s,
        "raw_restore_s": round(raw_restore_s, 3),
        "restore_ratio": round(raw_restore_s / service_restore_s, 3),
        "service_verify_total_s": verify_total_s,
        "service_verify_count_s": float(verified["count_s"]),
        "service_verify_drop_s": float(verified["drop_s"]),
        "service_run_s": float(events["backup"]["duration_s"]),
        "zstd_bytes": zstd_bytes,
        "raw_zstd_bytes": raw_zstd_bytes,
        "gzip_bytes": gzip_bytes,
        "gzip_dump_s": round(gzip_dump_s, 3),
        "zstd_vs_gzip_size": round(zstd_bytes / gzip_bytes, 3),
    }
    _log(json.dumps(figures))
    return figures


def targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, in the shape of bench.report's target rows."""
    return [
        {"name": "backup: raw pg_dump time / service dump time", "value": figures["dump_ratio"],
         "target": ">= 0.9", "met": figures["dump_ratio"] >= 0.9},
        {"name": "backup: raw pg_restore time / service test restore (pg_restore step)", "value":
         figures["restore_ratio"], "target": ">= 0.9", "met": figures["restore_ratio"] >= 0.9},
    ]  # fmt: skip


if __name__ == "__main__":  # a quick look on a running stack: python -m bench.backup
    import pathlib

    project = os.environ.get("COMPOSE_PROJECT_NAME", "pgstack")
    secrets = pathlib.Path(os.environ.get("PGSTACK_SECRETS_DIR", "secrets")).resolve()
    print(json.dumps(run(Stack(project=project, secrets_dir=secrets)), indent=2))
