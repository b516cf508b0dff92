"""Fixtures for tests against the real compose stack.

Images are built once per session. Tests that only read and write through the API share one
stack (`stack`); tests that break things on purpose get a private one (`private_stack`).
A missing Docker engine is an error, never a skip: in CI every test runs.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from tests.stack.compose import REPO, Stack, build_images


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/stack/" in str(item.path):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"the stack tests need a running Docker engine ({exc}); see README 'Tests'")
    return client


@pytest.fixture(scope="session")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secrets")
    subprocess.run([str(REPO / "scripts/secrets.sh"), str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient, secrets_dir: Path) -> None:
    build_images(secrets_dir)


@pytest.fixture(scope="session")
def stack_factory(images: None, secrets_dir: Path) -> Iterator[Callable[[str], Stack]]:
    started: list[Stack] = []

    def make(name: str) -> Stack:
        stack = Stack(project=f"pgstack-t{os.getpid()}-{name}", secrets_dir=secrets_dir)
        started.append(stack)
        return stack

    yield make
    for stack in started:
        stack.down()


@pytest.fixture(scope="session")
def stack(stack_factory: Callable[[str], Stack]) -> Stack:
    """The shared stack: healthy, migrated, never broken on purpose."""
    shared = stack_factory("shared")
    shared.up()
    return shared


@pytest.fixture(scope="module")
def private_stack(
    stack_factory: Callable[[str], Stack], request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """A stack of the module's own, for tests that stop, kill or signal its services. Removed when
    the module ends: each stack holds two networks from Docker's default address pools (about 30)
    and keeps a CPU busy with health checks."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    private = stack_factory(name)
    try:
        private.up()
        yield private
    finally:
        private.down()
