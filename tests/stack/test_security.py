"""Least privilege, authentication and secret hygiene, on the shared stack."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.stack.compose import IMAGE_TAG, Stack

# Runs inside the api container as the app user, on the API's own path (PgBouncer's socket).
_APP_DDL = """
import psycopg
with psycopg.connect("host=/run/pgbouncer port=6432 dbname=pgstack user=app", autocommit=True) as c:
    try:
        c.execute("CREATE TABLE ddl_probe (id int)")
    except psycopg.errors.InsufficientPrivilege as exc:
        print("DENIED", exc.sqlstate)
    else:
        print("ALLOWED")
    print("DML", c.execute("SELECT count(*) FROM products").fetchone()[0] >= 0)
"""

_LOGIN = """
import sys, psycopg
try:
    psycopg.connect(sys.argv[1], password=sys.argv[2], connect_timeout=5, autocommit=True).close()
except psycopg.OperationalError as exc:
    print("REJECTED", str(exc).strip().splitlines()[-1])
else:
    print("ACCEPTED")
"""


def _python_in_api(stack: Stack, code: str, *args: str) -> str:
    exit_code, out = stack.exec("api", "python3", "-c", code, *args, user="app")
    assert exit_code == 0, out
    return out


def test_the_app_role_cannot_run_ddl_but_can_read_and_write(stack: Stack) -> None:
    out = _python_in_api(stack, _APP_DDL)
    assert "DENIED 42501" in out
    assert "DML True" in out


@pytest.mark.parametrize(
    ("dsn", "secret"),
    [
        (
            "host=pgbouncer port=6432 dbname=pgbouncer user=pgbouncer_stats",
            "pgbouncer_stats_password",
        ),
        ("host=postgres port=5432 dbname=pgstack user=app_owner", "app_owner_password"),
    ],
)
def test_a_wrong_password_is_rejected_and_the_right_one_accepted(
    stack: Stack, dsn: str, secret: str
) -> None:
    assert "REJECTED" in _python_in_api(stack, _LOGIN, dsn, "wrong-password")
    assert "ACCEPTED" in _python_in_api(stack, _LOGIN, dsn, stack.secret(secret))


def test_the_app_role_cannot_log_in_to_pgbouncer_over_tcp(stack: Stack) -> None:
    dsn = "host=pgbouncer port=6432 dbname=pgstack user=app"
    assert "REJECTED" in _python_in_api(stack, _LOGIN, dsn, stack.secret("app_password"))


def test_the_superuser_cannot_log_in_over_the_network(stack: Stack) -> None:
    dsn = "host=postgres port=5432 dbname=pgstack user=postgres"
    assert "REJECTED" in _python_in_api(stack, _LOGIN, dsn, stack.secret("postgres_password"))


def test_no_database_port_is_published_and_the_database_network_is_internal(stack: Stack) -> None:
    for service in ("postgres", "pgbouncer"):
        container = stack.container(service)
        assert not container.attrs["HostConfig"]["PortBindings"], service
        assert not any(container.ports.values()), container.ports
        networks = container.attrs["NetworkSettings"]["Networks"]
        assert list(networks) == [f"{stack.project}_backend"], networks
    backend = stack.client.networks.get(f"{stack.project}_backend")
    assert backend.attrs["Internal"] is True
    api_ports = stack.container("api").ports["8000/tcp"]
    assert [p["HostIp"] for p in api_ports] == ["127.0.0.1"]


def test_no_service_process_runs_as_root(stack: Stack) -> None:
    for service in ("postgres", "pgbouncer", "api"):
        top = stack.container(service).top(ps_args="-o user,pid,comm")
        users = {row[0] for row in top["Processes"]}
        assert "root" not in users, (service, top["Processes"])


def test_no_secret_appears_in_inspect_image_history_or_logs(stack: Stack) -> None:
    secrets = [p.read_text().strip() for p in sorted(stack.secrets_dir.iterdir())]
    assert len(secrets) >= 6 and all(len(s) >= 32 for s in secrets)
    haystacks: dict[str, str] = {}
    for service in ("postgres", "pgbouncer", "migrate", "api"):
        container = stack.container(service)
        haystacks[f"inspect {service}"] = json.dumps(container.attrs)
        haystacks[f"logs {service}"] = container.logs().decode(errors="replace")
    for image in ("postgres", "pgbouncer", "api"):
        name = f"pgstack-{image}:{IMAGE_TAG}"
        haystacks[f"image {name}"] = json.dumps(stack.client.images.get(name).attrs)
        history = subprocess.run(
            ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", name],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        haystacks[f"history {name}"] = history.stdout
    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"a secret appears in {where}"


def test_the_ca_bundle_build_secret_is_not_in_any_layer(stack: Stack) -> None:
    _, out = stack.exec("api", "sh", "-c", "ls /run/secrets/ca_bundle 2>&1; echo $PIP_CERT")
    assert "No such file" in out
    history = subprocess.run(
        ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}",
         f"pgstack-api:{IMAGE_TAG}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "BEGIN CERTIFICATE" not in history


_SOCKET_LOGIN = """
import sys, psycopg
try:
    psycopg.connect("host=/run/pgbouncer port=6432 dbname=pgstack user=" + sys.argv[1],
                    connect_timeout=5).close()
except psycopg.OperationalError as exc:
    print("REJECTED", " ".join(str(exc).split()))
else:
    print("ACCEPTED")
"""


def _socket_login(stack: Stack, user: str, groups: list[str], role: str = "app") -> str:
    """Connect to PgBouncer's socket from a fresh container of the API image, as uid:gid `user`."""
    output: bytes = stack.client.containers.run(
        f"pgstack-api:{IMAGE_TAG}",
        ["python3", "-c", _SOCKET_LOGIN, role],
        entrypoint=[],
        user=user,
        group_add=groups,
        volumes={f"{stack.project}_pgbouncer-run": {"bind": "/run/pgbouncer", "mode": "rw"}},
        network_mode="none",
        remove=True,
    )
    return output.decode()


def test_the_api_socket_is_open_to_its_group_only(stack: Stack) -> None:
    code, out = stack.exec("pgbouncer", "stat", "-c", "%a %g", "/run/pgbouncer/.s.PGSQL.6432")
    assert code == 0 and out.split() == ["660", "10010"], out
    assert "ACCEPTED" in _socket_login(stack, "10001:10001", ["10010"])
    outsider = _socket_login(stack, "10005:10005", [])
    assert "REJECTED" in outsider and "Permission denied" in outsider, outsider


def test_only_the_app_role_may_use_the_socket(stack: Stack) -> None:
    for role in ("app_owner", "app_backup", "postgres"):
        assert "REJECTED" in _socket_login(stack, "10001:10001", ["10010"], role), role
