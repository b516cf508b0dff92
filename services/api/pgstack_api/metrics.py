"""Prometheus metrics with bounded labels, shared by every uvicorn worker.

Labels come from fixed sets only: the method is one of the methods HTTP defines ("other" for a
client's made-up token), the route is a route template or "<unmatched>", the status is one the
server chose. So no request can add a series.

Several workers: with PROMETHEUS_MULTIPROC_DIR set (the image sets it, on a tmpfs), each worker
writes its samples to memory-mapped files there and /metrics sums every worker's, including
those of workers that were replaced. Without it (tests, make dev) a registry per app.

Requests are counted in plain dicts and added to the Prometheus values at most `FLUSH_S` later
(and before every exposition): a multiprocess value costs a lock, a getpid() and a write to
its file per increment, three per request, where a dict costs a lookup (measured in
docs/benchmarks.md, "Where a request's time goes"). A scrape may so miss the last second of
other workers' requests, as it would have a second later anyway; a worker killed outright loses
its last second of counts.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response

# Buckets sized for an API answering in milliseconds, with the 3-5 s timeouts at the top.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
UNMATCHED = "<unmatched>"
FLUSH_S = 1.0


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "pgstack_http_requests",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "pgstack_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.db_errors = Counter(
            "pgstack_db_errors",
            "Database errors answered to clients, by kind",
            ["kind"],
            registry=r,
        )
        self.ready = Gauge(
            "pgstack_ready",
            "1 when the last readiness check reached the database",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        # (method, route, status) -> requests; (method, route) -> [count per bucket, sum].
        self._counts: dict[tuple[str, str, int], int] = {}
        self._latencies: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._ready: bool | None = None

    def set_ready(self, ok: bool) -> None:
        """pgstack_ready, written to its file only when it changes: /readyz is probed often,
        and each write costs what a request's counts did (see the module's docstring)."""
        if ok is not self._ready:
            self._ready = ok
            self.ready.set(1 if ok else 0)

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request: counted now, added to the Prometheus values by `flush`."""
        method = method_label(method)
        key = (method, route, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        pending = self._latencies.get((method, route))
        if pending is None:
            pending = self._latencies[(method, route)] = ([0] * (len(_BUCKETS) + 1), [0.0])
        # The first bucket whose upper bound is >= seconds (the last is +Inf), as observe().
        pending[0][bisect_left(_BUCKETS, seconds)] += 1
        pending[1][0] += seconds
        if self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)
            except RuntimeError:  # no event loop: nothing would flush later
                self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        counts, self._counts = self._counts, {}
        latencies, self._latencies = self._latencies, {}
        for (method, route, status), n in counts.items():
            self.requests.labels(method, route, str(status)).inc(n)
        for (method, route), (buckets, total) in latencies.items():
            child = self.latency.labels(method, route)
            # Histogram.observe() adds one observation; these are many. Its values (one per
            # bucket, non-cumulative, and the sum) take any increment; prometheus-client is
            # pinned in requirements.lock, and tests/dev checks the exposition.
            for index, n in enumerate(buckets):
                if n:
                    child._buckets[index].inc(n)
            child._sum.inc(total[0])

    def exposition(self) -> bytes:
        self.flush()
        directory = _multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
