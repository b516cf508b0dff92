"""A compose project under test: its own name, free port and secrets; docker SDK for the rest."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.models.containers
import httpx

REPO = Path(__file__).resolve().parents[2]
IMAGE_TAG = os.environ.get("PGSTACK_TEST_IMAGE_TAG", "test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def compose_env(project: str, secrets_dir: Path, http_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        COMPOSE_PROJECT_NAME=project,
        PGSTACK_SECRETS_DIR=str(secrets_dir),
        PGSTACK_HTTP_PORT=str(http_port),
        PGSTACK_IMAGE_TAG=IMAGE_TAG,
    )
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if ca.is_file():
        env.setdefault("PGSTACK_CA_BUNDLE", str(ca))
    return env


def build_images(secrets_dir: Path) -> None:
    """Build every image once per test session (compose reuses them for every project)."""
    env = compose_env("pgstack-build", secrets_dir, 0)
    subprocess.run(["docker", "compose", "build", "--quiet"], cwd=REPO, env=env, check=True)


@dataclass
class Stack:
    """One compose project; `up()` waits until every service is healthy."""

    project: str
    secrets_dir: Path
    http_port: int = field(default_factory=free_port)
    client: docker.DockerClient = field(default_factory=docker.from_env)
    # Knobs for this project only (e.g. a smaller memory limit), over the environment's.
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**compose_env(self.project, self.secrets_dir, self.http_port), **self.overrides}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def compose(
        self, *args: str, check: bool = True, timeout: float = 600, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "compose", *args],
            cwd=REPO,
            env=self.env,
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )

    def up(self, *services: str, wait_timeout: int = 240) -> None:
        result = self.compose(
            "up", "--detach", "--wait", "--wait-timeout", str(wait_timeout), *services, check=False
        )
        if result.returncode != 0:
            logs = self.compose("logs", "--no-color", "--tail=60", check=False).stdout
            raise AssertionError(f"compose up failed:\n{result.stderr}\n--- logs ---\n{logs}")

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)

    def container(self, service: str) -> docker.models.containers.Container:
        found = self.client.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={self.project}",
                    f"com.docker.compose.service={service}",
                    "com.docker.compose.oneoff=False",
                ]
            },
        )
        if not found:
            raise LookupError(f"no container for service {service!r} in project {self.project}")
        return found[0]

    def health(self, service: str) -> str:
        container = self.container(service)
        container.reload()
        state: Mapping[str, Any] = container.attrs["State"]
        return str(state.get("Health", {}).get("Status", state["Status"]))

    def wait_healthy(self, service: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while (status := self.health(service)) != "healthy":
            if time.monotonic() > deadline:
                raise AssertionError(f"{service} is {status} after {timeout} s")
            time.sleep(0.5)

    def exec(self, service: str, *cmd: str, user: str | None = None) -> tuple[int, str]:
        """Run a command in a service container; returns (exit code, stdout+stderr)."""
        kwargs: dict[str, Any] = {"user": user} if user else {}
        code, output = self.container(service).exec_run(list(cmd), demux=False, **kwargs)
        return int(code), output.decode(errors="replace")

    def psql(self, sql: str, database: str = "pgstack") -> str:
        """Run SQL in the postgres container as the superuser (peer auth over its own socket)."""
        code, out = self.exec(
            "postgres", "psql", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "--tuples-only",
            "--no-align", "--dbname", database, "--command", sql, user="postgres",
        )  # fmt: skip
        if code != 0:
            raise AssertionError(f"psql failed ({code}): {out}")
        return out.strip()

    def http(self, timeout: float = 20) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout)

    def secret(self, name: str) -> str:
        return (self.secrets_dir / name).read_text().strip()


def create_user(http: httpx.Client) -> int:
    """A new user through the API; returns its id."""
    response = http.post(
        "/api/users", json={"email": f"{uuid.uuid4().hex}@example.test", "name": "Test Buyer"}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def create_product(http: httpx.Client, stock: int, price_cents: int = 1999) -> int:
    """A new product with a unique SKU through the API; returns its id."""
    response = http.post(
        "/api/products",
        json={"sku": f"T-{uuid.uuid4().hex[:12]}", "name": "Test item",
              "price_cents": price_cents, "stock": stock},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return int(response.json()["id"])
