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

from pgstack_backup import log
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
    result = {"dir": str(root), "copied": copied, "deleted": sorted(doomed),
              "encrypted": bool(settings.offsite_age_recipient)}  # fmt: skip
    log.event("offsite", **result)
    return result
