"""Copy restorable dumps to a second location (BACKUP_OFFSITE_DIR: an NFS/SMB mount, a USB disk,
or a directory an S3 sync job uploads -- docs/operations.md), optionally encrypted with age to a
public key (BACKUP_OFFSITE_AGE_RECIPIENT): the private key never is on this host. Physical
backups and WAL go off-site through pgBackRest's second repository instead (BACKUP_REPO2).

Each copy is written under a temporary name, fsynced and renamed, like the local dumps. The
off-site set has its own GFS retention with the same policy (never a mirror of the local one: a
fresh, empty local volume must not empty the off-site copy too); safety dumps stay protected.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pgstack_backup import files, log
from pgstack_backup.dumps import MANIFEST, NAME_RE, Dump, Store
from pgstack_backup.retention import Candidate, Policy, to_delete
from pgstack_backup.settings import Settings

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
    files.fsync_file(target)


def copy(dump: Dump, root: Path, recipient: str) -> Path:
    final = root / dump.name
    partial = files.partial_dir(root, dump.name)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    # The manifest (sizes, checksums, row counts; no data) stays readable for listing.
    for source in sorted(dump.path.iterdir()):
        if source.is_file() and not source.name.startswith("."):
            _copy_file(source, partial / source.name, recipient)
    files.commit_dir(partial, final)
    return final


def sync(settings: Settings, store: Store) -> dict[str, object] | None:
    """Copy every restorable local dump missing off-site; apply retention there. None when off."""
    root = settings.offsite_dir
    if root is None:
        return None
    root.mkdir(parents=True, exist_ok=True)
    files.remove_partials(root)
    present = {p.name: Dump(p.name, p) for p in root.iterdir() if NAME_RE.fullmatch(p.name)}
    copied = []
    for dump in store.all():
        if dump.name not in present and dump.restorable():
            present[dump.name] = Dump(dump.name, copy(dump, root, settings.offsite_age_recipient))
            copied.append(dump.name)
    policy = Policy(settings.keep_daily, settings.keep_weekly, settings.keep_monthly)
    candidates = [Candidate(d.name, d.taken_at, True, d.protected_until(settings.safety_keep_days))
                  for d in present.values()]  # fmt: skip
    doomed = to_delete(candidates, policy, settings.tz, now=log.now())
    for name in sorted(doomed):
        files.remove_dir(root / name)
    result = {"dir": str(root), "copied": copied, "deleted": sorted(doomed),
              "encrypted": bool(settings.offsite_age_recipient)}  # fmt: skip
    log.event("offsite", **result)
    return result
