"""`pgbench -C` on the API's connect path, against its ceiling and SCRAM over TCP, in one run.

Three PgBouncers from the same image and config, differing only in authentication:
  api_path  the stack's own PgBouncer: unix socket on a shared volume, 0660 group pgsocket;
  ceiling   the same path open to anyone (mode 0777, trust): the upper bound;
  scram_tcp SCRAM-SHA-256 (4096 iterations) over TCP, PgBouncer holding the role's stored verifier
            (the best SCRAM setup: no plaintext, server login reuses the client's proof).
Each runs `SELECT 1` with a new connection per transaction (-C), like NullPool per request,
in interleaved rounds (median reported).
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import docker

from tests.stack.compose import IMAGE_TAG, REPO, Stack

CLIENTS = 8
THREADS = 2
SECONDS = 3 if os.environ.get("BENCH_QUICK") == "1" else 5
# The API's socket group (services/pgbouncer and services/api Dockerfiles).
SOCKET_GID = "10010"
ROUNDS = 1 if os.environ.get("BENCH_QUICK") == "1" else 3
_TPS = re.compile(r"^tps = ([0-9.]+)", re.MULTILINE)


@dataclass(frozen=True)
class PgbenchResult:
    name: str
    tps: float  # median of the rounds
    failed: int
    rounds: list[float]


def _pgbench(
    stack: Stack, dsn: str, *, user: str, volume: str | None, env: dict[str, str]
) -> tuple[float, int]:
    client = docker.from_env()
    script = "SELECT 1;\n"
    volumes = {volume: {"bind": "/run/pgbouncer", "mode": "rw"}} if volume else {}
    output = client.containers.run(
        f"pgstack-postgres:{IMAGE_TAG}",
        ["bash", "-c", f"printf '{script}' > /tmp/s.sql && exec pgbench -n -C -c {CLIENTS} "
         f"-j {THREADS} "
         f"-T {SECONDS} -f /tmp/s.sql '{dsn}'"],
        entrypoint=[],
        user=user,
        group_add=[SOCKET_GID],  # like the API's app user
        network=f"{stack.project}_backend",
        volumes=volumes,
        environment=env,
        remove=True,
        stderr=True,
    ).decode()  # fmt: skip
    match = _TPS.search(output)
    if not match:
        raise RuntimeError(f"pgbench printed no tps:\n{output}")
    failed = re.search(r"number of failed transactions: (\d+)", output)
    return float(match.group(1)), int(failed.group(1)) if failed else 0


def _variant_pgbouncer(
    stack: Stack,
    name: str,
    hba: str,
    extra_ini: dict[str, str],
    files: dict[str, str],
    *,
    bypass_entrypoint: bool = False,
) -> tuple[str, str]:
    """Start a PgBouncer like the stack's with another hba; returns (container, socket volume).

    bypass_entrypoint runs PgBouncer directly, as the pgbouncer user: the ceiling's open socket
    is exactly what the production entrypoint refuses to start with.
    """
    client = docker.from_env()
    workdir = Path(tempfile.mkdtemp(prefix=f"pgstack-bench-{name}-"))
    workdir.chmod(0o755)
    ini = (REPO / "services/pgbouncer/pgbouncer.ini").read_text()
    for key, value in extra_ini.items():
        ini = re.sub(rf"^{key} = .*$", f"{key} = {value}", ini, flags=re.MULTILINE)
    (workdir / "pgbouncer.ini").write_text(ini)
    (workdir / "pgbouncer_hba.conf").write_text(hba)
    for filename, content in files.items():
        (workdir / filename).write_text(content)
    for path in workdir.iterdir():
        path.chmod(0o644)
    volume = f"{stack.project}_bench-{name}-socket"
    client.volumes.create(volume)
    command = ["pgbouncer", "/etc/pgstack/pgbouncer.ini"]
    if bypass_entrypoint:
        command = ["setpriv", "--reuid=pgbouncer", "--regid=pgbouncer", "--init-groups", *command]
    container = client.containers.run(
        f"pgstack-pgbouncer:{IMAGE_TAG}",
        command,
        entrypoint=[] if bypass_entrypoint else None,
        name=f"{stack.project}-bench-{name}",
        detach=True,
        network=f"{stack.project}_backend",
        volumes={
            str(workdir / "pgbouncer.ini"): {"bind": "/etc/pgstack/pgbouncer.ini", "mode": "ro"},
            str(workdir / "pgbouncer_hba.conf"): {
                "bind": "/etc/pgstack/pgbouncer_hba.conf",
                "mode": "ro",
            },
            str(workdir): {"bind": "/etc/bench", "mode": "ro"},
            str(stack.secrets_dir): {"bind": "/run/secrets", "mode": "ro"},
            volume: {"bind": "/run/pgbouncer", "mode": "rw"},
        },
    )
    deadline = time.monotonic() + 60
    while b"process up" not in container.logs():
        container.reload()
        if container.status == "exited" or time.monotonic() > deadline:
            raise RuntimeError(
                f"bench PgBouncer {name} did not start:\n{container.logs().decode()}"
            )
        time.sleep(0.2)
    return container.name, volume


def run(stack: Stack) -> list[PgbenchResult]:
    client = docker.from_env()
    verifier = stack.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
    assert verifier.startswith("SCRAM-SHA-256$4096:"), "expected a SCRAM-4096 verifier for app"
    started: list[str] = []
    try:
        trust, trust_volume = _variant_pgbouncer(
            stack,
            "trust",
            "local all all trust\n",
            {"unix_socket_mode": "0777", "auth_file": "/etc/bench/userlist.txt"},
            {"userlist.txt": f'"app" "{stack.secret("app_password")}"\n'},
            bypass_entrypoint=True,
        )
        started.append(trust)
        scram, _ = _variant_pgbouncer(
            stack,
            "scram",
            "host all all 0.0.0.0/0 scram-sha-256\n",
            {"auth_file": "/etc/bench/userlist.txt"},
            {"userlist.txt": f'"app" "{verifier}"\n'},
        )
        started.append(scram)
        socket_dsn = "host=/run/pgbouncer port=6432 dbname=pgstack user=app"
        variants = {
            "api_path (socket, group 0660)": (socket_dsn, "10001:10001",
                                        f"{stack.project}_pgbouncer-run", {}),
            "ceiling (socket, open 0777)": (socket_dsn, "10001:10001", trust_volume, {}),
            "scram_tcp (SCRAM-4096, TCP)": (f"host={scram} port=6432 dbname=pgstack user=app",
                                            "postgres", None,
                                            {"PGPASSWORD": stack.secret("app_password")}),
        }  # fmt: skip
        # Interleaved rounds, median per variant: drift on a shared machine hits all variants
        # alike instead of whichever happened to run during a busy moment.
        runs: dict[str, list[tuple[float, int]]] = {name: [] for name in variants}
        for _ in range(ROUNDS):
            for name, (dsn, user, volume, env) in variants.items():
                runs[name].append(_pgbench(stack, dsn, user=user, volume=volume, env=env))
        return [
            PgbenchResult(
                name,
                statistics.median(tps for tps, _ in samples),
                sum(failed for _, failed in samples),
                [tps for tps, _ in samples],
            )
            for name, samples in runs.items()
        ]
    finally:
        for name in started:
            client.containers.get(name).remove(force=True)
        for name in ("trust", "scram"):
            with contextlib.suppress(docker.errors.NotFound):
                client.volumes.get(f"{stack.project}_bench-{name}-socket").remove(force=True)
