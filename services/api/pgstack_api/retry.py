"""Retrying transient database failures: which errors, how often, how long to wait.

Only errors where running the whole transaction again is safe and likely to succeed are retried:
serialization failures and deadlocks (sqlstate.Kind.CONFLICT), SQLite's "database is locked",
and a connection lost *before* COMMIT was sent (the transaction then certainly rolled back). A
failure to connect is not retried here: the database is down and the client should get its 503
within the connect timeout. A failure during COMMIT is never retried: the outcome is unknown.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from pgstack_api.sqlstate import Kind, connection_lost, driver_error, sqlstate
from pgstack_api.sqlstate import classify as kind_of

T = TypeVar("T")

_log = logging.getLogger(__name__)


class CommitOutcomeUnknown(Exception):
    """The connection failed while COMMIT was in flight: it may or may not have committed."""


class DatabaseUnavailable(Exception):
    """Could not get a working connection (refused, timed out, pooler refused the login)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter (AWS architecture blog, 'Exponential Backoff and
    Jitter'): the wait before retry n is uniform in [0, min(max_delay, base_delay * 2**(n-1))],
    which spreads colliding transactions apart instead of having them collide again in step."""

    attempts: int = 5
    base_delay: float = 0.02
    max_delay: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must be >= 0")

    def ceiling(self, retry: int) -> float:
        """The largest wait before the given retry (1-based)."""
        if retry < 1:
            raise ValueError("retry is 1-based")
        # Cap the exponent: 2**retry overflows float long before it matters.
        return float(min(self.max_delay, self.base_delay * 2.0 ** min(retry - 1, 60)))

    def delay(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        return rng() * self.ceiling(retry)


DEFAULT_POLICY = RetryPolicy()


def is_transient(exc: BaseException) -> bool:
    """True when running the whole transaction again is safe and may succeed."""
    if isinstance(exc, (CommitOutcomeUnknown, DatabaseUnavailable)):
        return False
    if kind_of(exc) in (Kind.CONFLICT, Kind.LOCKED):
        return True
    return connection_lost(exc)


async def with_retry(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy = DEFAULT_POLICY,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: Callable[[], float] = random.random,
    classify: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Run `operation` (a whole transaction) until it succeeds, fails for good, or runs out
    of attempts; the last error is re-raised unchanged."""
    retry = 0
    while True:
        try:
            return await operation()
        except Exception as exc:
            retry += 1
            if retry >= policy.attempts or not classify(exc):
                raise
            wait = policy.delay(retry, rng)
            _log.info(
                "transient database error, retrying",
                extra={
                    "retry": retry,
                    "wait_ms": round(wait * 1000, 1),
                    "error": type(driver_error(exc)).__name__,
                    "sqlstate": sqlstate(exc),
                },
            )
            await sleep(wait)
