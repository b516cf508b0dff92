"""Fixtures for the backup tests: stacks of their own (project prefix pgstack-bk-), with
per-stack settings for the backup service, built from the session's images (tests.stack)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# The stack harness's session fixtures (Docker client, secrets, images built once).
from tests.stack.compose import IMAGE_TAG, REPO, Stack
from tests.stack.conftest import docker_client, images, secrets_dir  # noqa: F401

# The backup package's pure modules (retention) import without its runtime dependencies.
sys.path.insert(0, str(REPO / "services" / "backup"))

BACKUP_CLI = ("exec", "-T", "--user", "postgres", "backup", "pgstack-backup")


@dataclass
class BackupStack(Stack):
    """A Stack with extra environment for compose (backup settings) and optional override files."""

    extra_env: dict[str, str] = field(default_factory=dict)
    override: str = ""
    # Compose files of the repository to add (e.g. services/backup/compose.s3.yml).
    extra_files: tuple[str, ...] = ()

    @property
    def env(self) -> dict[str, str]:
        env = {**super().env, **self.extra_env}
        files = [str(REPO / "docker-compose.yml"), *(str(REPO / f) for f in self.extra_files)]
        if self.override:
            path = self.secrets_dir.parent / f"{self.project}.override.yml"
            path.write_text(self.override)
            files.append(str(path))
        env["COMPOSE_FILE"] = ":".join(files)
        return env

    def backup_cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.compose(*BACKUP_CLI, *args, check=False, timeout=timeout)

    def make(self, *targets: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "--no-print-directory", *targets], cwd=REPO, env=self.env,
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def backup(self) -> dict[str, Any]:
        """`pgstack-backup run`; returns its summary line (asserts success)."""
        result = self.backup_cli("run")
        assert result.returncode == 0, result.stdout + result.stderr
        return last_event(result.stdout, "backup")

    def backups(self) -> list[str]:
        """The dump directory's entries (partial ones included)."""
        code, out = self.exec("backup", "ls", "-a", "/var/lib/pgstack-backup/dumps")
        assert code == 0, out
        return sorted(n for n in out.split() if n not in {".", ".."})

    def physical(self) -> list[dict[str, Any]]:
        """pgBackRest's backups (info --output=json), oldest first."""
        code, out = self.exec("backup", "pgbackrest", "--stanza=pgstack", "info", "--output=json",
                              user="postgres")  # fmt: skip
        assert code == 0, out
        stanzas = json.loads(out)
        return list(stanzas[0].get("backup", [])) if stanzas else []

    def wait_ready(self, timeout: float = 30) -> None:
        """/readyz answers 200 three times in a row: every API worker has seen the database back
        (each caches its readiness for about a second)."""
        deadline, streak = time.monotonic() + timeout, 0
        with self.http(timeout=5) as http:
            while streak < 3:
                assert time.monotonic() < deadline, f"/readyz not steadily 200 after {timeout} s"
                streak = streak + 1 if http.get("/readyz").status_code == 200 else 0
                time.sleep(0.3)

    def rows(self, where: str) -> int:
        return int(self.psql(f"SELECT count(*) FROM users WHERE {where}"))


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def last_event(stdout: str, name: str) -> dict[str, Any]:
    found = [e for e in events(stdout) if e.get("event") == name]
    assert found, f"no {name!r} event in:\n{stdout}"
    return found[-1]


@pytest.fixture(scope="session")
def backup_stack_factory(
    images: None,  # noqa: F811
    secrets_dir: Path,  # noqa: F811
) -> Iterator[Callable[..., BackupStack]]:
    started: list[BackupStack] = []

    def make(name: str, env: dict[str, str] | None = None, override: str = "",
             extra_files: tuple[str, ...] = ()) -> BackupStack:  # fmt: skip
        stack = BackupStack(
            project=f"pgstack-bk-{os.getpid()}-{name}", secrets_dir=secrets_dir,
            extra_env=env or {}, override=override, extra_files=extra_files,
        )  # fmt: skip
        started.append(stack)
        return stack

    yield make
    for stack in started:
        stack.down()


OFFSITE = "/var/lib/pgstack-offsite"


@pytest.fixture(scope="session")
def age_identity(images: None) -> tuple[str, str]:  # noqa: F811
    """An age key pair made by the backup image's age-keygen: (public key, secret identity)."""
    out = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "age-keygen", f"pgstack-backup:{IMAGE_TAG}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    public = next(line.split(": ")[1] for line in out.splitlines() if "public key" in line)
    secret = next(line for line in out.splitlines() if line.startswith("AGE-SECRET-KEY-"))
    return public, secret


@pytest.fixture(scope="session")
def bstack(
    backup_stack_factory: Callable[..., BackupStack], age_identity: tuple[str, str]
) -> BackupStack:
    """The backup tests' shared stack: dumps copied off-site encrypted with age, and pgBackRest's
    repo2 (encrypted) on the off-site volume. Tests here restore, but never break it."""
    env = {"BACKUP_OFFSITE_DIR": OFFSITE, "BACKUP_OFFSITE_AGE_RECIPIENT": age_identity[0],
           "BACKUP_REPO2": "posix"}  # fmt: skip
    stack = backup_stack_factory("main", env=env)
    stack.up()
    return stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        pure = ("test_retention", "test_health", "test_window")
        if "tests/backup/" in str(item.path) and not any(p in str(item.path) for p in pure):
            item.add_marker(pytest.mark.stack)
