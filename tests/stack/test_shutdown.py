"""SIGTERM to the API while requests are in flight: every one of them completes."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.stack.compose import Stack, create_product, create_user

IN_FLIGHT = 10
LOCK_HOLD_S = 3


@pytest.mark.chaos
def test_sigterm_lets_every_in_flight_request_finish(private_stack: Stack) -> None:
    stack = private_stack
    with stack.http() as http:
        product = create_product(http, stock=100)
        user = create_user(http)

    # Hold the product's row lock in a separate session: the orders below block on it, so they are
    # provably in flight (inside a transaction, through PgBouncer) when SIGTERM arrives.
    lock_sql = (
        f"BEGIN; SELECT id FROM products WHERE id = {product} FOR UPDATE; "
        f"SELECT pg_sleep({LOCK_HOLD_S}); COMMIT;"
    )
    stack.container("postgres").exec_run(
        ["psql", "--no-psqlrc", "--dbname=pgstack", "--command", lock_sql],
        user="postgres",
        detach=True,
    )
    time.sleep(0.5)

    def order(_: int) -> int:
        with stack.http(timeout=30) as client:
            return client.post(
                "/api/orders",
                json={"user_id": user, "items": [{"product_id": product, "quantity": 1}]},
            ).status_code

    with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
        futures = [pool.submit(order, i) for i in range(IN_FLIGHT)]
        time.sleep(1.0)
        assert not any(f.done() for f in futures), "requests finished before the lock was released"
        stopper = threading.Thread(target=stack.container("api").stop, kwargs={"timeout": 30})
        stopper.start()  # docker stop: SIGTERM, then SIGKILL after the grace period
        statuses = [f.result() for f in futures]
        stopper.join()

    assert statuses == [201] * IN_FLIGHT, statuses
    stack.container("api").reload()
    assert stack.container("api").attrs["State"]["ExitCode"] == 0, "the API did not exit cleanly"
    assert stack.psql(f"SELECT stock FROM products WHERE id = {product}") == str(100 - IN_FLIGHT)
    logs = stack.container("api").logs().decode(errors="replace")
    assert "Application shutdown complete" in logs or "shutdown" in logs.lower()

    stack.container("api").start()
    stack.wait_healthy("api")
