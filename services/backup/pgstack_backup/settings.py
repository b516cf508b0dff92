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
    verify_restore: bool
    on_start: bool
    compression: str
    progress_interval_s: int
    webhook_url: str
    offsite_dir: Path | None
    offsite_age_recipient: str
    pitr: bool
    base_keep: int
    wal_dir: Path
    db_host: str
    db_port: int
    database: str
    db_user: str
    admin_user: str

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
        return cls(
            backup_dir=Path(env.get("BACKUP_DIR", "").strip() or "/var/lib/pgstack-backup"),
            schedule=schedule,
            tz=tz,
            keep_daily=_int(env, "BACKUP_KEEP_DAILY", 7),
            keep_weekly=_int(env, "BACKUP_KEEP_WEEKLY", 4),
            keep_monthly=_int(env, "BACKUP_KEEP_MONTHLY", 6),
            verify_restore=_bool(env, "BACKUP_VERIFY_RESTORE", True),
            on_start=_bool(env, "BACKUP_ON_START", False),
            compression=compression,
            progress_interval_s=_int(env, "BACKUP_PROGRESS_INTERVAL", 10, minimum=1),
            webhook_url=webhook,
            offsite_dir=Path(offsite) if offsite else None,
            offsite_age_recipient=recipient,
            pitr=_bool(env, "BACKUP_PITR", True),
            base_keep=_int(env, "BACKUP_BASE_KEEP", 7, minimum=1),
            wal_dir=Path(env.get("BACKUP_WAL_DIR", "").strip() or "/var/lib/pgstack-wal"),
            db_host=env.get("PGHOST", "").strip() or "postgres",
            db_port=_int(env, "PGPORT", 5432, minimum=1),
            database=database,
            db_user=env.get("BACKUP_DB_USER", "").strip() or "app_backup",
            admin_user=env.get("BACKUP_ADMIN_USER", "").strip() or "app_owner",
        )

    def conninfo(self, *, dbname: str | None = None, admin: bool = False) -> str:
        """A libpq connection string; the password comes from PGPASSFILE (never in here)."""
        user = self.admin_user if admin else self.db_user
        return (
            f"host={self.db_host} port={self.db_port} dbname={dbname or self.database} "
            f"user={user} application_name=pgstack-backup connect_timeout=10"
        )
