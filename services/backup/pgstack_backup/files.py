"""Artifacts on disk, written so that a crash leaves either the old state or the new, whole:
temp name, fsync, rename, fsync the directory. The one place that commits or removes an artifact."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

PARTIAL_PREFIX = ".partial-"


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Temp file, fsync, rename, fsync the directory: a reader sees the old or the new, whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    fsync_path(path.parent)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def partial_dir(parent: Path, name: str) -> Path:
    """Where an artifact named `name` is written before it is committed (never listed)."""
    return parent / f"{PARTIAL_PREFIX}{name}"


def commit_dir(partial: Path, final: Path) -> None:
    """Make a fully written directory visible under its final name (the commit point)."""
    fsync_path(partial)
    partial.rename(final)
    fsync_path(final.parent)


def remove_dir(path: Path) -> None:
    """Rename first, then delete: a half-deleted directory never looks like a complete one."""
    doomed = path.with_name(f"{PARTIAL_PREFIX}deleting-{path.name}")
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def remove_partials(parent: Path) -> list[str]:
    """Left-overs of killed or failed writes under `parent`; call only while holding the lock."""
    removed = []
    if parent.is_dir():
        for path in parent.iterdir():
            if path.name.startswith(PARTIAL_PREFIX):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
                removed.append(path.name)
    return removed
