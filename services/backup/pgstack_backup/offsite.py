"""Copy finished, verified backups to a second location (BACKUP_OFFSITE_DIR: an NFS/SMB mount,
a USB disk, or a directory an S3 sync job uploads -- docs/operations.md), optionally encrypted
with age to a public key (BACKUP_OFFSITE_AGE_RECIPIENT): the private key never is on this host.

Each copy is written under a temporary name, fsynced and renamed, like the local backups. The
off-site set has its own GFS retention with the same policy (never a mirror of the local one: a
fresh, empty local volume must not empty the off-site copy too).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from pgstack_backup import basebackup, log
from pgstack_backup.retention import Candidate, Policy, to_delete
from pgstack_backup.settings import Settings
from pgstack_backup.store import (
    MANIFEST,
    NAME_RE,
    PARTIAL_PREFIX,
    Backup,
    Store,
    fsync_path,
    taken_at,
)

AGE_SUFFIX = ".age"


def _copy_file(source: Path, target: Path, recipient: str) -> None:
    if recipient and source.name != MANIFEST:
        target = target.with_name(target.name + AGE_SUFFIX)
        subprocess.run(
            ["age", "--encrypt", "--recipient", recipient, "--output", str(target), str(source)],
            check=True, capture_output=True,
        )  # fmt: skip
    else:
        shutil.copyfile(source, target)
    with target.open("rb") as handle:
        os.fsync(handle.fileno())


def copy(backup: Backup, root: Path, recipient: str) -> Path:
    final = root / backup.name
    partial = root / f"{PARTIAL_PREFIX}{backup.name}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    # The manifest (sizes, checksums, row counts; no data) stays readable for listing.
    for source in sorted(backup.path.iterdir()):
        if source.is_file() and not source.name.startswith("."):
            _copy_file(source, partial / source.name, recipient)
    fsync_path(partial)
    partial.rename(final)
    fsync_path(root)
    return final


def sync(settings: Settings, store: Store) -> dict[str, object] | None:
    """Copy every valid local backup missing off-site; apply retention there. None when off."""
    root = settings.offsite_dir
    if root is None:
        return None
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f"{PARTIAL_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    present = {p.name for p in root.iterdir() if NAME_RE.fullmatch(p.name)}
    copied = []
    for backup in store.backups():
        if backup.name not in present and backup.is_valid():
            copy(backup, root, settings.offsite_age_recipient)
            copied.append(backup.name)
            present.add(backup.name)
    policy = Policy(settings.keep_daily, settings.keep_weekly, settings.keep_monthly)
    doomed = to_delete([Candidate(n, taken_at(n), True) for n in present], policy, settings.tz)
    for name in sorted(doomed):
        (root / name).rename(root / f"{PARTIAL_PREFIX}deleting-{name}")
        shutil.rmtree(root / f"{PARTIAL_PREFIX}deleting-{name}", ignore_errors=True)
    pitr = _sync_pitr(settings, root / "pitr") if settings.pitr else None
    result = {"dir": str(root), "copied": copied, "deleted": sorted(doomed),
              "encrypted": bool(settings.offsite_age_recipient), "pitr": pitr}  # fmt: skip
    log.event("offsite", **result)
    return result


def _sync_pitr(settings: Settings, root: Path) -> dict[str, object]:
    """Base backups and archived WAL too, so point-in-time recovery works from the copy alone.
    WAL files never change once archived: each is copied once. The copy keeps the newest
    BACKUP_BASE_KEEP base backups and the WAL from the oldest of them on, like the original."""
    local = basebackup.BaseStore(settings.wal_dir)
    remote = basebackup.BaseStore(root)
    remote.base.mkdir(parents=True, exist_ok=True)
    remote.wal.mkdir(parents=True, exist_ok=True)
    for stale in [*remote.base.glob(f"{PARTIAL_PREFIX}*"), *remote.wal.glob(".*")]:
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()
    present = {p.name for p in remote.base.iterdir()}
    bases = [b.name for b in local.backups() if b.name not in present and not b.checksum_problems()]
    for name in bases:
        copy(Backup(name, local.base / name), remote.base, settings.offsite_age_recipient)
    suffix = AGE_SUFFIX if settings.offsite_age_recipient else ""
    have = {p.name.removesuffix(AGE_SUFFIX) for p in remote.wal.iterdir()}
    wal = 0
    for source in sorted(local.wal.glob("*.zst")) if local.wal.is_dir() else []:
        if source.name not in have:
            tmp = remote.wal / f".{source.name}{suffix}"
            _copy_file(source, tmp, settings.offsite_age_recipient)
            written = tmp if not suffix else tmp.with_name(tmp.name + AGE_SUFFIX)
            written.rename(remote.wal / f"{source.name}{suffix}")
            wal += 1
    fsync_path(remote.wal)
    basebackup.prune(settings, remote, wal_suffix=f".zst{suffix}")
    return {"base_copied": bases, "wal_copied": wal}
