"""Fixtures for the cluster tests: one cluster per module (three etcd members, three Patroni nodes,
HAProxy, PgBouncer, migrate and the API), built from the session's images.

The project is `pgstack-ha-t<pid>-<module>` (removed by tests/conftest.py when a killed run left
it); PGSTACK_HA_TEST_PREFIX replaces `pgstack-ha-t<pid>`, e.g. to keep a developer's run apart
from others on the same engine.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ha.cluster import Cluster, healthy
from tests.stack.compose import REPO, compose_env

# The stack harness's session fixtures (Docker client, secrets, images built once).
from tests.stack.conftest import docker_client, images, secrets_dir  # noqa: F401


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/ha/" in str(item.path):
            item.add_marker(pytest.mark.ha)


@pytest.fixture(scope="session")
def ha_images(images: None, secrets_dir: Path) -> None:  # noqa: F811
    """The cluster's own images (etcd, patroni, haproxy), once per session; the others are the
    stack's, already built."""
    subprocess.run(
        [str(REPO / "scripts/secrets.sh"), str(secrets_dir), "ha"], check=True, capture_output=True
    )
    env = {**compose_env("pgstack-build", secrets_dir, 0), "COMPOSE_FILE": "docker-compose.ha.yml"}
    subprocess.run(
        ["docker", "compose", "build", "--quiet", "etcd1", "patroni1", "haproxy"],
        cwd=REPO, env=env, check=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cluster(
    ha_images: None,
    secrets_dir: Path,  # noqa: F811
    request: pytest.FixtureRequest,
) -> Iterator[Cluster]:
    """A cluster of the module's own, migrated, with a leader, a synchronous standby and a
    replica; removed when the module ends."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    prefix = os.environ.get("PGSTACK_HA_TEST_PREFIX") or f"pgstack-ha-t{os.getpid()}"
    started = Cluster(project=f"{prefix}-{name}", secrets_dir=secrets_dir)
    try:
        # As a user brings it up: make ha-up starts every service in order (etcd, its auth job,
        # initdb on one node, two clones of it, ...) and returns once Patroni names a synchronous
        # standby, printing the cluster's table.
        result = started.make_target("ha-up", timeout=600)
        if result.returncode != 0:
            logs = started.compose("logs", "--no-color", "--tail=60", check=False).stdout
            raise AssertionError(f"make ha-up failed:\n{result.stdout}{result.stderr}\n{logs}")
        assert "Sync Standby" in result.stdout, result.stdout
        started.wait_members(healthy, timeout=90, what="leader + sync standby + replica")
        yield started
    finally:
        started.down()
