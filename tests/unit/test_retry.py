"""The retry policy: what is retried, how often, and how long it waits."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pgstack_api.retry import (
    CommitOutcomeUnknown,
    DatabaseUnavailable,
    RetryPolicy,
    is_transient,
    with_retry,
)
from psycopg import errors as pg_errors
from sqlalchemy import exc as sa_exc


def wrapped(orig: Exception) -> sa_exc.DBAPIError:
    """The exception as SQLAlchemy raises it: the driver's error in `.orig`."""
    return sa_exc.DBAPIError.instance("SELECT 1", {}, orig, psycopg.Error)


@pytest.mark.parametrize(
    "exc",
    [
        wrapped(pg_errors.SerializationFailure("could not serialize access")),
        wrapped(pg_errors.DeadlockDetected("deadlock detected")),
        wrapped(psycopg.OperationalError("server closed the connection unexpectedly")),
        wrapped(pg_errors.AdminShutdown("terminating connection due to administrator command")),
        sa_exc.OperationalError(
            "BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked")
        ),
    ],
    ids=["serialization", "deadlock", "connection-lost", "admin-shutdown", "sqlite-locked"],
)
def test_transient_errors_are_retried(exc: Exception) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        DatabaseUnavailable("connection refused"),  # down: answer 503 now, do not wait
        CommitOutcomeUnknown("lost during COMMIT"),  # may have committed: never run twice
        wrapped(pg_errors.UniqueViolation("duplicate key")),
        wrapped(pg_errors.CheckViolation("stock >= 0")),
        wrapped(pg_errors.QueryCanceled("statement timeout")),
        sa_exc.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: users")),
        ValueError("a bug"),
    ],
    ids=["unavailable", "commit-unknown", "unique", "check", "timeout", "sqlite-other", "bug"],
)
def test_permanent_errors_are_not_retried(exc: Exception) -> None:
    assert not is_transient(exc)


T = TypeVar("T")


def _run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


class Flaky:
    """Fails with `error` the first `failures` times, then returns "done"."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def _recorder() -> tuple[list[float], Callable[[float], Awaitable[None]]]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return waits, sleep


def test_a_transient_failure_is_retried_until_success_with_growing_waits() -> None:
    flaky = Flaky(3, wrapped(pg_errors.SerializationFailure("x")))
    waits, sleep = _recorder()
    policy = RetryPolicy(attempts=5, base_delay=0.1, max_delay=10)
    assert _run(with_retry(flaky, policy, sleep=sleep, rng=lambda: 1.0)) == "done"
    assert flaky.calls == 4
    assert waits == pytest.approx([0.1, 0.2, 0.4])


def test_attempts_are_bounded_and_the_last_error_is_raised_unchanged() -> None:
    error = wrapped(pg_errors.DeadlockDetected("x"))
    flaky = Flaky(100, error)
    waits, sleep = _recorder()
    with pytest.raises(sa_exc.DBAPIError) as raised:
        _run(with_retry(flaky, RetryPolicy(attempts=3), sleep=sleep))
    assert raised.value is error
    assert flaky.calls == 3
    assert len(waits) == 2


def test_a_permanent_failure_is_raised_at_once() -> None:
    flaky = Flaky(1, DatabaseUnavailable("refused"))
    waits, sleep = _recorder()
    with pytest.raises(DatabaseUnavailable):
        _run(with_retry(flaky, RetryPolicy(attempts=5), sleep=sleep))
    assert flaky.calls == 1
    assert waits == []


def test_full_jitter_uses_the_whole_range_from_zero() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1)
    assert policy.delay(3, rng=lambda: 0.0) == 0.0
    assert policy.delay(3, rng=lambda: 0.5) == pytest.approx(0.2)


@given(
    retry=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0, max_value=5),
    cap=st.floats(min_value=0, max_value=30),
    u=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_every_wait_lies_between_zero_and_the_cap(
    retry: int, base: float, cap: float, u: float
) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=cap)
    wait = policy.delay(retry, rng=lambda: u)
    assert 0 <= wait <= cap
    assert policy.ceiling(retry) <= policy.ceiling(retry + 1)  # never shrinks


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"base_delay": -1}, {"max_delay": -1}])
def test_a_nonsense_policy_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
