"""The one-shot migration job, and PgBouncer's start-up pool check, on a stack of their own."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest

from tests.stack.compose import IMAGE_TAG, REPO, Stack


@pytest.fixture(scope="module")
def bare_stack(stack_factory: Callable[[str], Stack]) -> Iterator[Stack]:
    """Only PostgreSQL, on an empty database: migrations have not run."""
    stack = stack_factory("bare")
    try:
        stack.up("postgres")
        yield stack
    finally:
        stack.down()


def test_two_concurrent_migrate_runs_both_succeed_and_leave_one_schema(bare_stack: Stack) -> None:
    def migrate(_: int) -> tuple[int, str]:
        result = bare_stack.compose("run", "--rm", "--no-deps", "migrate", check=False)
        return result.returncode, result.stdout + result.stderr

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(migrate, range(2)))

    for code, output in results:
        assert code == 0, output
    assert bare_stack.psql("SELECT count(*) FROM alembic_version") == "1"
    tables = bare_stack.psql(
        "SELECT string_agg(tablename, ',' ORDER BY tablename)"
        " FROM pg_tables WHERE schemaname = 'public'"
    )
    assert tables == "alembic_version,idempotency_keys,order_items,orders,products,users"
    owner = bare_stack.psql("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
    assert owner == "app_owner"


def test_db_status_reports_at_head_after_deploy(bare_stack: Stack) -> None:
    bare_stack.compose("run", "--rm", "--no-deps", "migrate")
    status = bare_stack.compose("run", "--rm", "--no-deps", "migrate", "pgstack-db", "status")
    assert "head" in status.stdout.lower(), status.stdout


def test_db_reset_with_confirm_recreates_an_empty_schema(bare_stack: Stack) -> None:
    bare_stack.compose("run", "--rm", "--no-deps", "migrate")
    bare_stack.psql(
        "SET ROLE app_owner; INSERT INTO users (email, name) VALUES ('r@example.test', 'r')"
    )
    result = subprocess.run(
        ["make", "--no-print-directory", "db-reset", "CONFIRM=1"],
        cwd=REPO, env=bare_stack.env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert bare_stack.psql("SELECT count(*) FROM users") == "0"
    assert bare_stack.psql("SELECT count(*) FROM alembic_version") == "1"


def _pgbouncer_exit(stack: Stack, tmp_path: Path, replacements: dict[str, str]) -> tuple[int, str]:
    """Run PgBouncer's image with an edited pgbouncer.ini until it exits (or 60 s)."""
    ini = (REPO / "services/pgbouncer/pgbouncer.ini").read_text()
    for old, new in replacements.items():
        assert old in ini, old
        ini = ini.replace(old, new)
    config = tmp_path / "pgbouncer.ini"
    config.write_text(ini)
    client = docker.from_env()
    container = client.containers.run(
        f"pgstack-pgbouncer:{IMAGE_TAG}",
        ["pgbouncer", "/etc/pgstack/pgbouncer.ini"],
        detach=True,
        network=f"{stack.project}_backend",
        volumes={
            str(config): {"bind": "/etc/pgstack/pgbouncer.ini", "mode": "ro"},
            str(stack.secrets_dir): {"bind": "/run/secrets", "mode": "ro"},
        },
    )
    try:
        result = container.wait(timeout=60)
        return int(result["StatusCode"]), container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def test_pgbouncer_refuses_to_start_when_its_pools_exceed_max_connections(
    bare_stack: Stack, tmp_path: Path
) -> None:
    code, logs = _pgbouncer_exit(
        bare_stack,
        tmp_path,
        {"default_pool_size = 20": "default_pool_size = 200", "max_db_connections = 30": ""},
    )
    assert code == 1, logs
    assert "PostgreSQL admits only" in logs
    assert "default_pool_size=200" in logs


def test_pgbouncer_refuses_a_socket_mode_that_lets_anyone_in(
    bare_stack: Stack, tmp_path: Path
) -> None:
    code, logs = _pgbouncer_exit(
        bare_stack, tmp_path, {"unix_socket_mode = 0660": "unix_socket_mode = 0666"}
    )
    assert code == 1, logs
    assert "unix_socket_mode = 0666 lets any local user connect" in logs
