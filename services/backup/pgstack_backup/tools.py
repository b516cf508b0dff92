"""Run an external tool (pg_dump, pg_restore, pgbackrest, ...) with progress lines while it
works, and tell an environmental failure (disk full, out of memory) from a real one."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pgstack_backup import log

# What the machine did wrong rather than the data: a retry elsewhere or later may succeed.
_ENVIRONMENTAL = re.compile(
    r"No space left on device|could not extend file|out of memory|Cannot allocate memory"
    r"|Disk quota exceeded|Read-only file system",
    re.IGNORECASE,
)


class ToolFailed(RuntimeError):
    """A tool exited non-zero; the message carries the end of its stderr."""

    def __init__(self, tool: str, code: int, stderr: str) -> None:
        super().__init__(f"{tool} exited {code}: {stderr.strip()[-2000:]}")
        self.tool, self.code, self.stderr = tool, code, stderr

    @property
    def environmental(self) -> bool:
        return is_environmental(self.stderr)


def is_environmental(message: str) -> bool:
    return bool(_ENVIRONMENTAL.search(message))


def run(
    argv: Sequence[str],
    *,
    label: str = "",
    interval: float = 10,
    progress: Callable[[], dict[str, Any]] | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run a tool, return its stdout. Every `interval` seconds log elapsed time and whatever
    `progress()` reports (bytes written, percent done). Raises ToolFailed."""
    started = time.monotonic()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    done = threading.Event()

    def report() -> None:
        while not done.wait(interval):
            try:
                extra = progress() if progress else {}
            except Exception as exc:  # a progress probe must never break the work it watches
                extra = {"progress_error": str(exc)}
            log.event("progress", step=label or argv[0],
                      elapsed_s=round(time.monotonic() - started, 1), **extra)  # fmt: skip

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        stdout, stderr = process.communicate()
    finally:
        done.set()
        if process.poll() is None:
            process.kill()
    if process.returncode != 0:
        raise ToolFailed(argv[0], process.returncode, stderr)
    return stdout


def directory_bytes(path: Any) -> int:
    """Bytes under a directory (progress of a tool that writes many files)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total
