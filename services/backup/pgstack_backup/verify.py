"""Verify a dump: checksums, the archive's table of contents, and a real test restore -- the very
procedure `make restore` runs (restore.restore_into), into a throwaway PostgreSQL instance made
from the dump's own roles (globals.sql). The outcome is recorded in verification.json:

    ok          restored, and every table has the manifest's row count
    failed      this dump cannot be restored (damaged, or its contents do not restore)
    unverified  the machine failed while trying (disk full, out of memory): nothing is known
                about the dump, so it is kept like a good one and the run reports the failure
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from pgstack_backup import files, log, restore, scratch, tools
from pgstack_backup.dumps import GLOBALS_FILE, VERIFICATION, Dump
from pgstack_backup.settings import Settings


class VerificationFailed(RuntimeError):
    """The dump is not restorable."""


class VerificationIncomplete(RuntimeError):
    """The verification could not be carried out (environment); the dump stays unverified."""


def check(dump: Dump, settings: Settings, *, test_restore: bool) -> dict[str, Any]:
    """Raise VerificationFailed / VerificationIncomplete; return the report when all is well."""
    started = time.monotonic()
    problems = dump.checksum_problems()
    if problems:
        raise VerificationFailed("checksum: " + "; ".join(problems))
    manifest = dump.manifest or {}
    try:
        toc = restore.table_of_contents(dump)
    except restore.RestoreRefused as exc:
        raise VerificationFailed(str(exc)) from exc
    data = {" ".join(line.split()[-3:-1]) for line in toc if " TABLE DATA " in line}
    missing = [t for t in manifest["tables"] if " ".join(t.split(".", 1)) not in data]
    if missing:
        raise VerificationFailed(f"table of contents lacks data for {missing}")
    report: dict[str, Any] = {"checksum": "ok", "toc_entries": len(toc)}
    if test_restore:
        report["restore"] = _test_restore(dump, settings)
    report["duration_s"] = round(time.monotonic() - started, 3)
    return report


def _test_restore(dump: Dump, settings: Settings) -> dict[str, Any]:
    started = time.monotonic()
    try:
        with scratch.instance(settings, f"verify-{dump.name}") as server:
            _create_roles(dump, settings, server.socket_dir)
            report = restore.restore_into(settings, dump, settings.database, host=server.socket_dir)
    except restore.RestoreFailed as exc:
        raise VerificationFailed(f"test restore failed: {exc}") from exc
    except scratch.ScratchUnavailable as exc:
        raise VerificationIncomplete(str(exc)) from exc
    except (tools.ToolFailed, OSError) as exc:
        if isinstance(exc, OSError) or exc.environmental:
            raise VerificationIncomplete(f"test restore could not finish: {exc}") from exc
        raise VerificationFailed(f"test restore failed: {exc}") from exc
    return {**report, "duration_s": round(time.monotonic() - started, 3)}


def _create_roles(dump: Dump, settings: Settings, host: str) -> None:
    """The dump's roles (globals.sql; "already exists" for postgres is expected), then a check
    that the roles the restore runs as are there."""
    subprocess.run(["psql", "--no-psqlrc", "--quiet", f"--file={dump.path / GLOBALS_FILE}",
                    f"--dbname={settings.conninfo('postgres', host=host)}"],
                   capture_output=True, text=True, check=False)  # fmt: skip
    needed = {settings.owner_role, settings.app_role, settings.dump_role}
    out = subprocess.run(["psql", "--no-psqlrc", "--tuples-only", "--no-align",
                          "--command=SELECT rolname FROM pg_roles",
                          f"--dbname={settings.conninfo('postgres', host=host)}"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    absent = needed - set(out.split())
    if absent:
        raise VerificationFailed(f"globals.sql does not create the roles {sorted(absent)}")


def verify(dump: Dump, settings: Settings, *, test_restore: bool) -> dict[str, Any]:
    """check() and record the outcome in the dump's verification.json (when it can be written)."""
    try:
        report = check(dump, settings, test_restore=test_restore)
    except VerificationFailed as exc:
        _record(dump, {"status": "failed", "verified_at": log.iso(log.now()), "error": str(exc)})
        raise
    except VerificationIncomplete as exc:
        _record(dump, {"status": "unverified", "attempted_at": log.iso(log.now()),
                       "error": str(exc)})  # fmt: skip
        raise
    status = "ok" if test_restore else "unverified"
    record = {"status": status, "verified_at": log.iso(log.now()), **report}
    _record(dump, record)
    return record


def _record(dump: Dump, record: dict[str, Any]) -> None:
    try:
        files.write_json_atomic(dump.path / VERIFICATION, record)
    except OSError as exc:  # a full volume must not hide the verification's own outcome
        log.event("verification_not_recorded", backup=dump.name, error=str(exc))
