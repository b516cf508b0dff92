"""A connection lost between COMMIT and the answer: the client cannot know whether its order
exists. With an Idempotency-Key it retries and gets exactly one order; without one it is not
invited to retry (no Retry-After).

COMMIT is made slow on purpose: a deferred constraint trigger (test-only DDL, as the superuser)
sleeps inside COMMIT, which gives the test a window to kill PgBouncer (the server backend then
finishes the commit: the order exists) or to terminate the backend (it never commits: no order).
"""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from tests.stack.compose import Stack, create_product, create_user

COMMIT_SLEEP_S = 4
_SLOW_COMMIT = f"""
CREATE OR REPLACE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep({COMMIT_SLEEP_S}); RETURN NULL; END $$;
DROP TRIGGER IF EXISTS slow_commit ON orders;
CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON orders
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
"""
_FAST_COMMIT = (
    "DROP TRIGGER IF EXISTS slow_commit ON orders; DROP FUNCTION IF EXISTS slow_commit();"
)


def _wait_for_commit_in_flight(stack: Stack, timeout: float = 10) -> int:
    """The pid of the app's backend that is running COMMIT (inside the deferred trigger)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = stack.psql(
            "SELECT pid FROM pg_stat_activity WHERE usename = 'app' AND state = 'active'"
            " AND query = 'COMMIT' LIMIT 1"
        )
        if pid:
            return int(pid)
        time.sleep(0.1)
    raise AssertionError("no COMMIT in flight")


def _post_in_background(
    stack: Stack, body: object, headers: dict[str, str]
) -> tuple[threading.Thread, list[httpx.Response]]:
    answers: list[httpx.Response] = []

    def post() -> None:
        with stack.http(timeout=60) as http:
            answers.append(http.post("/api/orders", json=body, headers=headers))

    thread = threading.Thread(target=post)
    thread.start()
    return thread, answers


@pytest.mark.chaos
@pytest.mark.parametrize("kill", ["pgbouncer", "backend"])
def test_a_retry_with_the_key_after_a_lost_commit_places_exactly_one_order(
    private_stack: Stack, kill: str
) -> None:
    stack = private_stack
    with stack.http() as http:
        user, product = create_user(http), create_product(http, stock=10)
    body = {"user_id": user, "items": [{"product_id": product, "quantity": 2}]}
    key = {"Idempotency-Key": str(uuid.uuid4())}

    stack.psql(_SLOW_COMMIT)
    try:
        thread, answers = _post_in_background(stack, body, key)
        backend = _wait_for_commit_in_flight(stack)
        if kill == "pgbouncer":
            stack.container("pgbouncer").kill()
        else:
            stack.psql(f"SELECT pg_terminate_backend({backend})")
        thread.join(timeout=60)
    finally:
        stack.psql(_FAST_COMMIT)
        if kill == "pgbouncer":
            stack.container("pgbouncer").start()
            stack.wait_healthy("pgbouncer")

    [lost] = answers
    assert lost.status_code == 503, lost.text
    assert lost.json()["error"]["code"] == "commit_outcome_unknown"
    assert int(lost.headers["Retry-After"]) > 0  # the key makes the retry safe
    committed = stack.psql(f"SELECT count(*) FROM orders WHERE user_id = {user}")
    # Killing PgBouncer leaves the backend to finish its COMMIT; terminating it aborts it.
    assert committed == ("1" if kill == "pgbouncer" else "0")

    deadline = time.monotonic() + 30
    with stack.http(timeout=30) as http:
        while True:
            retry = http.post("/api/orders", json=body, headers=key)
            if retry.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(int(retry.headers.get("Retry-After", "1")) / 5)
        again = http.post("/api/orders", json=body, headers=key)
    assert retry.status_code == 201, retry.text
    assert retry.headers["idempotent-replayed"] == ("true" if kill == "pgbouncer" else "false")
    assert again.json() == retry.json()
    assert stack.psql(f"SELECT count(*) FROM orders WHERE user_id = {user}") == "1"
    assert stack.psql(f"SELECT stock FROM products WHERE id = {product}") == "8"


@pytest.mark.chaos
def test_without_a_key_a_lost_commit_is_not_invited_to_retry(private_stack: Stack) -> None:
    stack = private_stack
    with stack.http() as http:
        user, product = create_user(http), create_product(http, stock=10)
    body = {"user_id": user, "items": [{"product_id": product, "quantity": 1}]}
    stack.psql(_SLOW_COMMIT)
    try:
        thread, answers = _post_in_background(stack, body, {})
        stack.psql(f"SELECT pg_terminate_backend({_wait_for_commit_in_flight(stack)})")
        thread.join(timeout=60)
    finally:
        stack.psql(_FAST_COMMIT)
    [lost] = answers
    assert lost.status_code == 503, lost.text
    assert lost.json()["error"]["code"] == "commit_outcome_unknown"
    assert "retry-after" not in lost.headers
    assert "Idempotency-Key" in lost.json()["error"]["message"]
