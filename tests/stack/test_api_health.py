"""Probes and the health document, on the shared stack."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from tests.stack.compose import Stack


def test_livez_answers_without_the_database(stack: Stack) -> None:
    with stack.http() as http:
        response = http.get("/livez")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_readyz_is_ready_through_pgbouncer(stack: Stack) -> None:
    with stack.http() as http:
        response = http.get("/readyz")
    assert response.status_code == 200, response.text


def test_health_has_the_guides_shape_and_hides_versions_from_anonymous_callers(
    stack: Stack,
) -> None:
    with stack.http() as http:
        body = http.get("/api/health").json()
    for key in ("status", "timestamp", "uptime", "database", "migration"):
        assert key in body, body
    assert body["database"]["status"] == "up"
    assert body["migration"]["at_head"] is True
    assert "version" not in body and "memory" not in body


def test_health_shows_versions_and_memory_with_the_ops_token(stack: Stack) -> None:
    token = stack.secret("ops_token")
    with stack.http() as http:
        body = http.get("/api/health", headers={"Authorization": f"Bearer {token}"}).json()
        wrong = http.get("/api/health", headers={"Authorization": "Bearer not-the-token"}).json()
    assert "PostgreSQL 17" in str(body["version"]), body["version"]
    assert body["memory"], body
    assert "version" not in wrong


def test_request_id_is_honoured_and_returned(stack: Stack) -> None:
    with stack.http() as http:
        given = http.get("/livez", headers={"X-Request-ID": "test-req-42"})
        generated = http.get("/livez")
    assert given.headers["X-Request-ID"] == "test-req-42"
    assert len(generated.headers["X-Request-ID"]) >= 8


def test_metrics_count_requests_by_route_and_status(stack: Stack) -> None:
    with stack.http() as http:
        http.get("/readyz")
        text = http.get("/metrics").text
    assert "readyz" in text
    assert 'status="200"' in text


# Methods the HTTP parser accepts (it refuses unknown tokens with 400 itself) beyond ours.
_OTHER_METHODS = ("PROPFIND", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "PURGE",
                  "REPORT", "MERGE", "NOTIFY", "SUBSCRIBE", "LINK", "UNLINK")  # fmt: skip


def test_made_up_methods_and_paths_add_no_metric_series(stack: Stack) -> None:
    with stack.http() as http:
        for n, method in enumerate(_OTHER_METHODS * 4):
            http.request(method, f"/no/such/path/{n}")
            http.request(f"X{n}METHOD", f"/api/products/{n}")
        text = http.get("/metrics").text
    methods = {
        line.split('method="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("pgstack_http_requests_total{")
    }
    assert "other" in methods
    # The standard methods keep their names (the fuzzer sends TRACE); every other token is "other".
    standard = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
    assert methods <= standard | {"other"}
    assert "/no/such/path" not in text
    assert len(text) < 100_000


def test_openapi_schema_lists_the_routes(stack: Stack) -> None:
    with stack.http() as http:
        schema = http.get("/openapi.json").json()
    assert "/api/products" in schema["paths"]
    assert "/api/orders" in schema["paths"]


def test_each_request_logs_one_json_line_with_its_request_id(stack: Stack) -> None:
    request_id = f"log-probe-{uuid.uuid4().hex[:12]}"
    with stack.http() as http:
        http.get("/api/products", params={"limit": 1}, headers={"X-Request-ID": request_id})
    deadline = time.monotonic() + 10
    lines: list[dict[str, object]] = []
    while not lines and time.monotonic() < deadline:
        logs = stack.container("api").logs(tail=500).decode(errors="replace").splitlines()
        lines = [json.loads(line) for line in logs if request_id in line]
        time.sleep(0.2)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line["request_id"] == request_id
    assert line["method"] == "GET" and line["status"] == 200
    assert isinstance(line["duration_ms"], (int, float))


def test_every_worker_runs_on_uvloop_and_httptools(stack: Stack) -> None:
    """The fast event loop and HTTP parser are the ones loaded, in every worker: a missing wheel
    or a dropped --loop/--http flag would fall back to asyncio and h11 without a word. Read from
    the host (the tests run as root): the workers are not dumpable from inside the container."""
    top = stack.container("api").top(ps_args="-o pid,args")
    workers = [int(row[0]) for row in top["Processes"] if "spawn_main" in row[1]]
    assert len(workers) >= 2, top
    for pid in workers:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "uvloop" in maps and "httptools" in maps, (pid, "uvloop" in maps)
