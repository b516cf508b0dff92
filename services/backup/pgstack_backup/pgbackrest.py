"""pgBackRest, as this service uses it: physical backups, WAL archive facts, retention, repository
verification, and the point-in-time window. Its configuration is rendered at container start
(services/lib/pgbackrest-conf.sh, PGBACKREST_CONFIG); this module only runs commands and reads
`info --output=json`. The window logic is pure and unit-tested.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from pgstack_backup import log, tools
from pgstack_backup.settings import Settings

STANZA = "pgstack"
# pgBackRest's error codes for "this repository belongs to another cluster" (a re-initialised
# database, or a repository pointed at the wrong one): archive, backup and check say it so.
_MISMATCH_CODES = {28, 44, 51}
SEGMENTS_PER_LOG = 0x100  # 16 MB WAL segments (initdb's default): 256 per log file id


class StanzaMismatch(RuntimeError):
    """The repository's stanza was made for another cluster (system identifier)."""


@dataclass(frozen=True, slots=True)
class Backup:
    label: str
    type: str  # full, diff, incr
    started: datetime
    stopped: datetime
    size: int  # the database's size
    repo_size: int  # what this backup added to the repository
    wal_start: str
    wal_stop: str
    db_id: int
    repo: int  # 1 = the backups volume, 2 = off-site (BACKUP_REPO2)
    annotation: dict[str, str]
    error: bool

    @classmethod
    def from_info(cls, item: dict[str, Any]) -> Backup:
        stamp = item["timestamp"]
        return cls(
            label=item["label"], type=item["type"],
            started=datetime.fromtimestamp(stamp["start"], UTC),
            stopped=datetime.fromtimestamp(stamp["stop"], UTC),
            size=int(item["info"]["size"]),
            repo_size=int(item["info"]["repository"].get("delta", 0)),
            wal_start=item["archive"]["start"], wal_stop=item["archive"]["stop"],
            db_id=int(item["database"]["id"]), repo=int(item["database"].get("repo-key", 1)),
            annotation=item.get("annotation") or {},
            error=bool(item.get("error")),
        )  # fmt: skip


def command(settings: Settings, *args: str, label: str = "", progress: bool = False,
            probe: Callable[[], dict[str, Any]] | None = None) -> str:  # fmt: skip
    """Run `pgbackrest --stanza=pgstack <args>`; StanzaMismatch or ToolFailed on failure.
    Progress lines: `progress` reads a running backup's own figures from `info`; `probe` is any
    other measure (a restore's bytes written)."""
    argv = ["pgbackrest", f"--stanza={STANZA}", *args]

    def backup_progress() -> dict[str, Any]:
        held = info(settings).get("status", {}).get("lock", {}).get("backup", {})
        done, total = held.get("size-cplt"), held.get("size")
        return {"bytes_done": done, "bytes": total} if total else {}

    try:
        return tools.run(argv, label=label or f"pgbackrest {args[0]}",
                         interval=settings.progress_interval_s,
                         progress=backup_progress if progress else probe)  # fmt: skip
    except tools.ToolFailed as exc:
        if exc.code in _MISMATCH_CODES:
            raise StanzaMismatch(mismatch_help(exc.stderr)) from exc
        raise


def mismatch_help(detail: str) -> str:
    first = detail.strip().splitlines()[0] if detail.strip() else "mismatch"
    return (
        f"the backup repository belongs to another database cluster ({first}). The database was "
        "re-initialised, or the repository is not this stack's. Its WAL is not archived and no "
        "backup can be taken until this is settled: if the new cluster is meant, `make "
        "backup-stanza-upgrade` starts its own history in the same repository (the old cluster's "
        "backups stay listed and restorable); otherwise point the stack at its own repository."
    )


def info(settings: Settings) -> dict[str, Any]:
    """The stanza's entry of `pgbackrest info --output=json` ({} when there is none)."""
    out = subprocess.run(["pgbackrest", f"--stanza={STANZA}", "info", "--output=json"],
                         capture_output=True, text=True, check=False).stdout  # fmt: skip
    try:
        stanzas = json.loads(out or "[]")
    except ValueError:
        return {}
    return stanzas[0] if stanzas else {}


