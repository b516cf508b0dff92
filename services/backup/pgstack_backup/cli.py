"""pgstack-backup: the CLI. Wiring only; the work is in the modules it calls."""

from __future__ import annotations

import argparse
import enum
import os
import sys
from collections.abc import Sequence

from pgstack_backup import (
    archive,
    db,
    dumps,
    lock,
    log,
    pgbackrest,
    pitr,
    restore,
    runner,
    state,
    verify,
)
from pgstack_backup.schedule import serve
from pgstack_backup.settings import Settings, SettingsError

# The cluster's owner: pgBackRest reads and restores its files (uid 999 in both images).
SERVICE_USER = "postgres"


class Exit(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    REFUSED = 3  # bad checksum, a target outside the window, no confirmation: nothing changed
    VERSION_MISMATCH = 4
    UNHEALTHY = 5
    BUSY = 75  # EX_TEMPFAIL: another run holds the lock


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgstack-backup", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run backups on BACKUP_SCHEDULE (the service's command)")
    run = sub.add_parser(
        "run", help="back up now: physical + dump, verify, retention (make backup)"
    )
    run.add_argument("--label", default="manual", help="suffix of the backup's name")
    run.add_argument(
        "--no-retention",
        action="store_true",
        help="delete nothing (after a restore: every older backup stays)",
    )
    safety = sub.add_parser(
        "safety", help="a protected safety dump before a restore (no retention)"
    )
    safety.add_argument("--label", choices=sorted(dumps.SAFETY_LABELS), required=True)
    sub.add_parser(
        "list", help="both kinds of backup and the recoverable window (make backup-list)"
    )
    check = sub.add_parser("verify", help="checksums, contents and test restore of a dump")
    check.add_argument("backup", nargs="?", default="latest")
    check.add_argument("--no-restore", action="store_true", help="skip the test restore")
    rest = sub.add_parser("restore", help="restore a dump over the live database (make restore)")
    rest.add_argument("backup", nargs="?", default="latest")
    rest.add_argument("--yes", action="store_true", help="confirm: the live data is replaced")
    sub.add_parser("reopen", help="let the API's role connect again after a restore")
    steps = {"pitr-check": "refuse a target outside the recoverable window",
             "pitr-restore": "(postgres stopped) set the cluster aside, restore"}  # fmt: skip
    for name, what in steps.items():
        step = sub.add_parser(name, help=what)
        step.add_argument("--target-time", required=True)
        if name == "pitr-check":
            step.add_argument("--no-refuse", action="store_true",
                              help="FORCE=1: report the window, refuse nothing")  # fmt: skip
    sub.add_parser("pitr-rollback", help="(postgres stopped) put the set-aside cluster back")
    sub.add_parser("pitr-finish", help="delete the set-aside cluster after a recovery")
    sub.add_parser(
        "stanza-upgrade", help="start a new archive history for a re-initialised cluster"
    )
    sub.add_parser("check-archive", help="check WAL archiving now (the service does every 5 min)")
    sub.add_parser("health", help="exit 0 when backups are recent and recovery is possible")
    return parser


def _drop_root(argv: Sequence[str]) -> None:
    """`docker compose exec` runs as root: become the service user, as the entrypoint does."""
    if os.geteuid() == 0:
        os.execvp("setpriv", ["setpriv", f"--reuid={SERVICE_USER}", f"--regid={SERVICE_USER}",
                              "--init-groups", "--inh-caps=-all", "--",
                              sys.executable, "-m", "pgstack_backup", *argv])  # fmt: skip


def _list(settings: Settings) -> Exit:
    """Dumps (checksums re-read, so damage shows here), physical backups, the window."""
    print("logical backups (pg_dump; make restore BACKUP=<name>):")
    for dump in dumps.Store(settings.backup_dir).all():
        manifest = dump.manifest or {}
        record = dump.verification or {}
        problems = dump.checksum_problems()
        if problems:
            status = "DAMAGED: " + "; ".join(problems)
        elif dump.status == "ok":
            status = f"verified {record.get('verified_at')}"
        elif dump.status == "failed":
            status = "FAILED verification: " + str(record.get("error", ""))[:100]
        else:
            status = "unverified" + (
                f" ({str(record['error'])[:100]})" if record.get("error") else ""
            )
        protected = dump.protected_until(settings.safety_keep_days)
        if protected and protected > log.now():
            status += f"; safety copy kept until {log.iso(protected)}"
        rows = sum(manifest.get("tables", {}).values())
        print(f"  {dump.name:34} {manifest.get('size', 0) / 1e6:10.2f} MB  "
              f"rev {manifest.get('alembic_revision')!s:8} rows {rows:>10}  {status}")  # fmt: skip
    if not settings.pitr:
        return Exit.OK
    stanza = pgbackrest.info(settings)
    print("physical backups (pgBackRest; make restore TARGET_TIME=<time>):")
    for backup in pgbackrest.backups(stanza, current_only=False):
        label = backup.annotation.get("pgstack-label", "")
        print(f"  repo{backup.repo} {backup.label:34} {backup.type:5} {backup.size / 1e6:10.2f} MB "
              f"(+{backup.repo_size / 1e6:.2f} MB stored)  finished {log.iso(backup.stopped)}"
              f"  {label}{'  ERROR' if backup.error else ''}")  # fmt: skip
    spans = pgbackrest.recoverable(settings, stanza, log.now()) if stanza else []
    print(f"point-in-time recovery: any time {pgbackrest.describe(spans, settings.tz)}")
    print("  (it ends now while WAL archiving works; the backup service's health says if not)")
    return Exit.OK


