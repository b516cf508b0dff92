"""Point-in-time recovery, the part that runs in a one-off container with the postgres data
volume mounted (services/backup/pitr-restore.sh orders the whole procedure, postgres stopped):
empty the data directory, unpack the newest base backup that finished before the target, and
ask PostgreSQL to replay archived WAL up to the target time, then promote.

It runs as root: it writes another service's data directory and must leave it owned by that
service's user (whatever uid the postgres image gives it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pgstack_backup import basebackup, log
from pgstack_backup.settings import Settings

PGDATA = Path("/var/lib/postgresql/data")
_RECOVERY_KEYS = re.compile(r"^\s*(restore_command|recovery_target\w*)\s*=", re.MULTILINE)


def parse_target(text: str, tz: ZoneInfo) -> datetime:
    """ISO 8601 ('2026-11-27 10:15:00', '...+01:00', '...Z'); without an offset: BACKUP_TZ."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"TARGET_TIME={text!r}: expected e.g. '2026-11-27 10:15:00+00:00'"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def _untar(directory: Path, stem: str, into: Path) -> None:
    """Unpack <stem>.tar or <stem>.tar.zst (pg_basebackup leaves pg_wal.tar uncompressed)."""
    archive = next(directory.glob(f"{stem}.tar*"), None)
    if archive is None:
        raise FileNotFoundError(f"{directory}/{stem}.tar*: missing from the base backup")
    zstd = ["--use-compress-program=zstd -d"] if archive.suffix == ".zst" else []
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", *zstd, "-x", "-f", str(archive), "-C", str(into)],
                   check=True, capture_output=True)  # fmt: skip


def prepare(settings: Settings, target: datetime, pgdata: Path = PGDATA) -> dict[str, Any]:
    if os.geteuid() != 0:
        raise PermissionError("pitr-prepare must run as root (it writes postgres's data directory)")
    if (pgdata / "postmaster.pid").exists():
        raise RuntimeError(f"{pgdata}/postmaster.pid exists: stop postgres first")
    base = basebackup.choose(settings, target)
    if base.checksum_problems():
        raise RuntimeError(f"base backup {base.name}: {base.checksum_problems()}")
    owner = pgdata.stat()
    # Unpack beside the live files first (same volume, so the swap below is renames): a failure
    # here leaves the current cluster untouched and startable.
    staging, old = pgdata / ".pitr-staging", pgdata / ".pitr-replaced"
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        _untar(base.path, "base", staging)
        _untar(base.path, "pg_wal", staging / "pg_wal")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old.mkdir()
    for child in list(pgdata.iterdir()):
        if child not in (staging, old):
            child.rename(old / child.name)
    for child in list(staging.iterdir()):
        child.rename(pgdata / child.name)
    staging.rmdir()
    # The replaced cluster is not needed again: the safety backup and the archive hold its data.
    shutil.rmtree(old)
    auto_conf = pgdata / "postgresql.auto.conf"
    kept = [line for line in auto_conf.read_text().splitlines() if not _RECOVERY_KEYS.match(line)]
    kept += [
        "# pgstack point-in-time recovery (pgstack-backup pitr-prepare); ignored after promotion",
        'restore_command = \'pgstack-wal-restore "%f" "%p"\'',
        f"recovery_target_time = '{target.isoformat()}'",
        "recovery_target_action = 'promote'",
    ]
    auto_conf.write_text("\n".join(kept) + "\n")
    (pgdata / "recovery.signal").touch()
    for root, dirs, files in os.walk(pgdata):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), owner.st_uid, owner.st_gid)
    os.chown(pgdata, owner.st_uid, owner.st_gid)
    pgdata.chmod(0o700)
    summary = {"event": "pitr_prepared", "base_backup": base.name, "target": target.isoformat(),
               "base_finished_at": (base.manifest or {}).get("finished_at")}  # fmt: skip
    log.event(**summary)  # type: ignore[arg-type]
    return summary
