"""Base backups for point-in-time recovery, beside the WAL archive that PostgreSQL fills.

    <BACKUP_WAL_DIR>/wal/<segment>.zst     archived WAL (pgstack-wal-archive in the postgres image)
    <BACKUP_WAL_DIR>/base/<name>/          pg_basebackup -Ft: base.tar.zst, pg_wal.tar,
                                           backup_manifest, manifest.json (ours: LSNs, sha256)
    <BACKUP_WAL_DIR>/WAL_DROPPED           written when the archive's queue limit dropped WAL

The newest BACKUP_BASE_KEEP base backups are kept; archived WAL older than the oldest of them
is pruned (it could only serve a base backup that no longer exists).
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pgstack_backup import db, log
from pgstack_backup.dump import run_tool
from pgstack_backup.settings import Settings
from pgstack_backup.store import (
    MANIFEST,
    NAME_RE,
    PARTIAL_PREFIX,
    Backup,
    fsync_path,
    new_name,
    sha256_file,
    write_json_atomic,
)

SEGMENT_BYTES = 16 * 1024 * 1024  # initdb's default wal_segment_size


def segment_name(timeline: int, lsn: str) -> str:
    """The WAL file holding `lsn` ("X/Y") on `timeline`, for 16 MB segments."""
    high, low = (int(part, 16) for part in lsn.split("/"))
    segment = ((high << 32) | low) // SEGMENT_BYTES
    per_id = 0x100000000 // SEGMENT_BYTES
    return f"{timeline:08X}{segment // per_id:08X}{segment % per_id:08X}"


class BaseStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.base = root / "base"
        self.wal = root / "wal"
        self.dropped_marker = root / "WAL_DROPPED"

    def backups(self) -> list[Backup]:
        if not self.base.is_dir():
            return []
        found = [Backup(p.name, p) for p in self.base.iterdir() if NAME_RE.fullmatch(p.name)]
        return sorted(found, key=lambda b: (b.taken_at, b.name))


def archiving_problem(settings: Settings, store: BaseStore, wait_s: float = 15) -> str | None:
    """Why point-in-time recovery is broken right now, or None. A failure newer than the last
    success gets `wait_s` to clear: the base backup just closed a WAL file, which wakes the
    archiver, so a repaired archive shows within a second or two."""
    deadline = time.monotonic() + wait_s
    with db.connect(settings) as conn:
        while True:
            row = conn.execute(
                "SELECT current_setting('archive_mode'), last_archived_time, last_failed_time, "
                "last_failed_wal FROM pg_stat_archiver"
            ).fetchone()
            mode, archived, failed, failed_wal = row  # type: ignore[misc]
            failing = failed is not None and (archived is None or failed > archived)
            if not failing or time.monotonic() > deadline:
                break
            time.sleep(1)
    if mode == "off":
        return "archive_mode is off in postgresql.conf"
    if failing:
        return f"WAL archiving is failing since {failed} (last failed file {failed_wal})"
    newest = store.backups()[-1:] if store.backups() else []
    since = newest[0].taken_at.timestamp() if newest else 0.0
    if store.dropped_marker.exists() and store.dropped_marker.stat().st_mtime >= since:
        # Only a base backup that started after the last drop can serve recovery again.
        dropped = store.dropped_marker.read_text().strip()
        return (
            f"WAL was dropped at {dropped} (archive queue over WAL_ARCHIVE_QUEUE_MAX): "
            "fix the archive, then take a backup"
        )
    return None


def take(settings: Settings, label: str = "") -> Backup:
    store = BaseStore(settings.wal_dir)
    store.base.mkdir(parents=True, exist_ok=True)
    for stale in store.base.glob(f"{PARTIAL_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    started = log.now()
    name = new_name(started, label)
    while (store.base / name).exists():
        time.sleep(1)
        started = log.now()
        name = new_name(started, label)
    partial = store.base / f"{PARTIAL_PREFIX}{name}"
    partial.mkdir()
    run_tool(
        ["pg_basebackup", f"--pgdata={partial}", "--format=tar", "--compress=client-zstd:3",
         "--wal-method=stream", "--checkpoint=fast", f"--label=pgstack {name}", "--no-password",
         f"--dbname={settings.conninfo(dbname='postgres')}"],
        watch=partial / "base.tar.zst", interval=settings.progress_interval_s, label="basebackup",
    )  # fmt: skip
    ranges = json.loads((partial / "backup_manifest").read_text())["WAL-Ranges"][0]
    files = {
        p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(partial.iterdir())
    }
    finished = log.now()
    manifest: dict[str, Any] = {
        "format": 1, "kind": "base", "name": name,
        "started_at": log.iso(started), "finished_at": finished.isoformat(),
        "timeline": ranges["Timeline"], "start_lsn": ranges["Start-LSN"],
        "end_lsn": ranges["End-LSN"],
        "start_wal": segment_name(ranges["Timeline"], ranges["Start-LSN"]),
        "size": sum(f["size"] for f in files.values()), "files": files,
    }  # fmt: skip
    write_json_atomic(partial / MANIFEST, manifest)
    fsync_path(partial)
    partial.rename(store.base / name)
    fsync_path(store.base)
    backup = Backup(name, store.base / name)
    log.event("basebackup", backup=name, size=manifest["size"], start_wal=manifest["start_wal"],
              duration_s=round((finished - started).total_seconds(), 3))  # fmt: skip
    prune(settings, store)
    return backup


def prune(settings: Settings, store: BaseStore, wal_suffix: str = ".zst") -> None:
    """Keep the newest BACKUP_BASE_KEEP base backups and the WAL from the oldest one on."""
    # An encrypted off-site copy cannot be checksummed here: its manifest's presence counts.
    backups = [
        b for b in store.backups()
        if (not b.checksum_problems() if wal_suffix == ".zst" else b.manifest is not None)
    ]  # fmt: skip
    doomed = [b for b in store.backups() if b not in backups[-settings.base_keep :]]
    for backup in doomed:
        gone = store.base / f"{PARTIAL_PREFIX}deleting-{backup.name}"
        backup.path.rename(gone)
        shutil.rmtree(gone, ignore_errors=True)
    kept = backups[-settings.base_keep :]
    if not kept:
        return
    oldest = (kept[0].manifest or {}).get("start_wal", "")
    removed = 0
    for path in store.wal.glob(f"*{wal_suffix}"):
        segment = path.name.removesuffix(wal_suffix)
        # Compare log and segment numbers across timelines; keep .history and .backup files.
        if len(segment) == 24 and segment[8:] < oldest[8:]:
            path.unlink(missing_ok=True)
            removed += 1
    if doomed or removed:
        log.event("wal_pruned", base_deleted=[b.name for b in doomed], wal_files_removed=removed)


def choose(settings: Settings, target: datetime) -> Backup:
    """The newest intact base backup that finished before `target`."""
    for backup in reversed(BaseStore(settings.wal_dir).backups()):
        manifest = backup.manifest or {}
        finished = datetime.fromisoformat(manifest.get("finished_at", "9999-01-01T00:00:00+00:00"))
        if finished < target and not backup.checksum_problems():
            return backup
    raise LookupError(
        f"no intact base backup finished before {target.isoformat()}; "
        "point-in-time recovery reaches only times after the oldest one (base-list)"
    )
