"""Prometheus metrics with bounded labels, shared by every uvicorn worker.

Labels come from fixed sets only: the method is one of the methods HTTP defines ("other" for a
client's made-up token), the route is a route template or "<unmatched>", the status is one the
server chose. So no request can add a series.

Several workers: with PROMETHEUS_MULTIPROC_DIR set (the image sets it, on a tmpfs), each worker
writes its samples to memory-mapped files there and /metrics sums every worker's, including
those of workers that were replaced. Without it (tests, make dev) a registry per app.
"""

from __future__ import annotations

import os
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

    def exposition(self) -> bytes:
        directory = _multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
