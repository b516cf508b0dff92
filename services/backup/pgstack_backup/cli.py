"""pgstack-backup: the CLI. Wiring only; the work is in the modules it calls."""

from __future__ import annotations

import argparse
import enum
import os
import sys
from collections.abc import Sequence

from pgstack_backup import basebackup, db, log, pitr, restore, runner, state, verify
from pgstack_backup.schedule import serve
from pgstack_backup.settings import Settings, SettingsError
from pgstack_backup.store import Store

SERVICE_USER = "pgbackup"


class Exit(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    REFUSED = 3  # bad checksum, missing confirmation: nothing changed
    VERSION_MISMATCH = 4
    UNHEALTHY = 5
    BUSY = 75  # EX_TEMPFAIL: another run holds the lock


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgstack-backup", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run backups on BACKUP_SCHEDULE (the service's command)")
    run = sub.add_parser("run", help="take, verify and retain a backup now (make backup)")
    run.add_argument("--label", default="manual", help="suffix of the backup's name")
    sub.add_parser(
        "list", help="backups with time, size, verification, revision (make backup-list)"
    )
    check = sub.add_parser(
        "verify", help="checksum, contents and test restore (make verify-backup)"
    )
    check.add_argument("backup", nargs="?", default="latest")
    check.add_argument("--no-restore", action="store_true", help="skip the test restore")
    rest = sub.add_parser("restore", help="restore a backup over the live database (make restore)")
    rest.add_argument("backup", nargs="?", default="latest")
    rest.add_argument("--yes", action="store_true", help="confirm: the live data is replaced")
    sub.add_parser("reopen", help="let the API's role connect again after a restore")
    pitr = sub.add_parser("pitr-prepare", help="(root, postgres stopped) unpack a base backup "
                          "and configure recovery to TARGET_TIME; see pitr-restore.sh")  # fmt: skip
    pitr.add_argument("--target-time", required=True)
    sub.add_parser("base-list", help="base backups for point-in-time recovery")
    sub.add_parser("health", help="exit 0 when the last verified backup is recent enough")
    return parser


def _drop_root(argv: Sequence[str]) -> None:
    """`docker compose exec` runs as root: become the service user, as the entrypoint does."""
    if os.geteuid() == 0:
        os.execvp("setpriv", ["setpriv", f"--reuid={SERVICE_USER}", f"--regid={SERVICE_USER}",
                              "--init-groups", "--inh-caps=-all", "--",
                              sys.executable, "-m", "pgstack_backup", *argv])  # fmt: skip


def _list(settings: Settings) -> Exit:
    """One line per backup, oldest first; checksums are re-read, so damage shows here."""
    for backup in Store(settings.backup_dir).backups():
        manifest = backup.manifest or {}
        record = backup.verification or {}
        problems = backup.checksum_problems()
        if problems:
            status = "DAMAGED: " + "; ".join(problems)
        elif record.get("ok"):
            status = f"verified {record['verified_at']}"
        else:
            status = (
                "FAILED verification: " + str(record.get("error", ""))[:100]
                if record
                else "not verified"
            )
        rows = sum(manifest.get("tables", {}).values())
        print(f"{backup.name:34} {manifest.get('size', 0) / 1e6:10.2f} MB  "
              f"rev {manifest.get('alembic_revision')!s:8} rows {rows:>10}  {status}")  # fmt: skip
    return Exit.OK


def _health(settings: Settings) -> Exit:
    store = Store(settings.backup_dir)
    interval = state.schedule_interval(settings.schedule, settings.tz, log.now())
    healthy, why = state.health(state.load(store.state_path), interval, log.now())
    print(why)
    return Exit.OK if healthy else Exit.UNHEALTHY


def _verify(settings: Settings, name: str, test_restore: bool) -> Exit:
    store = Store(settings.backup_dir)
    backup = store.resolve(name)
    with runner.locked(store):
        try:
            report = verify.verify(backup, settings, test_restore=test_restore)
        except verify.VerificationFailed as exc:
            log.event("verify", status="failed", backup=backup.name, error=str(exc))
            return Exit.FAILED
    log.event("verify", status="ok", backup=backup.name, **report)
    return Exit.OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command not in {"health", "pitr-prepare"}:
        _drop_root(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Exit.USAGE
    try:
        if args.command == "serve":
            return serve(settings)
        if args.command == "run":
            runner.run(settings, label=args.label)
            return Exit.OK
        if args.command == "list":
            return _list(settings)
        if args.command == "verify":
            return _verify(settings, args.backup, not args.no_restore)
        if args.command == "restore":
            if not args.yes:
                print("error: restore replaces the live database; pass --yes "
                      "(make restore CONFIRM=1)", file=sys.stderr)  # fmt: skip
                return Exit.REFUSED
            restore.restore(settings, args.backup)
            return Exit.OK
        if args.command == "pitr-prepare":
            pitr.prepare(settings, pitr.parse_target(args.target_time, settings.tz))
            return Exit.OK
        if args.command == "base-list":
            for base in basebackup.BaseStore(settings.wal_dir).backups():
                manifest = base.manifest or {}
                print(
                    f"{base.name:34} {manifest.get('size', 0) / 1e6:10.2f} MB  "
                    f"finished {manifest.get('finished_at')}  from WAL {manifest.get('start_wal')}"
                )
            return Exit.OK
        if args.command == "reopen":
            restore.reopen(settings)
            return Exit.OK
        return _health(settings)
    except runner.Busy as exc:
        log.event("busy", error=str(exc))
        return Exit.BUSY
    except db.VersionMismatch as exc:
        log.event("version_mismatch", error=str(exc))
        return Exit.VERSION_MISMATCH
    except (restore.RestoreRefused, LookupError) as exc:
        log.event("refused", error=str(exc))
        return Exit.REFUSED
    except Exception as exc:  # one JSON line and a non-zero exit, no traceback
        log.event("error", command=args.command, error=f"{type(exc).__name__}: {exc}")
        return Exit.FAILED
