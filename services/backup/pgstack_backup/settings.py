"""Settings, read once from the environment and validated loudly (the error names key and value)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter


class SettingsError(ValueError):
    """A setting is missing or malformed."""


def _int(env: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    raw = env.get(key, "").strip() or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r}: expected an integer") from None
    if value < minimum:
        raise SettingsError(f"{key}={raw!r}: must be >= {minimum}")
    return value


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{key}={raw!r}: expected true or false")


@dataclass(frozen=True, slots=True)
class Settings:
    backup_dir: Path
    schedule: str
    tz: ZoneInfo
    keep_daily: int
    keep_weekly: int
    keep_monthly: int
    safety_keep_days: int
    verify_restore: bool
    on_start: bool
    compression: str
    progress_interval_s: int
    webhook_url: str
    offsite_dir: Path | None
    offsite_age_recipient: str
    pitr: bool
    full_every_days: int
    repo_verify_every_days: int
    scratch_dir: Path
    pgdata: Path
    socket_dir: str
    database: str

    # Roles (services/postgres/initdb/roles.sql). The service connects as the superuser over the
    # shared socket and does each job as the role made for it (SET ROLE / pg_restore --role).
    superuser = "postgres"
    dump_role = "app_backup"
    owner_role = "app_owner"
    app_role = "app"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        schedule = env.get("BACKUP_SCHEDULE", "").strip() or "0 3 * * *"
        if not croniter.is_valid(schedule):
            raise SettingsError(f"BACKUP_SCHEDULE={schedule!r}: not a cron expression")
        tz_name = env.get("BACKUP_TZ", "").strip() or "UTC"
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(f"BACKUP_TZ={tz_name!r}: unknown time zone") from None
        compression = env.get("BACKUP_COMPRESSION", "").strip() or "zstd:3"
        if not re.fullmatch(r"(zstd|gzip|lz4|none)(:\d{1,2})?", compression):
            raise SettingsError(f"BACKUP_COMPRESSION={compression!r}: expected e.g. zstd:3")
        webhook = env.get("BACKUP_WEBHOOK_URL", "").strip()
        if webhook and not webhook.startswith(("http://", "https://")):
            raise SettingsError("BACKUP_WEBHOOK_URL: expected an http(s) URL")
        offsite = env.get("BACKUP_OFFSITE_DIR", "").strip()
        recipient = env.get("BACKUP_OFFSITE_AGE_RECIPIENT", "").strip()
        if recipient and not recipient.startswith("age1"):
            raise SettingsError(
                f"BACKUP_OFFSITE_AGE_RECIPIENT={recipient!r}: not an age public key"
            )
        database = env.get("PGDATABASE", "").strip() or "pgstack"
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", database):
            raise SettingsError(f"PGDATABASE={database!r}: expected a plain lower-case name")
        backup_dir = Path(env.get("BACKUP_DIR", "").strip() or "/var/lib/pgstack-backup")
        return cls(
            backup_dir=backup_dir,
            schedule=schedule,
            tz=tz,
            keep_daily=_int(env, "BACKUP_KEEP_DAILY", 7),
            keep_weekly=_int(env, "BACKUP_KEEP_WEEKLY", 4),
            keep_monthly=_int(env, "BACKUP_KEEP_MONTHLY", 6),
            safety_keep_days=_int(env, "BACKUP_SAFETY_KEEP_DAYS", 14, minimum=1),
            verify_restore=_bool(env, "BACKUP_VERIFY_RESTORE", True),
            on_start=_bool(env, "BACKUP_ON_START", False),
            compression=compression,
            progress_interval_s=_int(env, "BACKUP_PROGRESS_INTERVAL", 10, minimum=1),
            webhook_url=webhook,
            offsite_dir=Path(offsite) if offsite else None,
            offsite_age_recipient=recipient,
            pitr=_bool(env, "BACKUP_PITR", True),
            full_every_days=_int(env, "BACKUP_FULL_EVERY_DAYS", 7, minimum=1),
            repo_verify_every_days=_int(env, "BACKUP_REPO_VERIFY_EVERY_DAYS", 7, minimum=1),
            scratch_dir=Path(env.get("BACKUP_SCRATCH_DIR", "").strip() or backup_dir / "scratch"),
            pgdata=Path(env.get("PGDATA", "").strip() or "/var/lib/postgresql/data/pgdata"),
            socket_dir=env.get("PGHOST", "").strip() or "/var/run/postgresql",
            database=database,
        )

    def conninfo(self, dbname: str | None = None, *, host: str | None = None) -> str:
        """A libpq connection string to the superuser over a socket (peer authentication:
        no password exists anywhere in this service). PGHOST may list several socket
        directories (the cluster's nodes, docker-compose.ha.yml): libpq then tries each and
        keeps the primary, so dumps, checks and restores follow the leader across a failover."""
        hosts = host or self.socket_dir
        primary = " target_session_attrs=primary" if "," in hosts else ""
        return (
            f"host={hosts} port=5432 dbname={dbname or self.database} "
            f"user={self.superuser} application_name=pgstack-backup connect_timeout=10{primary}"
        )
