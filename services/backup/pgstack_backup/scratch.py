"""A throwaway PostgreSQL instance inside the backup container, for test restores: the production
cluster never sees them (no WAL into its archive, no space taken from its volume).

Its data directory is under BACKUP_SCRATCH_DIR (the backups volume by default: a large database
does not fit a tmpfs); it listens only on a private socket directory, trusts the local user (the
only one who can reach that socket), and trades durability for speed: it is deleted afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pgstack_backup import log, tools
from pgstack_backup.settings import Settings

# Durability is worthless here; the restore's speed is what matters.
_SERVER_OPTIONS = (
    "-c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c wal_level=minimal -c max_wal_senders=0 -c archive_mode=off -c autovacuum=off "
    "-c shared_buffers=128MB -c maintenance_work_mem=256MB -c max_connections=20"
)


class ScratchUnavailable(RuntimeError):
    """The throwaway instance could not be created or started (disk full, memory, ...): an
    environmental failure, which says nothing about the backup being tested."""


@dataclass(frozen=True, slots=True)
class Instance:
    data_dir: Path
    socket_dir: str


@contextmanager
def instance(settings: Settings, name: str) -> Iterator[Instance]:
    """initdb, start, yield, then stop and delete everything, whatever happened inside."""
    root = settings.scratch_dir
    for stale in root.glob("*") if root.is_dir() else []:  # killed runs (the caller holds the lock)
        shutil.rmtree(stale, ignore_errors=True)
        log.event("scratch_removed", path=str(stale))
    data_dir = root / name
    socket_dir = tempfile.mkdtemp(prefix="pgstack-scratch-")
    log_file = Path(socket_dir) / "server.log"
    started = False
    try:
        try:
            root.mkdir(parents=True, exist_ok=True)
            tools.run(["initdb", f"--pgdata={data_dir}", "--username=postgres", "--auth=trust",
                       "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"],
                      label="scratch_initdb")  # fmt: skip
            tools.run(["pg_ctl", f"--pgdata={data_dir}", f"--log={log_file}", "--wait",
                       "--timeout=120", "--silent",
                       f"--options={_SERVER_OPTIONS} -c unix_socket_directories='{socket_dir}'",
                       "start"], label="scratch_start")  # fmt: skip
            started = True
        except (tools.ToolFailed, OSError) as exc:
            tail = log_file.read_text()[-1500:] if log_file.exists() else ""
            raise ScratchUnavailable(f"throwaway PostgreSQL did not start: {exc} {tail}") from exc
        yield Instance(data_dir, socket_dir)
    finally:
        if started:
            try:
                tools.run(["pg_ctl", f"--pgdata={data_dir}", "--mode=immediate", "--silent",
                           "--wait", "stop"], label="scratch_stop")  # fmt: skip
            except tools.ToolFailed as exc:
                log.event("scratch_stop_failed", error=str(exc))
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(socket_dir, ignore_errors=True)