def _health(settings: Settings) -> Exit:
    store = dumps.Store(settings.backup_dir)
    interval = state.schedule_interval(settings.schedule, settings.tz, log.now())
    healthy, why = state.health(state.load(store.state_path), interval, log.now())
    print(why)
    return Exit.OK if healthy else Exit.UNHEALTHY


def _verify(settings: Settings, name: str, test_restore: bool) -> Exit:
    dump = dumps.Store(settings.backup_dir).resolve(name)
    with lock.locked(settings.backup_dir):
        try:
            report = verify.verify(dump, settings, test_restore=test_restore)
        except (verify.VerificationFailed, verify.VerificationIncomplete) as exc:
            log.event("verify", status=dump.status, backup=dump.name, error=str(exc))
            return Exit.FAILED
    log.event("verify", backup=dump.name, **report)
    return Exit.OK


def _safety(settings: Settings, label: str) -> Exit:
    """A dump before a restore replaces data: checksummed and listed, never retained away."""
    store = dumps.Store(settings.backup_dir)
    with lock.locked(settings.backup_dir):
        dump = dumps.take(settings, store, label)
        report = verify.verify(dump, settings, test_restore=False)
    until = dump.protected_until(settings.safety_keep_days)
    log.event("safety_backup", backup=dump.name, kept_until=log.iso(until) if until else None,
              **report)  # fmt: skip
    return Exit.OK


def _dispatch(args: argparse.Namespace, settings: Settings) -> Exit:
    command = args.command
    if command == "serve":
        return Exit(serve(settings))
    if command == "run":
        runner.run(settings, label=args.label, retention=not args.no_retention)
        return Exit.OK
    if command == "safety":
        return _safety(settings, args.label)
    if command == "list":
        return _list(settings)
    if command == "verify":
        return _verify(settings, args.backup, not args.no_restore)
    if command == "restore":
        if not args.yes:
            print("error: restore replaces the live database; pass --yes "
                  "(make restore CONFIRM=1)", file=sys.stderr)  # fmt: skip
            return Exit.REFUSED
        restore.restore_live(settings, args.backup)
        return Exit.OK
    if command == "reopen":
        restore.reopen(settings)
        return Exit.OK
    if command == "pitr-check":
        target = pitr.parse_target(args.target_time, settings.tz)
        log.event("pitr_check", **pitr.check(settings, target, refuse=not args.no_refuse))
        return Exit.OK
    if command == "pitr-restore":
        pitr.restore(settings, pitr.parse_target(args.target_time, settings.tz))
        return Exit.OK
    if command == "pitr-rollback":
        pitr.rollback(settings)
        return Exit.OK
    if command == "pitr-finish":
        pitr.finish(settings)
        return Exit.OK
    if command == "check-archive":
        found = archive.check_and_record(settings, dumps.Store(settings.backup_dir).state_path)
        print(found or "WAL archiving works; no WAL is missing since the newest backup")
        return Exit.UNHEALTHY if found else Exit.OK
    if command == "stanza-upgrade":
        pgbackrest.command(settings, "stanza-upgrade", label="stanza_upgrade")
        log.event("stanza_upgrade", status="ok", stanza=pgbackrest.STANZA)
        archive.check_and_record(settings, dumps.Store(settings.backup_dir).state_path)
        return Exit.OK
    return _health(settings)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command != "health":
        _drop_root(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return Exit.USAGE
    try:
        return _dispatch(args, settings)
    except lock.Busy as exc:
        log.event("busy", error=str(exc))
        return Exit.BUSY
    except runner.RunFailed:  # its summary line says what failed
        return Exit.FAILED
    except db.VersionMismatch as exc:
        log.event("version_mismatch", error=str(exc))
        return Exit.VERSION_MISMATCH
    except (restore.RestoreRefused, pitr.TargetRefused, LookupError) as exc:
        log.event("refused", error=str(exc))
        return Exit.REFUSED
    except Exception as exc:  # one JSON line and a non-zero exit, no traceback
        log.event("error", command=args.command, error=f"{type(exc).__name__}: {exc}")
        return Exit.FAILED
