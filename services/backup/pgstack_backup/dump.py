"""Take one backup: pg_dump (custom format, zstd) and the globals, in one exported snapshot,
written under a temporary name, fsynced, described by a manifest, then renamed into place."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgstack_backup import db, log
from pgstack_backup.settings import Settings
from pgstack_backup.store import (
    DUMP_FILE,
    GLOBALS_FILE,
    MANIFEST,
    Backup,
    Store,
    fsync_path,
    new_name,
    sha256_file,
    write_json_atomic,
)


class ToolFailed(RuntimeError):
    """A PostgreSQL client tool exited non-zero; the message carries its stderr."""


def run_tool(
    argv: Sequence[str],
    *,
    watch: Path | None = None,
    interval: float = 10,
    label: str = "",
    env: dict[str, str] | None = None,
) -> None:
    """Run a client tool; every `interval` seconds log bytes written to `watch` and elapsed."""
    started = time.monotonic()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    done = threading.Event()

    def progress() -> None:
        while not done.wait(interval):
            size = watch.stat().st_size if watch is not None and watch.exists() else None
            log.event("progress", step=label, bytes=size,
                      elapsed_s=round(time.monotonic() - started, 1))  # fmt: skip

    reporter = threading.Thread(target=progress, daemon=True)
    reporter.start()
    try:
        _, stderr = process.communicate()
    finally:
        done.set()
        if process.poll() is None:
            process.kill()
    if process.returncode != 0:
        raise ToolFailed(f"{argv[0]} exited {process.returncode}: {stderr.strip()[-2000:]}")


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def take(settings: Settings, store: Store, label: str = "") -> Backup:
    """One backup, committed by a directory rename; raises on any failure (nothing committed)."""
    started = log.now()
    name = new_name(started, label)
    while (store.dumps / name).exists():  # names have one-second resolution: never reuse one
        time.sleep(1)
        started = log.now()
        name = new_name(started, label)
    partial = store.partial_dir(name)
    partial.mkdir(parents=True)
    versions = db.check_versions(settings)
    dump_path, globals_path = partial / DUMP_FILE, partial / GLOBALS_FILE
    with db.exported_snapshot(settings) as snapshot:
        log.event("dump_started", backup=name, tables=len(snapshot.tables))
        run_tool(
            ["pg_dump", "--format=custom", f"--compress={settings.compression}",
             f"--snapshot={snapshot.id}", "--no-password", f"--file={dump_path}",
             f"--dbname={settings.conninfo()}"],
            watch=dump_path, interval=settings.progress_interval_s, label="pg_dump",
        )  # fmt: skip
    run_tool(
        ["pg_dumpall", "--globals-only", "--no-role-passwords", "--no-password",
         f"--file={globals_path}", f"--dbname={settings.conninfo(dbname='postgres')}"],
    )  # fmt: skip
    files: dict[str, Any] = {}
    for path in (dump_path, globals_path):
        _fsync_file(path)
        files[path.name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
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
        "size": sum(f["size"] for f in files.values()),
        "tables": snapshot.tables,
        "files": files,
    }
    write_json_atomic(partial / MANIFEST, manifest)
    fsync_path(partial)
    backup = store.commit(partial, name)
    log.event("dump_finished", backup=name, size=manifest["size"],
              duration_s=manifest["duration_s"], rows=sum(snapshot.tables.values()))  # fmt: skip
    return backup
