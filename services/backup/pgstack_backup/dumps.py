"""Logical backups (pg_dump): where they live, how they are listed, and taking one.

<BACKUP_DIR>/dumps/<name>/            a complete dump (the directory rename is the commit point)
    pgstack.dump                      pg_dump custom format, zstd
    globals.sql                       roles and tablespaces, without passwords
    manifest.json                     sizes, sha256, versions, row counts
    verification.json                 the last verification's outcome (ok, failed or unverified)
<BACKUP_DIR>/dumps/.partial-<name>/   a dump in progress, or one that was killed: never listed
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pgstack_backup import db, files, log, tools
from pgstack_backup.settings import Settings

DUMP_FILE = "pgstack.dump"
GLOBALS_FILE = "globals.sql"
MANIFEST = "manifest.json"
VERIFICATION = "verification.json"
NAME_RE = re.compile(r"(\d{8}T\d{6}Z)(?:-([a-z0-9-]{1,40}))?")
# Dumps taken by a restore just before it replaces data: kept for BACKUP_SAFETY_KEEP_DAYS
# whatever the GFS policy says, so rows written after a bad restore can still be copied back.
SAFETY_LABELS = frozenset({"pre-restore", "pre-pitr"})


def new_name(moment: datetime, label: str = "") -> str:
    stamp = moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{label}" if label else stamp


@dataclass(frozen=True, slots=True)
class Dump:
    name: str
    path: Path

    @property
    def taken_at(self) -> datetime:
        match = NAME_RE.fullmatch(self.name)
        if not match:
            raise ValueError(f"not a dump name: {self.name!r}")
        return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)

    @property
    def label(self) -> str:
        match = NAME_RE.fullmatch(self.name)
        return (match.group(2) or "") if match else ""

    @property
    def manifest(self) -> dict[str, Any] | None:
        return files.read_json(self.path / MANIFEST)

    @property
    def verification(self) -> dict[str, Any] | None:
        return files.read_json(self.path / VERIFICATION)

    @property
    def status(self) -> str:
        """ok, failed (this dump cannot be restored), or unverified (not tried, or the machine
        failed while trying: disk full, no memory)."""
        record = self.verification or {}
        if "status" in record:
            return str(record["status"])
        # Records of earlier versions: {"ok": true|false}.
        return {True: "ok", False: "failed"}.get(record.get("ok"), "unverified")  # type: ignore[arg-type]

    def protected_until(self, safety_days: int) -> datetime | None:
        if self.label in SAFETY_LABELS:
            return self.taken_at + timedelta(days=safety_days)
        return None

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
            elif files.sha256_file(path) != expected["sha256"]:
                problems.append(f"{file_name}: sha256 differs from the manifest")
        if not manifest.get("files"):
            problems.append("manifest.json lists no files")
        return problems

    def restorable(self) -> bool:
        """Counts for retention and off-site copies: its files are intact and no restore of it
        has failed (an unverified dump may well be good: it is kept, never deleted as bad)."""
        return self.status != "failed" and not self.checksum_problems()


class Store:
    def __init__(self, backup_dir: Path) -> None:
        self.root = backup_dir
        self.dumps = backup_dir / "dumps"
        self.state_path = backup_dir / "state.json"

    def ensure(self) -> None:
        self.dumps.mkdir(parents=True, exist_ok=True)

    def all(self) -> list[Dump]:
        """Complete dumps (renamed into place), oldest first."""
        if not self.dumps.is_dir():
            return []
        found = [Dump(p.name, p) for p in self.dumps.iterdir()
                 if p.is_dir() and NAME_RE.fullmatch(p.name)]  # fmt: skip
        return sorted(found, key=lambda d: (d.taken_at, d.name))

    def resolve(self, name: str) -> Dump:
        dumps = self.all()
        if not dumps:
            raise LookupError(f"no backups in {self.dumps}; take one with `make backup`")
        if name == "latest":
            return dumps[-1]
        for dump in dumps:
            if dump.name == name:
                return dump
        raise LookupError(f"no backup named {name!r}; `make backup-list` shows them")


def take(settings: Settings, store: Store, label: str = "") -> Dump:
    """One dump, committed by a directory rename; raises on any failure (nothing committed)."""
    store.ensure()
    started = log.now()
    name = new_name(started, label)
    while (store.dumps / name).exists():  # names have one-second resolution: never reuse one
        time.sleep(1)
        started = log.now()
        name = new_name(started, label)
    partial = files.partial_dir(store.dumps, name)
    partial.mkdir(parents=True)
    try:
        manifest = _write(settings, partial, name, label, started)
    except BaseException:
        files.remove_partials(store.dumps)
        raise
    final = store.dumps / name
    files.commit_dir(partial, final)
    log.event("dump_finished", backup=name, size=manifest["size"],
              duration_s=manifest["duration_s"], rows=sum(manifest["tables"].values()))  # fmt: skip
    return Dump(name, final)


def _write(settings: Settings, partial: Path, name: str, label: str, started: datetime
           ) -> dict[str, Any]:  # fmt: skip
    versions = db.check_versions(settings)
    dump_path, globals_path = partial / DUMP_FILE, partial / GLOBALS_FILE
    with db.exported_snapshot(settings) as snapshot:
        log.event("dump_started", backup=name, tables=len(snapshot.tables))
        tools.run(
            ["pg_dump", "--format=custom", f"--compress={settings.compression}",
             f"--snapshot={snapshot.id}", f"--role={settings.dump_role}", "--no-password",
             f"--file={dump_path}", f"--dbname={settings.conninfo()}"],
            label="pg_dump", interval=settings.progress_interval_s,
            progress=lambda: {"bytes": dump_path.stat().st_size if dump_path.exists() else 0},
        )  # fmt: skip
    tools.run(["pg_dumpall", "--globals-only", "--no-role-passwords", "--no-password",
               f"--file={globals_path}", f"--dbname={settings.conninfo('postgres')}"])  # fmt: skip
    written: dict[str, Any] = {}
    for path in (dump_path, globals_path):
        files.fsync_file(path)
        written[path.name] = {"size": path.stat().st_size, "sha256": files.sha256_file(path)}
    finished = log.now()
    manifest = {
        "format": 1,
        "name": name,
        "label": label or "scheduled",
        "database": settings.database,
        "started_at": log.iso(started),
        "finished_at": log.iso(finished),
        "duration_s": round((finished - started).total_seconds(), 3),
        "server_version": snapshot.server_version,
        "pg_dump_major": int(versions["pg_dump_major"]),
        "alembic_revision": snapshot.alembic_revision,
        "compression": settings.compression,
        "size": sum(f["size"] for f in written.values()),
        "tables": snapshot.tables,
        "files": written,
    }
    files.write_json_atomic(partial / MANIFEST, manifest)
    return manifest
