"""Verify a backup: checksums, the archive's table of contents, and a real test restore into a
scratch database whose row counts must equal the manifest's. The scratch database is dropped."""

from __future__ import annotations

import re
import subprocess
import time
from typing import Any

from pgstack_backup import db, log
from pgstack_backup.dump import ToolFailed, run_tool
from pgstack_backup.settings import Settings
from pgstack_backup.store import DUMP_FILE, VERIFICATION, Backup, write_json_atomic

SCRATCH_PREFIX = "pgstack_verify_"
# Extensions need a superuser to create (pg_stat_statements is not trusted); they are cluster
# setup, re-created by `make db-init`, not data. Everything else in the archive is restored.
_SKIP_TOC = re.compile(r"\bEXTENSION\b")


class VerificationFailed(RuntimeError):
    pass


def restore_list(backup: Backup) -> list[str]:
    """`pg_restore --list`: the archive's table of contents (fails on a damaged archive)."""
    result = subprocess.run(
        ["pg_restore", "--list", str(backup.path / DUMP_FILE)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise VerificationFailed(f"pg_restore --list failed: {result.stderr.strip()[-500:]}")
    return result.stdout.splitlines()


def filtered_list(backup: Backup, path: str) -> None:
    """Write the TOC without the entries a non-superuser cannot restore (pg_restore -L)."""
    lines = [line for line in restore_list(backup) if not _SKIP_TOC.search(line)]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def check(backup: Backup, settings: Settings, *, test_restore: bool) -> dict[str, Any]:
    """Raise VerificationFailed with what is wrong; return the report when all is well."""
    started = time.monotonic()
    problems = backup.checksum_problems()
    if problems:
        raise VerificationFailed("checksum: " + "; ".join(problems))
    manifest = backup.manifest or {}
    toc = restore_list(backup)
    data_entries = {
        " ".join(line.split()[-3:-1]) for line in toc if " TABLE DATA " in line
    }  # "<schema> <table>"
    missing = [t for t in manifest["tables"] if " ".join(t.split(".", 1)) not in data_entries]
    if missing:
        raise VerificationFailed(f"table of contents lacks data for {missing}")
    report: dict[str, Any] = {"checksum": "ok", "toc_entries": len(toc)}
    if test_restore:
        report["restore"] = _test_restore(backup, settings, manifest["tables"])
    report["duration_s"] = round(time.monotonic() - started, 3)
    return report


def _test_restore(backup: Backup, settings: Settings, expected: dict[str, int]) -> dict[str, Any]:
    scratch = f"{SCRATCH_PREFIX}{backup.name.replace('-', '_').lower()}"[:63]
    started = time.monotonic()
    timings: dict[str, float] = {}
    with db.connect(settings, dbname="postgres", writable=True) as conn:
        drop_stale(conn)
        db.create_database(conn, scratch)
        try:
            list_path = f"/tmp/{scratch}.list"  # noqa: S108 -- the container's private tmpfs
            filtered_list(backup, list_path)
            mark = time.monotonic()
            try:
                run_tool(
                    ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error",
                     "--single-transaction", f"--use-list={list_path}", "--no-password",
                     f"--dbname={settings.conninfo(dbname=scratch)}",
                     str(backup.path / DUMP_FILE)],
                    interval=settings.progress_interval_s, label="test_restore",
                    # The backup role reads by default; its own scratch database it may write.
                    env={"PGOPTIONS": "-c default_transaction_read_only=off"},
                )  # fmt: skip
            except ToolFailed as exc:
                raise VerificationFailed(f"test restore failed: {exc}") from exc
            timings["pg_restore_s"] = time.monotonic() - mark
            mark = time.monotonic()
            with db.connect(settings, dbname=scratch) as scratch_conn:
                restored = db.row_counts(scratch_conn)
            timings["count_s"] = time.monotonic() - mark
        finally:
            mark = time.monotonic()
            db.drop_database(conn, scratch)
            timings["drop_s"] = time.monotonic() - mark
    differ = {
        t: {"manifest": expected.get(t), "restored": restored.get(t)}
        for t in sorted(set(expected) | set(restored))
        if expected.get(t) != restored.get(t)
    }
    if differ:
        raise VerificationFailed(f"row counts after the test restore differ: {differ}")
    return {"tables": len(restored), "rows": sum(restored.values()),
            "duration_s": round(time.monotonic() - started, 3),
            **{k: round(v, 3) for k, v in timings.items()}}  # fmt: skip


def drop_stale(conn: Any) -> None:
    """Scratch databases of killed runs (the caller holds the lock, so none is in use)."""
    for name in db.databases_like(conn, SCRATCH_PREFIX):
        db.drop_database(conn, name)
        log.event("scratch_dropped", database=name)


def verify(backup: Backup, settings: Settings, *, test_restore: bool) -> dict[str, Any]:
    """check() and record the outcome in the backup's verification.json (when it can be written)."""
    try:
        report = check(backup, settings, test_restore=test_restore)
    except VerificationFailed as exc:
        record = {"ok": False, "verified_at": log.iso(log.now()), "error": str(exc)}
        _record(backup, record)
        raise
    record = {"ok": True, "verified_at": log.iso(log.now()), **report}
    _record(backup, record)
    return record


def _record(backup: Backup, record: dict[str, Any]) -> None:
    try:
        write_json_atomic(backup.path / VERIFICATION, record)
    except OSError as exc:  # a full volume must not hide the verification's own outcome
        log.event("verification_not_recorded", backup=backup.name, error=str(exc))
