"""Database or PgBouncer away: clients get 503 + Retry-After fast, and the API recovers alone."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.stack.compose import Stack, create_product, create_user

# The API's connect timeout is 3 s and PgBouncer fails waiting clients fast; 15 s is the bound
# within which every request must have its answer (no hang).
ANSWER_BOUND_S = 15.0


def _timed(
    http: httpx.Client, method: str, path: str, **kwargs: object
) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = http.request(method, path, **kwargs)  # type: ignore[arg-type]
    return response, time.monotonic() - started


def _wait_for_status(http: httpx.Client, path: str, status: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = http.get(path).status_code
        if last == status:
            return
        time.sleep(0.25)
    raise AssertionError(f"{path} still answers {last}, not {status}, after {timeout} s")


def _metrics_once_ready_is_0(http: httpx.Client, timeout: float) -> str:
    """/metrics once pgstack_ready reads 0, asking /readyz on new connections meanwhile.

    The gauge is the value most recently written by any worker, each from its own readiness
    check, and a worker writes it only when its answer changes: one worker's write of 1 can come
    after another's 0 (CI saw 1 right after the first 503). That worker's next failed check
    writes 0 again, and new connections reach every worker, so the gauge must read 0 within
    seconds of the outage.
    """
    deadline = time.monotonic() + timeout
    while True:
        metrics = http.get("/metrics").text
        if "pgstack_ready 0.0" in metrics:
            return metrics
        if time.monotonic() > deadline:
            raise AssertionError(f"pgstack_ready is not 0 after {timeout} s of outage:\n{metrics}")
        http.get("/readyz", headers={"Connection": "close"})
        time.sleep(0.25)


def _sample_sum(metrics: str, name: str) -> float:
    """The sum of a Prometheus metric's samples over all label sets."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith((f"{name} ", f"{name}{{"))
    )


@pytest.mark.chaos
@pytest.mark.parametrize("service", ["postgres", "pgbouncer"])
def test_an_outage_gives_503_with_retry_after_and_the_api_recovers_by_itself(
    private_stack: Stack, service: str
) -> None:
    stack = private_stack
    with stack.http(timeout=ANSWER_BOUND_S + 5) as http:
        product = create_product(http, stock=5)
        user = create_user(http)
        api_started = stack.container("api").attrs["State"]["StartedAt"]

        stack.container(service).stop(timeout=30)
        try:
            _wait_for_status(http, "/readyz", 503, timeout=10)
            calls = [
                ("GET", f"/api/products/{product}", {}),
                ("GET", "/api/products", {}),
                ("POST", "/api/orders",
                 {"json": {"user_id": user, "items": [{"product_id": product, "quantity": 1}]}}),
                ("GET", "/api/health", {}),
                ("GET", "/readyz", {}),
            ]  # fmt: skip
            for method, path, kwargs in calls:
                response, elapsed = _timed(http, method, path, **kwargs)
                assert response.status_code == 503, (path, response.status_code, response.text)
                assert elapsed < ANSWER_BOUND_S, (path, elapsed)
                if path.startswith("/api/") and path != "/api/health":
                    assert int(response.headers["Retry-After"]) > 0
                    assert response.json()["error"]["code"] == "database_unavailable"
            live, _ = _timed(http, "GET", "/livez")
            assert live.status_code == 200
            metrics = _metrics_once_ready_is_0(http, timeout=10)
            assert _sample_sum(metrics, "pgstack_db_errors_total") > 0
        finally:
            stack.container(service).start()

        stack.wait_healthy(service)
        _wait_for_status(http, "/readyz", 200, timeout=60)
        assert http.get(f"/api/products/{product}").status_code == 200
        order = http.post(
            "/api/orders", json={"user_id": user, "items": [{"product_id": product, "quantity": 1}]}
        )
        assert order.status_code == 201, order.text
        assert http.get("/api/health").status_code == 200

    stack.container("api").reload()
    assert stack.container("api").attrs["State"]["StartedAt"] == api_started, (
        "the API was restarted"
    )
