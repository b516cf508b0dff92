"""The same-run baselines beside the stack's API: the API as it was at commit 994e2cf (the main
issue 10 was written against, built from git under its own tag), and a bare Starlette app under
the same server settings. Both join the stack's networks like its own api container."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import httpx

from tests.stack.compose import IMAGE_TAG, REPO, Stack, free_port

OLD_COMMIT = "994e2cf"
OLD_IMAGE = f"pgstack-api:bench-{OLD_COMMIT}"
_SERVER = [
    "--host",
    "0.0.0.0",  # noqa: S104 -- inside the container
    "--port",
    "8000",
    "--no-access-log",
    "--no-server-header",
]


def build_old_api() -> None:
    """`git archive` of services/api at OLD_COMMIT, built like the stack builds the API."""
    with tempfile.TemporaryDirectory(prefix="pgstack-old-api-") as tmp:
        archive = Path(tmp) / "api.tar"
        subprocess.run(
            ["git", "archive", "--format=tar", f"--output={archive}", OLD_COMMIT, "services/api"],
            cwd=REPO, check=True,
        )  # fmt: skip
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        # Compose's BuildKit client takes the CA bundle as a build secret (as the stack's
        # own build does); the docker CLI here has no buildx for that.
        ca = os.environ.get("PGSTACK_CA_BUNDLE") or "/dev/null"
        spec = {
            "services": {"old-api": {
                "build": {"context": "services/api", "secrets": ["ca_bundle"],
                          "args": {"BASE_IMAGE": os.environ.get("BASE_IMAGE",
                                                                "debian:trixie-slim")}},
                "image": OLD_IMAGE,
            }},
            "secrets": {"ca_bundle": {"file": ca}},
        }  # fmt: skip
        (Path(tmp) / "compose.yml").write_text(json.dumps(spec))
        # --file: the Makefile exports COMPOSE_FILE (the stack's), which would win otherwise.
        built = subprocess.run(
            ["docker", "compose", "--file", "compose.yml", "--project-name",
             "pgstack-old-api-build", "build", "--quiet"],
            cwd=tmp, capture_output=True, text=True,
        )  # fmt: skip
        if built.returncode != 0:
            raise RuntimeError(f"building {OLD_IMAGE} failed:\n{built.stderr[-3000:]}")


def wait_answering(url: str, name: str, container: Any) -> None:
    """Until `url` answers 200 (60 s at most; then fail with the container's log)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not ready:\n{container.logs().decode()}")
        time.sleep(0.5)


@contextmanager
def _container(stack: Stack, name: str, image: str, **kwargs: Any) -> Iterator[str]:
    """Start a container beside the stack, wait for its /livez; yields the container's name
    (the load runs inside its network namespace, bench/http_load.py)."""
    client = docker.from_env()
    port = free_port()
    container = client.containers.create(
        image,
        name=f"{stack.project}-bench-{name}",
        ports={"8000/tcp": ("127.0.0.1", port)},
        network=f"{stack.project}_frontend",
        **kwargs,
    )
    try:
        client.networks.get(f"{stack.project}_backend").connect(container)
        container.start()
        wait_answering(f"http://127.0.0.1:{port}/livez", name, container)
        yield str(container.name)
    finally:
        container.remove(force=True)


@contextmanager
def old_api(stack: Stack) -> Iterator[str]:
    """The API at OLD_COMMIT on the stack's own path (NullPool, PgBouncer's socket)."""
    with _container(
        stack, "old-api", OLD_IMAGE,
        environment={
            "PGSTACK_ENV": "production",
            "PGSTACK_DATABASE_URL": "postgresql+psycopg://app@/pgstack?host=/run/pgbouncer&port=6432",
            "PGSTACK_OPS_TOKEN_FILE": "/run/secrets/ops_token",
            "PGSTACK_LOG_FORMAT": "json",
        },
        volumes={str(stack.secrets_dir): {"bind": "/run/secrets", "mode": "ro"},
                 f"{stack.project}_pgbouncer-run": {"bind": "/run/pgbouncer", "mode": "rw"}},
        tmpfs={"/run/pgstack-secrets": "", "/tmp": ""},  # noqa: S108 -- the container's tmpfs
        mem_limit="512m",
    ) as url:  # fmt: skip
        yield url


@contextmanager
def bare_starlette(stack: Stack, workers: int) -> Iterator[str]:
    """bench/bare_app.py in the API image, under the API's server settings."""
    with _container(
        stack, "bare", f"pgstack-api:{IMAGE_TAG}",
        command=["uvicorn", "bare_app:app", "--app-dir", "/bench", "--workers", str(workers),
                 "--loop", "uvloop", "--http", "httptools", *_SERVER],
        entrypoint=[],
        user="10001",
        volumes={str(REPO / "bench"): {"bind": "/bench", "mode": "ro"}},
        mem_limit="512m",
    ) as url:  # fmt: skip
        yield url
