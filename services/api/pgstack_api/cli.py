"""pgstack-db: the management CLI (the original guide's db:* scripts). Wiring only: parse
arguments, load settings, call pgstack_api.migrations / seed / diagnostics, print, exit with a
named code."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import traceback
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

from pgstack_api import diagnostics, migrations, seed
from pgstack_api.retry import DatabaseUnavailable
from pgstack_api.settings import ConfigError, Settings, load_settings


class Exit(IntEnum):
    OK = 0
    FAILURE = 1  # the command ran and failed (check found a problem, migration error, ...)
    CONFIG = 2  # bad usage or settings (argparse also exits 2)
    UNREACHABLE = 3  # the database did not answer within the bounds
    REFUSED = 4  # a destructive command without --yes
    PENDING = 5  # status: migrations are pending (the schema is behind the code)


DEV_DATABASE_URL = "sqlite+aiosqlite:///./var/dev.db"


def _print(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, default=str, separators=(",", ":")), flush=True)
    else:
        print(json.dumps(data, default=str, indent=2), flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgstack-db",
        description="Manage pgstack's database. Settings come from PGSTACK_* variables.",
        epilog="exit codes: " + ", ".join(f"{c.value} {c.name.lower()}" for c in Exit),
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print the traceback of an unexpected failure"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("wait", help="wait until the database answers (admin URL)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    p = sub.add_parser("deploy", help="wait, then alembic upgrade head under an advisory lock")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the DB")
    p.add_argument(
        "--lock-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for a concurrent deploy (default 300)",
    )
    p = sub.add_parser("status", help="current vs head revision; exit 5 if migrations pending")
    p.add_argument("--json", action="store_true", help="one JSON line")
    sub.add_parser("seed", help="insert demo users and products (idempotent)")
    p = sub.add_parser("check", help="connectivity (PgBouncer and direct), pools, table sizes")
    p.add_argument("--json", action="store_true", help="one JSON line instead of a table")
    p = sub.add_parser("reset", help="DESTROYS DATA: downgrade to base and upgrade to head")
    p.add_argument("--yes", action="store_true", help="confirm that all data may be lost")
    p.add_argument("--lock-timeout", type=float, default=300.0)
    p = sub.add_parser("dev", help="SQLite dev server: migrate, seed, uvicorn --reload")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-reload", action="store_true")
    return parser


async def _run(args: argparse.Namespace, settings: Settings) -> Exit:
    cmd = args.command
    if cmd == "wait":
        await migrations.wait(settings, args.timeout)
    elif cmd == "deploy":
        await migrations.wait(settings, args.timeout)
        _print(await migrations.deploy(settings, args.lock_timeout), as_json=True)
    elif cmd == "status":
        report = await migrations.status(settings)
        _print(report, args.json)
        return Exit.OK if report["at_head"] else Exit.PENDING
    elif cmd == "seed":
        _print(await seed.run_seed(settings), as_json=True)
    elif cmd == "check":
        report = await diagnostics.check(settings)
        if args.json:
            _print(report, as_json=True)
        else:
            print(diagnostics.render(report), flush=True)
        return Exit.OK if report["ok"] else Exit.FAILURE
    elif cmd == "reset":
        _print(await migrations.reset(settings, args.lock_timeout), as_json=True)
    return Exit.OK


def _dev(args: argparse.Namespace) -> Exit:
    """`make dev`: the same code and migrations on SQLite, seeded, with reload."""
    os.environ.setdefault("PGSTACK_ENV", "dev")
    os.environ.setdefault("PGSTACK_DATABASE_URL", DEV_DATABASE_URL)
    os.environ.setdefault("PGSTACK_LOG_FORMAT", "auto")
    settings = load_settings()
    if not settings.is_dev:
        raise ConfigError("pgstack-db dev needs PGSTACK_ENV=dev (unset it to get the default)")
    asyncio.run(migrations.deploy(settings, lock_timeout=10))
    asyncio.run(seed.run_seed(settings))
    import uvicorn  # only the dev command needs it here

    from pgstack_api import app as app_module

    uvicorn.run(
        "pgstack_api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        reload=not args.no_reload,
        access_log=False,
        server_header=False,
        reload_dirs=[os.path.dirname(os.path.abspath(app_module.__file__))],
    )
    return Exit.OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "dev":
            return _dev(args)
        if args.command == "reset" and not args.yes:
            print(
                "pgstack-db: reset drops every table and its data; "
                "run again with --yes (make db-reset CONFIRM=1) to proceed",
                file=sys.stderr,
            )
            return Exit.REFUSED
        settings = load_settings()
        return asyncio.run(_run(args, settings))
    except ConfigError as exc:
        print(f"pgstack-db: {exc}", file=sys.stderr)
        return Exit.CONFIG
    except DatabaseUnavailable as exc:
        print(f"pgstack-db: database unreachable: {exc}", file=sys.stderr)
        return Exit.UNREACHABLE
    except migrations.LockTimeout as exc:
        print(f"pgstack-db: {exc}", file=sys.stderr)
        return Exit.FAILURE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.verbose:
            traceback.print_exc()
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        print(
            f"pgstack-db: {args.command} failed: {type(exc).__name__}: "
            f"{detail[0] if detail else ''} (rerun with -v for the traceback)",
            file=sys.stderr,
        )
        return Exit.FAILURE


if __name__ == "__main__":
    sys.exit(main())