def unreadable(stanza: dict[str, Any]) -> str | None:
    """pgBackRest's words when it could not read a repository (status 99, "other"). `info` then
    lists no backup and no archive at all, which must not read as "nothing to check yet"."""
    for repo in stanza.get("repo", []):
        status = repo.get("status", {})
        if status.get("code") == 99:
            return f"repo{repo.get('key', '?')}: {status.get('message', 'unreadable')}"
    return None


def current_db_id(stanza: dict[str, Any]) -> int | None:
    """The cluster the stanza archives now (stanza-upgrade appends a new one)."""
    ids = [int(d["id"]) for d in stanza.get("db", [])]
    return max(ids) if ids else None


def system_id(stanza: dict[str, Any]) -> int | None:
    """The system identifier of the cluster the stanza archives now."""
    current = current_db_id(stanza)
    found = [int(d["system-id"]) for d in stanza.get("db", []) if int(d["id"]) == current]
    return found[0] if found else None


def backups(stanza: dict[str, Any], *, current_only: bool = True) -> list[Backup]:
    """Backups, oldest first; by default only those of the current cluster (the others cannot
    restore it)."""
    found = [Backup.from_info(b) for b in stanza.get("backup", [])]
    current = current_db_id(stanza)
    return [b for b in found if not current_only or b.db_id == current]


def ensure_stanza(settings: Settings) -> None:
    """Create the stanza on first use (idempotent); StanzaMismatch if it is another cluster's.
    Checked here first: with one repository holding another cluster's stanza (a new machine's
    bucket), pgBackRest still creates this cluster's in the empty one beside it, and the cluster
    recovered from the bucket would then not match that one."""
    known = system_id(info(settings))
    live = controldata(settings.pgdata).get("Database system identifier", "")
    if known is not None and live.isdigit() and int(live) != known:
        raise StanzaMismatch(mismatch_help(f"it archives cluster {known}, this one is {live}"))
    command(settings, "stanza-create", label="stanza_create")


