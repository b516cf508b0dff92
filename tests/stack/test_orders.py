"""The order flow end to end: HTTP -> api -> PgBouncer (transaction pooling) -> PostgreSQL."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from tests.stack.compose import Stack, create_product, create_user


def test_an_order_decrements_stock_and_is_readable(stack: Stack) -> None:
    with stack.http() as http:
        user = create_user(http)
        product = create_product(http, stock=5, price_cents=250)
        created = http.post(
            "/api/orders", json={"user_id": user, "items": [{"product_id": product, "quantity": 2}]}
        )
        assert created.status_code == 201, created.text
        order = http.get(f"/api/orders/{created.json()['id']}").json()
        left = http.get(f"/api/products/{product}").json()["stock"]
    assert order["total_cents"] == 500
    assert [(i["product_id"], i["quantity"]) for i in order["items"]] == [(product, 2)]
    assert left == 3


def test_fifty_concurrent_orders_for_the_last_ten_items_never_oversell(stack: Stack) -> None:
    with stack.http(timeout=60) as http:
        user = create_user(http)
        product = create_product(http, stock=10)

    def order(_: int) -> int:
        # A well-behaved client: on a 503 (the machine too busy to connect in time) it waits the
        # Retry-After and sends the same request with the same Idempotency-Key, so a retry can
        # never place a second order.
        key = str(uuid.uuid4())
        with stack.http(timeout=60) as client:
            for _attempt in range(10):
                response = client.post(
                    "/api/orders",
                    json={"user_id": user, "items": [{"product_id": product, "quantity": 1}]},
                    headers={"Idempotency-Key": key},
                )
                if response.status_code != 503:
                    return response.status_code
                time.sleep(float(response.headers.get("Retry-After", "1")))
            return response.status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(order, range(50)))

    assert statuses.count(201) == 10, statuses
    assert statuses.count(409) == 40, statuses
    with stack.http() as http:
        assert http.get(f"/api/products/{product}").json()["stock"] == 0
    assert stack.psql(f"SELECT stock FROM products WHERE id = {product}") == "0"
    assert stack.psql(f"SELECT count(*) FROM order_items WHERE product_id = {product}") == "10"


def test_an_out_of_stock_order_changes_nothing(stack: Stack) -> None:
    with stack.http() as http:
        user = create_user(http)
        plenty = create_product(http, stock=100)
        scarce = create_product(http, stock=1)
        response = http.post(
            "/api/orders",
            json={"user_id": user, "items": [{"product_id": plenty, "quantity": 3},
                                             {"product_id": scarce, "quantity": 2}]},
        )  # fmt: skip
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "out_of_stock"
        assert http.get(f"/api/products/{plenty}").json()["stock"] == 100
        assert http.get(f"/api/products/{scarce}").json()["stock"] == 1


def test_products_list_pages(stack: Stack) -> None:
    with stack.http() as http:
        for _ in range(3):
            create_product(http, stock=1)
        first = http.get("/api/products", params={"limit": 2})
    assert first.status_code == 200
    body = first.json()
    assert len(body["items"]) == 2
