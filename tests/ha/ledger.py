"""A ledger of acknowledged writes: a background writer placing orders through the API while a
fault is injected, and what must hold afterwards.

The writer behaves as a careful client: one Idempotency-Key per logical order, the same key
resent after a 503 or a timeout until the order is acknowledged, the server's Retry-After
honoured (capped at `max_wait_s`, so that the end of an outage is seen within that much). Every
acknowledgement (key, order id) and every failed attempt (status, body, time) is recorded; the
checks then compare the record with what the cluster holds.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

# Seconds within which every API request must be answered, fault or not: the API's own bounds
# (connect_timeout 3 s, statement_timeout 5 s) are far below it.
ANSWER_BOUND_S = 15.0
# The error codes of a 503 a client may see while the leader is away (services/api errors.py):
# the database cannot be reached, or the connection was lost while committing (retry the key).
UNAVAILABLE_CODES = ("database_unavailable", "commit_outcome_unknown")


@dataclass(frozen=True)
class Ack:
    key: str
    order_id: int
    sent: float  # monotonic, the first attempt of this key
    answered: float  # monotonic, the acknowledgement
    attempts: int


@dataclass(frozen=True)
class Failure:
    key: str
    status: int | None  # None: no answer within the client's timeout, or the connection failed
    body: str
    sent: float
    answered: float
    retry_after: str | None
    # Wall-clock time, for reading beside the containers' logs.
    at: str = field(default_factory=lambda: time.strftime("%H:%M:%S"))


@dataclass
class Ledger:
    """Places orders of one item of `product` for `user` until stopped; `start()` / `stop()`."""

    base_url: str
    user: int
    product: int
    max_wait_s: float = 1.0
    pause_s: float = 0.05
    acks: list[Ack] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    started: float = 0.0
    stopped: float = 0.0

    def start(self) -> Ledger:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 120.0) -> None:
        """Stop after the order in flight is acknowledged (an order given up halfway could have
        committed without the ledger knowing), or after `timeout`."""
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the writer did not finish within {timeout} s"
        self.stopped = time.monotonic()

    def wait_acks(self, count: int, timeout: float) -> None:
        """Until `count` more orders are acknowledged than now."""
        target, deadline = len(self.acks) + count, time.monotonic() + timeout
        while len(self.acks) < target:
            assert time.monotonic() < deadline, (
                f"{count} acknowledgements not reached in {timeout} s; last failures "
                f"{self.failures[-3:]}"
            )
            time.sleep(0.2)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=ANSWER_BOUND_S) as http:
            while not self._stop.is_set():
                self._place(http)
                time.sleep(self.pause_s)

    def _place(self, http: httpx.Client) -> None:
        """One logical order: its key is resent until acknowledged (whatever `stop` says)."""
        key, first, attempts = str(uuid.uuid4()), time.monotonic(), 0
        body = {"user_id": self.user, "items": [{"product_id": self.product, "quantity": 1}]}
        while True:
            attempts += 1
            sent = time.monotonic()
            try:
                response = http.post("/api/orders", json=body, headers={"Idempotency-Key": key})
            except httpx.HTTPError as exc:  # a timeout, or the API unreachable
                self.failures.append(
                    Failure(key, None, f"{type(exc).__name__}: {exc}", sent, time.monotonic(), None)
                )
                time.sleep(self.max_wait_s)
                continue
            answered = time.monotonic()
            if response.status_code == 201:
                self.acks.append(Ack(key, int(response.json()["id"]), first, answered, attempts))
                return
            retry_after = response.headers.get("Retry-After")
            self.failures.append(
                Failure(key, response.status_code, response.text[:300], sent, answered, retry_after)
            )
            if response.status_code != 503 or (self._stop.is_set() and attempts > 200):
                return  # not retryable (the checks report it), or stuck
            try:
                wait = float(retry_after or self.max_wait_s)
            except ValueError:
                wait = self.max_wait_s
            time.sleep(min(wait, self.max_wait_s))

    # ---- what the record says -------------------------------------------------------------------

    def outage_s(self) -> float:
        """The longest time without a writable leader, as the client saw it: from sending the
        first attempt that failed to the next acknowledgement (0 when nothing failed)."""
        events = sorted(
            [(a.answered, True, a.answered) for a in self.acks]
            + [(f.answered, False, f.sent) for f in self.failures]
        )
        longest, down_since = 0.0, None
        for answered, ok, sent in events:
            if not ok and down_since is None:
                down_since = sent
            elif ok and down_since is not None:
                longest, down_since = max(longest, answered - down_since), None
        if down_since is not None:  # never recovered
            return float("inf")
        return round(longest, 2)

    def longest_gap_s(self) -> float:
        """The longest time between two acknowledgements (a stall without failures shows here)."""
        times = [self.started, *sorted(a.answered for a in self.acks)]
        return round(max((b - a for a, b in itertools.pairwise(times)), default=0.0), 2)

    def bad_answers(self) -> list[Failure]:
        """Failed attempts that break the contract: anything but a 503 JSON with a positive
        Retry-After and one of UNAVAILABLE_CODES, or an answer slower than ANSWER_BOUND_S."""
        bad = []
        for f in self.failures:
            if f.status != 503 or f.answered - f.sent > ANSWER_BOUND_S:
                bad.append(f)
                continue
            try:
                code = httpx.Response(503, content=f.body).json()["error"]["code"]
                retry_after = int(f.retry_after or "0")
            except (ValueError, KeyError, TypeError):
                bad.append(f)
                continue
            if code not in UNAVAILABLE_CODES or retry_after <= 0:
                bad.append(f)
        return bad

    def acked_ids(self) -> set[int]:
        return {a.order_id for a in self.acks}

    def summary(self) -> dict[str, Any]:
        return {
            "acknowledged": len(self.acks),
            "failed_requests": len(self.failures),
            "bad_answers": len(self.bad_answers()),
            "unavailable_s": self.outage_s(),
            "longest_gap_s": self.longest_gap_s(),
            "statuses": sorted({str(f.status) for f in self.failures}),
        }
