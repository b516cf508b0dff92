"""The backup directory: layout, atomic writes, listing and checksums.

<BACKUP_DIR>/dumps/<name>/            a complete backup (the rename is the commit point)
    pgstack.dump                      pg_dump custom format, zstd
    globals.sql                       roles and tablespaces, without passwords
    manifest.json                     sizes, sha256, versions, row counts
    verification.json                 the last verification's outcome
<BACKUP_DIR>/dumps/.partial-<name>/   a run in progress, or one that was killed: never complete
<BACKUP_DIR>/state.json               last success / failure (health), lock
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DUMP_FILE = "pgstack.dump"
GLOBALS_FILE = "globals.sql"
MANIFEST = "manifest.json"
VERIFICATION = "verification.json"
PARTIAL_PREFIX = ".partial-"
NAME_RE = re.compile(r"(\d{8}T\d{6}Z)(?:-([a-z0-9-]{1,40}))?")


def new_name(moment: datetime, label: str = "") -> str:
    stamp = moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{label}" if label else stamp


def taken_at(name: str) -> datetime:
    match = NAME_RE.fullmatch(name)
    if not match:
        raise ValueError(f"not a backup name: {name!r}")
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


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


@dataclass(frozen=True, slots=True)
class Backup:
    name: str
    path: Path

    @property
    def taken_at(self) -> datetime:
        return taken_at(self.name)

    @property
    def manifest(self) -> dict[str, Any] | None:
        return read_json(self.path / MANIFEST)

    @property
    def verification(self) -> dict[str, Any] | None:
        return read_json(self.path / VERIFICATION)

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())

    def checksum_problems(self) -> list[str]:
        """Empty when every file named in the manifest has its size and sha256."""
        manifest = self.manifest
        if manifest is None:
            return ["manifest.json is missing or unreadable"]
        problems = []
        for file_name, expected in sorted(manifest.get("files", {}).items()):
            path = self.path / file_name
            if not path.is_file():
                problems.append(f"{file_name}: missing")
            elif path.stat().st_size != expected["size"]:
                problems.append(
                    f"{file_name}: size {path.stat().st_size}, manifest says {expected['size']}"
                )
            elif sha256_file(path) != expected["sha256"]:
                problems.append(f"{file_name}: sha256 differs from the manifest")
        if not manifest.get("files"):
            problems.append("manifest.json lists no files")
        return problems

    def is_valid(self) -> bool:
        """Counts for retention and off-site copies: checksums match, last verification passed."""
        record = self.verification or {}
        return record.get("ok") is True and not self.checksum_problems()


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dumps = root / "dumps"
        self.state_path = root / "state.json"
        self.lock_path = root / "backup.lock"

    def ensure(self) -> None:
        self.dumps.mkdir(parents=True, exist_ok=True)

    def backups(self) -> list[Backup]:
        """Complete backups (renamed into place), oldest first."""
        if not self.dumps.is_dir():
            return []
        found = [
            Backup(p.name, p)
            for p in self.dumps.iterdir()
            if p.is_dir() and NAME_RE.fullmatch(p.name)
        ]
        return sorted(found, key=lambda b: (b.taken_at, b.name))

    def resolve(self, name: str) -> Backup:
        backups = self.backups()
        if not backups:
            raise LookupError(f"no backups in {self.dumps}")
        if name == "latest":
            return backups[-1]
        for backup in backups:
            if backup.name == name:
                return backup
        raise LookupError(f"no backup named {name!r}; `make backup-list` shows them")

    def partial_dir(self, name: str) -> Path:
        return self.dumps / f"{PARTIAL_PREFIX}{name}"

    def commit(self, partial: Path, name: str) -> Backup:
        final = self.dumps / name
        partial.rename(final)
        fsync_path(self.dumps)
        return Backup(name, final)

    def remove_partials(self) -> list[str]:
        """Left-overs of killed or failed runs; call only while holding the lock."""
        removed = []
        if self.dumps.is_dir():
            for path in self.dumps.iterdir():
                if path.name.startswith(PARTIAL_PREFIX):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path.name)
        return removed

    def delete(self, backup: Backup) -> None:
        # Rename first: a half-deleted directory must not look like a complete backup.
        doomed = self.dumps / f"{PARTIAL_PREFIX}deleting-{backup.name}"
        backup.path.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
