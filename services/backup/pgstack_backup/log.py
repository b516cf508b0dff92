"""JSON log lines on stdout (one per event; pretty on a terminal), and the optional webhook."""

from __future__ import annotations

import json
import sys
import urllib.request
from datetime import UTC, datetime
from typing import Any


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime, timespec: str = "seconds") -> str:
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse(text: str) -> datetime:
    """The inverse of iso()."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def event(event: str, **fields: Any) -> None:
    """One log line. Errors go to stdout too: the whole run is one JSON stream."""
    line = {"ts": iso(now()), "event": event, **fields}
    if sys.stdout.isatty():
        print(json.dumps(line, indent=2, default=str), flush=True)
    else:
        print(json.dumps(line, default=str), flush=True)


def notify(url: str, payload: dict[str, Any]) -> None:
    """POST the run's summary to BACKUP_WEBHOOK_URL; a failing webhook is logged, never fatal."""
    if not url:
        return
    body = json.dumps(payload, default=str).encode()
    request = urllib.request.Request(  # noqa: S310 -- the scheme is checked in settings
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            event("webhook", status=response.status)
    except OSError as exc:
        event("webhook", status="failed", error=str(exc))