def controldata(pgdata: Path) -> dict[str, str]:
    """pg_controldata's fields of a cluster directory ({} when there is no readable one)."""
    out = subprocess.run(["pg_controldata", str(pgdata)], capture_output=True, text=True,
                         check=False, env={**os.environ, "LC_ALL": "C"}).stdout  # fmt: skip
    pairs = (line.split(":", 1) for line in out.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def repos(stanza: dict[str, Any]) -> list[int]:
    """The configured repositories (1, and 2 when BACKUP_REPO2 is set)."""
    return sorted(int(r["key"]) for r in stanza.get("repo", [])) or [1]


def choose_type(existing: Sequence[Backup], now: datetime, full_every: timedelta) -> str:
    """full when there is no full backup newer than `full_every`, else an incremental one."""
    fulls = [b for b in existing if b.type == "full" and not b.error]
    if not fulls or now - fulls[-1].stopped >= full_every:
        return "full"
    return "incr"


def archived_segments(settings: Settings, stanza: dict[str, Any], repo: int = 1
                      ) -> dict[int, datetime]:  # fmt: skip
    """Segment number -> time it reached `repo`, for the current cluster's archive (any
    timeline)."""
    current = current_db_id(stanza)
    archive_id = next((a["id"] for a in stanza.get("archive", [])
                       if int(a["database"]["id"]) == current), None)  # fmt: skip
    if archive_id is None:
        return {}
    out = subprocess.run(
        ["pgbackrest", f"--stanza={STANZA}", f"--repo={repo}", "repo-ls", "--recurse",
         "--output=json", f"archive/{STANZA}/{archive_id}"], capture_output=True, text=True,
        check=False,
    ).stdout  # fmt: skip
    segments: dict[int, datetime] = {}
    try:
        listing = json.loads(out or "{}")
    except ValueError:
        return {}
    for path, entry in listing.items():
        name = path.rsplit("/", 1)[-1]
        if entry.get("type") == "file" and len(name) > 24 and name[24] == "-":
            segno = segment_number(name[:24])
            moment = datetime.fromtimestamp(entry["time"], UTC)
            segments[segno] = max(moment, segments.get(segno, moment))
    return segments


def segment_number(wal: str) -> int:
    """A WAL file name's position in the log, whatever its timeline (16 MB segments)."""
    return int(wal[8:16], 16) * SEGMENTS_PER_LOG + int(wal[16:24], 16)


def gaps(segments: dict[int, datetime], since: int, until: int | None = None
         ) -> list[tuple[int, int]]:  # fmt: skip
    """Missing segment ranges (first, last) from `since` to the newest archived one, or to
    `until` (the newest segment PostgreSQL was told is archived) when that is newer: pgBackRest
    answers "archived" for the WAL it drops beyond archive-push-queue-max, so the newest drop
    leaves no later segment in the repository to show it as a hole."""
    present = sorted(s for s in segments if s >= since)
    holes = [(a + 1, b - 1) for a, b in pairwise(present) if b - a > 1]
    newest = present[-1] if present else since - 1
    if until is not None and until > newest:
        holes.append((newest + 1, until))
    return holes


def window(existing: Sequence[Backup], segments: dict[int, datetime], upper: datetime
           ) -> list[tuple[datetime, datetime]]:  # fmt: skip
    """The times a point-in-time recovery can reach: from each backup's end, as far as the
    archived WAL after it runs without a gap; the run that reaches the newest segment reaches
    `upper` (now, once `pgbackrest check` has archived the current WAL)."""
    good = [b for b in existing if not b.error]
    if not good:
        return []
    newest = max(segments) if segments else None
    spans: list[tuple[datetime, datetime]] = []
    for backup in good:
        start_seg, stop_seg = segment_number(backup.wal_start), segment_number(backup.wal_stop)
        if any(s not in segments for s in range(start_seg, stop_seg + 1)):
            continue  # the backup's own WAL is missing: it cannot even reach consistency
        end = stop_seg
        while end + 1 in segments:
            end += 1
        reach = upper if end == newest else segments[end]
        if reach >= backup.stopped:
            spans.append((backup.stopped, reach))
    return _union(spans)


def recoverable(settings: Settings, stanza: dict[str, Any], upper: datetime
                ) -> list[tuple[datetime, datetime]]:  # fmt: skip
    """The window over every repository: a time any one of them can reach is recoverable
    (pgBackRest's restore picks the repository that has what the target needs)."""
    existing = backups(stanza)
    spans: list[tuple[datetime, datetime]] = []
    for repo in repos(stanza):
        spans += window([b for b in existing if b.repo == repo],
                        archived_segments(settings, stanza, repo), upper)  # fmt: skip
    return _union(spans)


def _union(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def describe(spans: list[tuple[datetime, datetime]], tz: Any) -> str:
    """'between A and B' (or several such ranges), in the operator's time zone."""

    def fmt(moment: datetime) -> str:
        return moment.astimezone(tz).isoformat(sep=" ", timespec="seconds")

    if not spans:
        return "no time at all (no usable backup yet: take one with `make backup`)"
    return " or ".join(f"between {fmt(a)} and {fmt(b)}" for a, b in spans)


def run_backup(settings: Settings, repo: int, kind: str, label: str) -> Backup:
    """Take a backup of `kind` (full/diff/incr) into `repo`, annotated with pgstack's label."""
    started = log.now()
    command(settings, "backup", f"--repo={repo}", f"--type={kind}",
            f"--annotation=pgstack-label={label}", label=f"pgbackrest_backup_repo{repo}",
            progress=True)  # fmt: skip
    taken = [b for b in backups(info(settings))
             if b.repo == repo and b.started >= started - timedelta(seconds=2)]  # fmt: skip
    if not taken:
        raise RuntimeError("pgbackrest backup succeeded but info does not list the new backup")
    return taken[-1]
