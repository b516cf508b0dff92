"""Logs: one JSON object per line on stdout (pretty on a terminal), uvicorn's included.

The access log is the one line written per request, so it has a path of its own (measured in
docs/benchmarks.md, "Where a request's time goes"): `AccessLog` formats the line directly
instead of building a LogRecord, and lines are written in batches, at most `FLUSH_S` after the
request, instead of one write to the pipe (and one wake-up of Docker's log reader) per request.
Every other record goes through the logging module and is written at once, after the access
lines already waiting, so the order on stdout is the order of events and a record that precedes
a crash is never held back. The cost: a worker killed outright (SIGKILL, the OOM killer) loses
the access lines of its last `FLUSH_S`; a graceful stop writes them all (`AccessLog.flush` in
the app's shutdown).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any, Literal

# Attributes every LogRecord has; anything else was passed in `extra=` and is ours to print.
_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured duplicate of msg
}
# How long an access line may wait in the buffer, and how much may wait (a pipe holds 64 KiB).
FLUSH_S = 0.1
_FLUSH_BYTES = 32 * 1024
ACCESS_LOGGER = "pgstack_api.request"
_quote = json.encoder.encode_basestring_ascii  # the C function json.dumps uses for a str


class _Clock:
    """UTC timestamps with milliseconds, like isoformat(timespec="milliseconds"); the date and
    time are formatted once per second, not once per line."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def iso(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((created - second) * 1000):03d}+00:00"


_clock = _Clock()


class _Stdout:
    """stdout with a buffer for access lines; `write_now` empties the buffer first."""

    def __init__(self, fd: int = 1) -> None:
        self._fd = fd
        self._pending: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def write_later(self, line: str) -> None:
        self._pending.append(line)
        self._size += len(line)
        if self._size >= _FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)
            except RuntimeError:  # no event loop here (a thread, start-up): no batching
                self.flush()

    def write_now(self, text: str) -> None:
        self._pending.append(text)
        self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        data = memoryview("".join(self._pending).encode("utf-8", "backslashreplace"))
        self._pending.clear()
        self._size = 0
        while data:
            try:
                data = data[os.write(self._fd, data) :]
            except BlockingIOError:  # a non-blocking pipe that is full: wait for the reader
                os.set_blocking(self._fd, True)
            except OSError:
                return  # stdout is gone (the reader died): nothing left to tell


_stdout = _Stdout()


class _Handler(logging.Handler):
    """Writes formatted records to stdout at once, after any access lines still buffered."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _stdout.write_now(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _clock.iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class PrettyFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD)
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        line = f"{stamp} {record.levelname:<7} {record.getMessage()} {extras}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class AccessLog:
    """The line per request: method, path, route template, status, duration, request id.

    In JSON the same object JsonFormatter would write for
    `logging.getLogger(ACCESS_LOGGER).info("request", extra={...})`, built directly and
    buffered; pretty (a terminal) goes through the logging module like every other record.
    """

    def __init__(self, json_lines: bool) -> None:
        self._json = json_lines
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._prefix = f'","level":"info","logger":"{ACCESS_LOGGER}","msg":"request","method":'

    def request(
        self,
        method: str,
        path: str,
        route: str,
        status: int,
        duration_ms: float,
        request_id: str | None,
    ) -> None:
        if not self._json:
            extra = {"method": method, "path": path, "route": route, "status": status,
                     "duration_ms": duration_ms, "request_id": request_id}  # fmt: skip
            self._logger.info("request", extra=extra)
            return
        if not self._logger.isEnabledFor(logging.INFO):
            return
        rid = "null" if request_id is None else _quote(request_id)
        _stdout.write_later(
            f'{{"ts":"{_clock.iso(time.time())}{self._prefix}{_quote(method)},"path":{_quote(path)},'
            f'"route":{_quote(route)},"status":{status},"duration_ms":{duration_ms!r},'
            f'"request_id":{rid}}}\n'
        )

    def flush(self) -> None:
        _stdout.flush()


def configure_logging(
    fmt: Literal["json", "pretty", "auto"] = "auto", level: int = logging.INFO
) -> AccessLog:
    """Route our loggers and uvicorn's through one stdout handler; the access log to match.

    Called from create_app(), i.e. after uvicorn configured its own logging, so this wins.
    """
    pretty = fmt == "pretty" or (fmt == "auto" and sys.stdout.isatty())
    handler: logging.Handler = logging.StreamHandler(sys.stdout) if pretty else _Handler()
    handler.setFormatter(PrettyFormatter() if pretty else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The app writes its own line per request; uvicorn's would be a second, unstructured one.
    logging.getLogger("uvicorn.access").disabled = True
    return AccessLog(json_lines=not pretty)
