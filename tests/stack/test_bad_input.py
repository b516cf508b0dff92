"""Bad input gets the documented 4xx JSON, never a traceback or a 500."""

from __future__ import annotations

import pytest

from tests.stack.compose import Stack


def _error(response_json: dict[str, object]) -> dict[str, object]:
    error = response_json["error"]
    assert isinstance(error, dict)
    assert error["code"] and error["message"]
    return error


def test_malformed_json_is_400(stack: Stack) -> None:
    with stack.http() as http:
        response = http.post(
            "/api/products", content=b'{"sku": ', headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 400
    _error(response.json())


@pytest.mark.parametrize(
    "body",
    [
        {"sku": "X-1", "name": "x", "price_cents": "cheap", "stock": 1},
        {"sku": "X-2", "name": "x", "price_cents": 100, "stock": -1},
        {"name": "missing sku", "price_cents": 100, "stock": 1},
        [1, 2, 3],
    ],
)
def test_wrong_types_and_values_are_422(stack: Stack, body: object) -> None:
    with stack.http() as http:
        response = http.post("/api/products", json=body)
    assert response.status_code == 422, response.text
    _error(response.json())


def test_unknown_ids_are_404(stack: Stack) -> None:
    with stack.http() as http:
        product = http.get("/api/products/987654321")
        order = http.get("/api/orders/987654321")
        route = http.get("/api/nothing-here")
    for response in (product, order, route):
        assert response.status_code == 404
        _error(response.json())


def test_a_duplicate_sku_is_409(stack: Stack) -> None:
    body = {"sku": "DUP-SKU-1", "name": "dup", "price_cents": 1, "stock": 1}
    with stack.http() as http:
        http.post("/api/products", json=body)
        response = http.post("/api/products", json=body)
    assert response.status_code == 409
    _error(response.json())


def test_an_oversized_body_is_413(stack: Stack) -> None:
    big = b'{"sku": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    with stack.http() as http:
        response = http.post(
            "/api/products", content=big, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 413
    _error(response.json())


def test_a_wrong_method_is_405_json(stack: Stack) -> None:
    with stack.http() as http:
        response = http.delete("/api/products")
    assert response.status_code == 405
    _error(response.json())
