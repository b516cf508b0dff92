"""Idempotency-Key on POSTs, on the shared stack: the same key and body give the first response
and never a second effect; another body is 422; an expired key is a new one."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from tests.stack.compose import Stack, create_product, create_user


def _order(user: int, product: int, quantity: int = 1) -> dict[str, object]:
    return {"user_id": user, "items": [{"product_id": product, "quantity": quantity}]}


def test_a_retried_order_with_the_same_key_is_placed_once(stack: Stack) -> None:
    key = str(uuid.uuid4())
    with stack.http() as http:
        user, product = create_user(http), create_product(http, stock=10)
        first = http.post(
            "/api/orders", json=_order(user, product), headers={"Idempotency-Key": key}
        )
        again = http.post(
            "/api/orders", json=_order(user, product), headers={"Idempotency-Key": key}
        )
        stock = http.get(f"/api/products/{product}").json()["stock"]
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert first.json() == again.json()
    assert first.headers["location"] == again.headers["location"]
    assert (first.headers["idempotent-replayed"], again.headers["idempotent-replayed"]) == (
        "false", "true",
    )  # fmt: skip
    assert stock == 9
    assert stack.psql(f"SELECT count(*) FROM orders WHERE user_id = {user}") == "1"


def test_concurrent_retries_with_one_key_place_one_order(stack: Stack) -> None:
    key = str(uuid.uuid4())
    with stack.http() as http:
        user, product = create_user(http), create_product(http, stock=100)

    def post(_: int) -> tuple[int, str]:
        with stack.http(timeout=60) as client:
            r = client.post("/api/orders", json=_order(user, product),
                            headers={"Idempotency-Key": key})  # fmt: skip
            return r.status_code, r.text

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(post, range(10)))
    assert {status for status, _ in answers} == {201}, answers
    assert len({body for _, body in answers}) == 1
    assert stack.psql(f"SELECT count(*) FROM orders WHERE user_id = {user}") == "1"
    assert stack.psql(f"SELECT stock FROM products WHERE id = {product}") == "99"


def test_the_same_key_with_another_body_is_422(stack: Stack) -> None:
    key = str(uuid.uuid4())
    with stack.http() as http:
        user, product = create_user(http), create_product(http, stock=10)
        first = http.post(
            "/api/orders", json=_order(user, product, 1), headers={"Idempotency-Key": key}
        )
        other = http.post(
            "/api/orders", json=_order(user, product, 2), headers={"Idempotency-Key": key}
        )
    assert first.status_code == 201
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert stack.psql(f"SELECT count(*) FROM orders WHERE user_id = {user}") == "1"


def test_a_failed_request_stores_nothing_so_its_retry_runs_again(stack: Stack) -> None:
    key = str(uuid.uuid4())
    with stack.http() as http:
        user, product = create_user(http), create_product(http, stock=1)
        short = http.post(
            "/api/orders", json=_order(user, product, 2), headers={"Idempotency-Key": key}
        )
        assert short.status_code == 409
        http.post("/api/products", json={"sku": f"X-{uuid.uuid4().hex[:8]}", "name": "x",
                                         "price_cents": 1, "stock": 1})  # fmt: skip
        stack.psql(f"UPDATE products SET stock = 5 WHERE id = {product}")
        retry = http.post(
            "/api/orders", json=_order(user, product, 2), headers={"Idempotency-Key": key}
        )
    assert retry.status_code == 201, retry.text
    assert retry.headers["idempotent-replayed"] == "false"


def test_an_expired_key_is_a_new_key_and_expired_keys_are_purged(stack: Stack) -> None:
    key = str(uuid.uuid4())
    with stack.http() as http:
        user, product = create_user(http), create_product(http, stock=10)
        headers = {"Idempotency-Key": key}
        assert (
            http.post("/api/orders", json=_order(user, product), headers=headers).status_code == 201
        )
        stack.psql("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'"
                   f" WHERE key = '{key}'")  # fmt: skip
        again = http.post("/api/orders", json=_order(user, product), headers=headers)
        assert again.status_code == 201 and again.headers["idempotent-replayed"] == "false"
        stack.psql(
            "INSERT INTO idempotency_keys (operation, key, fingerprint, status, body, expires_at)"
            " SELECT 'POST /api/orders', 'stale-' || n, '', 201, '{}', now() - interval '1 day'"
            " FROM generate_series(1, 5) AS n"
        )
        create_user(http)  # no key: nothing purged
        assert stack.psql("SELECT count(*) FROM idempotency_keys WHERE key LIKE 'stale-%'") == "5"
        http.post("/api/users", json={"email": f"{uuid.uuid4().hex}@example.test", "name": "k"},
                  headers={"Idempotency-Key": str(uuid.uuid4())})  # fmt: skip
    assert stack.psql(f"SELECT count(*) FROM orders WHERE user_id = {user}") == "2"
    assert stack.psql("SELECT count(*) FROM idempotency_keys WHERE key LIKE 'stale-%'") == "0"


def test_a_malformed_key_is_400(stack: Stack) -> None:
    with stack.http() as http:
        for bad in ("", "has space", "x" * 256):
            response = http.post("/api/users", json={"email": "m@example.test", "name": "m"},
                                 headers={"Idempotency-Key": bad})  # fmt: skip
            assert response.status_code == 400, (bad, response.text)
            assert response.json()["error"]["code"] == "invalid_idempotency_key"
