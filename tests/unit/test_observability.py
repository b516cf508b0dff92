"""The access line and the request metrics take cheaper paths than the logging module and
prometheus-client's own calls (docs/benchmarks.md); what they produce must not change."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pgstack_api import logging as api_logging
from pgstack_api.metrics import Metrics
from prometheus_client import CollectorRegistry, Histogram, generate_latest


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_timestamps_match_isoformat_to_the_millisecond(created: float) -> None:
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    got = api_logging._Clock().iso(created)
    assert len(got) == len(expected) and got.endswith("+00:00")
    # Float rounding may put the two on either side of a millisecond boundary.
    difference = datetime.fromisoformat(got) - datetime.fromisoformat(expected)
    assert abs(difference) <= timedelta(milliseconds=1)


def _written(monkeypatch: pytest.MonkeyPatch, write: Callable[[], None]) -> list[str]:
    """The lines `write` puts on stdout, once flushed."""
    read_fd, write_fd = os.pipe()
    monkeypatch.setattr(api_logging, "_stdout", api_logging._Stdout(write_fd))
    write()
    api_logging._stdout.flush()
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        return pipe.read().splitlines()


def _json_formatter_line(**extra: object) -> dict[str, object]:
    record = logging.LogRecord(api_logging.ACCESS_LOGGER, logging.INFO, "", 0, "request", (), None)
    record.__dict__.update(extra)
    return dict(json.loads(api_logging.JsonFormatter().format(record)))


@pytest.mark.parametrize(
    ("path", "request_id"),
    [("/api/products/1", "0123abcd"), ('/odd/"quote"/é/\n', "a/b+c=d"), ("/livez", None)],
)
def test_the_access_line_is_the_json_formatters_line(
    path: str,
    request_id: str | None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=api_logging.ACCESS_LOGGER)
    fields = {"method": "GET", "path": path, "route": "/api/products/{id:int}", "status": 404,
              "duration_ms": 1.25, "request_id": request_id}  # fmt: skip
    log = api_logging.AccessLog(json_lines=True)
    (line,) = _written(monkeypatch, lambda: log.request(**fields))  # type: ignore[arg-type]
    ours = json.loads(line)
    reference = _json_formatter_line(**fields)
    assert list(ours) == list(reference)
    ours.pop("ts"), reference.pop("ts")
    assert ours == reference


def test_access_lines_wait_for_the_timer_and_other_records_go_first_in_order() -> None:
    read, write = os.pipe()
    os.set_blocking(read, False)
    stdout = api_logging._Stdout(write)

    async def scenario() -> tuple[bytes, bytes]:
        stdout.write_later("one\n")
        stdout.write_later("two\n")
        try:
            held = os.read(read, 100)
        except BlockingIOError:
            held = b""
        stdout.write_now("warning\n")  # e.g. a warning: written at once, after the queue
        return held, os.read(read, 100)

    held, written = asyncio.run(scenario())
    os.close(read)
    os.close(write)
    assert held == b""
    assert written == b"one\ntwo\nwarning\n"


def test_batched_request_metrics_expose_what_observe_would() -> None:
    metrics = Metrics()
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "pgstack_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        registry=reference_registry,
    )  # fmt: skip
    samples = [0.0004, 0.001, 0.003, 0.003, 0.2, 7.5, 12.0]
    for seconds in samples:
        metrics.record("GET", "/livez", 200, seconds)
        reference.labels("GET", "/livez").observe(seconds)
    metrics.record("BREW", "/livez", 200, 0.002)  # a made-up method counts as "other"
    text = metrics.exposition().decode()
    expected = generate_latest(reference_registry).decode()
    ours = {line for line in text.splitlines() if line.startswith("pgstack_http_request_dur")}
    theirs = {
        line for line in expected.splitlines() if 'method="GET"' in line and "_created" not in line
    }
    assert theirs <= ours
    assert 'pgstack_http_requests_total{method="GET",route="/livez",status="200"} 7.0' in text
    assert 'pgstack_http_requests_total{method="other",route="/livez",status="200"} 1.0' in text
