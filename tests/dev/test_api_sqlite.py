"""The HTTP contract (status codes, error bodies, headers, schema, metrics), in process on a
migrated SQLite database: the same app and migrations the stack runs, without Docker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgstack_api import migrations
from pgstack_api.app import create_app
from pgstack_api.settings import load_settings
from starlette.testclient import TestClient

API_DIR = Path(__file__).resolve().parents[2] / "services" / "api"
OPS_TOKEN = "test-ops-token-0123456789"  # noqa: S105 -- a test value
LIMIT = 4096


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("api") / "api.db"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PGSTACK_ALEMBIC_INI", str(API_DIR / "alembic.ini"))
        settings = load_settings(
            env="dev",
            database_url=f"sqlite+aiosqlite:///{db}",
            ops_token=OPS_TOKEN,
            max_body_bytes=LIMIT,
            log_format="json",
        )
        asyncio.run(migrations.deploy(settings, lock_timeout=10))
        with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
            yield test_client


def _error(response_json: dict[str, dict[str, str]], code: str) -> None:
    assert response_json["error"]["code"] == code
    assert response_json["error"]["message"]


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post("/api/products", content=b'{"sku": ')
    assert response.status_code == 400
    _error(response.json(), "malformed_json")


@pytest.mark.parametrize(
    "body",
    [
        {"sku": "X-1", "name": "x", "price_cents": "cheap", "stock": 1},
        {"sku": "X-2", "name": "x", "price_cents": 100, "stock": -1},
        {"name": "missing sku", "price_cents": 100},
        [1, 2, 3],
    ],
)
def test_wrong_shapes_are_422_with_details(client: TestClient, body: object) -> None:
    response = client.post("/api/products", json=body)
    assert response.status_code == 422, response.text
    _error(response.json(), "validation_error")
    assert response.json()["error"]["details"]


@pytest.mark.parametrize(
    "path", ["/api/products/987654", "/api/orders/987654", "/api/users/987654", "/api/nope"]
)
def test_unknown_ids_and_routes_are_404_json(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"].endswith("not_found")


def test_ids_beyond_bigint_are_404_not_a_database_error(client: TestClient) -> None:
    assert client.get(f"/api/products/{2**64}").status_code == 404


def test_a_wrong_method_is_405_json(client: TestClient) -> None:
    response = client.delete("/api/products")
    assert response.status_code == 405
    _error(response.json(), "method_not_allowed")


def test_a_declared_oversized_body_is_413_before_reading(client: TestClient) -> None:
    response = client.post("/api/products", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    _error(response.json(), "body_too_large")


def test_a_chunked_body_growing_past_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 1024

    response = client.post("/api/products", content=chunks())
    assert response.status_code == 413
    _error(response.json(), "body_too_large")


def test_duplicates_are_409(client: TestClient) -> None:
    body = {"sku": "DUP-1", "name": "dup", "price_cents": 1, "stock": 1}
    assert client.post("/api/products", json=body).status_code == 201
    response = client.post("/api/products", json=body)
    assert response.status_code == 409
    _error(response.json(), "duplicate")
    user = {"email": "Dup@Example.com", "name": "d"}
    assert client.post("/api/users", json=user).status_code == 201
    assert client.post("/api/users", json={**user, "email": "dup@example.com"}).status_code == 409


def test_an_order_for_an_unknown_user_or_product_is_404(client: TestClient) -> None:
    product = client.post(
        "/api/products", json={"sku": "O-1", "name": "o", "price_cents": 5, "stock": 5}
    ).json()
    user = client.post("/api/users", json={"email": "o@example.com", "name": "o"}).json()
    no_user = {"user_id": 999999, "items": [{"product_id": product["id"], "quantity": 1}]}
    no_product = {"user_id": user["id"], "items": [{"product_id": 999999, "quantity": 1}]}
    assert client.post("/api/orders", json=no_user).json()["error"]["code"] == "user_not_found"
    response = client.post("/api/orders", json=no_product)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "product_not_found"
    assert client.get(f"/api/products/{product['id']}").json()["stock"] == 5


def test_a_failed_line_rolls_back_the_whole_order(client: TestClient) -> None:
    def product(sku: str, stock: int) -> int:
        body = {"sku": sku, "name": sku, "price_cents": 10, "stock": stock}
        return int(client.post("/api/products", json=body).json()["id"])

    plenty, scarce = product("RB-PLENTY", 100), product("RB-SCARCE", 1)
    user = client.post("/api/users", json={"email": "rb@example.com", "name": "r"}).json()["id"]
    order = {
        "user_id": user,
        "items": [{"product_id": plenty, "quantity": 5}, {"product_id": scarce, "quantity": 2}],
    }
    response = client.post("/api/orders", json=order)
    assert response.status_code == 409
    _error(response.json(), "out_of_stock")
    assert client.get(f"/api/products/{plenty}").json()["stock"] == 100


def test_products_are_paged_by_keyset(client: TestClient) -> None:
    for n in range(3):
        client.post(
            "/api/products", json={"sku": f"PG-{n}", "name": "p", "price_cents": 1, "stock": 1}
        )
    first = client.get("/api/products", params={"limit": 2}).json()
    assert len(first["items"]) == 2 and first["next_after"] == first["items"][-1]["id"]
    second = client.get("/api/products", params={"limit": 2, "after": first["next_after"]}).json()
    assert second["items"][0]["id"] > first["items"][-1]["id"]
    assert client.get("/api/products", params={"limit": 0}).status_code == 422


def test_request_ids_are_honoured_or_minted(client: TestClient) -> None:
    assert client.get("/livez", headers={"X-Request-ID": "abc-42"}).headers["X-Request-ID"] == (
        "abc-42"
    )
    minted = client.get("/livez", headers={"X-Request-ID": "bad id\t"}).headers["X-Request-ID"]
    assert minted != "bad id\t" and len(minted) == 32


def test_health_hides_versions_unless_the_ops_token_is_given(client: TestClient) -> None:
    anonymous = client.get("/api/health")
    assert anonymous.status_code == 200, anonymous.text
    body = anonymous.json()
    assert {"status", "timestamp", "uptime", "database", "migration"} <= body.keys()
    assert body["migration"]["at_head"] is True
    assert "version" not in body and "memory" not in body
    wrong = client.get("/api/health", headers={"Authorization": "Bearer nope"}).json()
    assert "version" not in wrong
    ops = client.get("/api/health", headers={"Authorization": f"Bearer {OPS_TOKEN}"}).json()
    assert ops["version"]["app"] and ops["memory"]["rss_bytes"] > 0


def test_metrics_count_by_route_template(client: TestClient) -> None:
    client.get("/api/products/987654")
    text = client.get("/metrics").text
    assert 'route="/api/products/{id:int}"' in text
    assert 'status="404"' in text
    assert "pgstack_http_request_duration_seconds_bucket" in text


def test_the_openapi_schema_documents_the_error_responses(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    responses = schema["paths"]["/api/orders"]["post"]["responses"]
    assert {"201", "400", "404", "409", "413", "422", "503"} <= responses.keys()
    assert "Retry-After" in responses["503"]["headers"]
    assert "OrderIn" in schema["components"]["schemas"]


def test_each_request_writes_one_access_line_within_the_flush_interval(
    client: TestClient, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    client.get("/livez", headers={"X-Request-ID": "dev-access-line"})
    time.sleep(0.3)  # the batch goes out at most 0.1 s after the request
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.strip()]
    mine = [line for line in lines if line.get("request_id") == "dev-access-line"]
    assert len(mine) == 1, lines
    assert mine[0]["msg"] == "request" and mine[0]["status"] == 200
    assert mine[0]["route"] == "/livez" and mine[0]["logger"] == "pgstack_api.request"
