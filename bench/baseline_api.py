"""The comparison baseline: the same API image with an in-process pool, straight to PostgreSQL.

Same code, same container limits; only the path differs: SQLAlchemy's AsyncAdaptedQueuePool
(PGSTACK_DB_POOL_SIZE) holding SCRAM-authenticated TCP connections to PostgreSQL, no PgBouncer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import docker

from bench.comparisons import wait_answering
from tests.stack.compose import IMAGE_TAG, Stack, free_port

# Per worker (3): 30 server connections, as many as PgBouncer may open.
POOL_SIZE = 10


@contextmanager
def pooled_direct_api(stack: Stack) -> Iterator[str]:
    client = docker.from_env()
    port = free_port()
    container = client.containers.create(
        f"pgstack-api:{IMAGE_TAG}",
        name=f"{stack.project}-bench-pooled",
        environment={
            "PGSTACK_ENV": "production",
            "PGSTACK_DATABASE_URL": "postgresql+psycopg://app@postgres:5432/pgstack",
            "PGSTACK_DATABASE_PASSWORD_FILE": "/run/secrets/app_password",
            "PGSTACK_DB_POOL_SIZE": str(POOL_SIZE),
            "PGSTACK_OPS_TOKEN_FILE": "/run/secrets/ops_token",
            "PGSTACK_LOG_FORMAT": "json",
        },
        volumes={str(stack.secrets_dir): {"bind": "/run/secrets", "mode": "ro"}},
        tmpfs={"/run/pgstack-secrets": "", "/tmp": ""},  # noqa: S108 -- the container's own tmpfs
        ports={"8000/tcp": ("127.0.0.1", port)},
        network=f"{stack.project}_frontend",
        mem_limit="512m",
    )
    try:
        client.networks.get(f"{stack.project}_backend").connect(container)
        container.start()
        wait_answering(f"http://127.0.0.1:{port}/readyz", "baseline API", container)
        yield str(container.name)
    finally:
        container.remove(force=True)
