"""The Makefile's db-* targets (the original guide's db:* scripts), run as a user runs them."""

from __future__ import annotations

import json
import subprocess

from tests.stack.compose import REPO, Stack


def make(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO, env=stack.env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_db_check_prints_a_table_for_people(stack: Stack) -> None:
    result = make(stack, "db-check")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "database check: OK", result.stdout
    assert any(line.startswith("API path (PgBouncer)") and " yes " in line for line in lines)
    assert any(line.split()[:1] == ["orders"] for line in lines), result.stdout
    assert not result.stdout.lstrip().startswith("{")


def test_db_check_reports_both_paths_pools_and_tables_as_json_on_request(stack: Stack) -> None:
    result = make(stack, "db-check", "JSON=1")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    for path in ("api_path", "direct"):
        assert report[path]["ok"] is True
        assert report[path]["server_version"].startswith("17."), report[path]
    assert report["pgbouncer"]["ok"] is True
    assert any(p["database"] == "pgstack" for p in report["pgbouncer"]["pools"]), report[
        "pgbouncer"
    ]
    assert {"users", "products", "orders", "order_items"} <= set(report["tables"])


def test_db_status_is_at_head(stack: Stack) -> None:
    result = make(stack, "db-status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"at_head": true' in result.stdout


def test_db_seed_is_idempotent(stack: Stack) -> None:
    first = make(stack, "db-seed")
    assert first.returncode == 0, first.stdout + first.stderr
    counts = stack.psql(
        "SELECT (SELECT count(*) FROM users) || '/' || (SELECT count(*) FROM products)"
    )
    second = make(stack, "db-seed")
    assert second.returncode == 0, second.stdout + second.stderr
    assert (
        stack.psql("SELECT (SELECT count(*) FROM users) || '/' || (SELECT count(*) FROM products)")
        == counts
    )


def test_db_init_is_idempotent_and_keeps_the_stack_working(stack: Stack) -> None:
    for _ in range(2):
        result = make(stack, "db-init")
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout.strip().splitlines()[-1])["status"] == "ok"
    with stack.http() as http:
        assert http.get("/api/products", params={"limit": 1}).status_code == 200


def test_db_reset_refuses_without_confirm(stack: Stack) -> None:
    before = stack.psql("SELECT count(*) FROM products")
    result = make(stack, "db-reset")
    assert result.returncode != 0
    assert "CONFIRM=1" in result.stderr
    assert stack.psql("SELECT count(*) FROM products") == before


def test_prepared_statements_survive_transaction_pooling_under_concurrency(stack: Stack) -> None:
    # prepare_threshold=0 prepares every statement; in autocommit each execute is its own
    # transaction, so consecutive executes land on different server connections. PgBouncer
    # (max_prepared_statements > 0) must re-prepare them there, or psycopg gets
    # "prepared statement ... does not exist".
    code = """
import threading, psycopg
errors = []
def work(n):
    try:
        with psycopg.connect("host=/run/pgbouncer port=6432 dbname=pgstack user=app",
                             prepare_threshold=0, autocommit=True) as conn:
            for i in range(40):
                assert conn.execute("SELECT %s::int + %s::int", (i, n)).fetchone()[0] == i + n
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
[t.start() for t in threads]; [t.join() for t in threads]
print("ERRORS", len(errors), errors[:2])
"""
    exit_code, out = stack.exec("api", "python3", "-c", code, user="app")
    assert exit_code == 0, out
    assert "ERRORS 0 []" in out, out


def test_the_migrations_and_the_tables_the_code_queries_agree(stack: Stack) -> None:
    # alembic check autogenerates against the migrated database: any difference between
    # pgstack_api/tables.py and what the migrations built fails it.
    result = stack.compose(
        "run", "--rm", "--no-deps", "migrate", "alembic", "-c", "/app/alembic.ini", "check",
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr
