"""One backup or restore at a time: an exclusive flock on the backup volume, across containers
(the service, `make backup`, a one-off restore container)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Busy(RuntimeError):
    """Another run (or a restore) holds the lock."""


@contextmanager
def locked(backup_dir: Path) -> Iterator[None]:
    backup_dir.mkdir(parents=True, exist_ok=True)
    path = backup_dir / "backup.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another backup or restore holds {path}") from None
        yield
    finally:
        os.close(fd)
