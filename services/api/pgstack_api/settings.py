"""Settings, read once from the environment and from `*_FILE` secret files, validated loudly.

Every key is `PGSTACK_<NAME>`; every secret may instead come from the file named by
`PGSTACK_<NAME>_FILE` (compose secrets). Errors name the key, show the bad value (never a
secret's) and say how to fix it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

ENV_PREFIX = "PGSTACK_"

# Secrets that may be given as `PGSTACK_<NAME>_FILE`.
SECRET_FIELDS = (
    "database_password",
    "admin_database_password",
    "pgbouncer_admin_password",
    "ops_token",
)

# Values people leave in .env files by mistake; refused outside dev like an empty secret.
PLACEHOLDERS = frozenset(
    {
        "",
        "changeme",
        "changethis",
        "change-me",
        "change_me",
        "password",
        "secret",
        "example",
        "xxx",
        "todo",
        "admin",
        "postgres",
    }
)

# How to fix each key, appended to its error message.
_HINTS: dict[str, str] = {
    "env": "use 'production' or 'dev'",
    "database_url": (
        "use e.g. postgresql+psycopg://app@/pgstack?host=/run/pgbouncer&port=6432 "
        "or, with PGSTACK_ENV=dev, sqlite+aiosqlite:///./var/dev.db"
    ),
    "admin_database_url": "use e.g. postgresql+psycopg://app_owner@postgres:5432/pgstack",
    "pgbouncer_admin_url": "use e.g. postgresql://pgbouncer_stats@pgbouncer:6432/pgbouncer",
    "connect_timeout": "give seconds as an integer >= 2 (libpq's minimum)",
    "statement_timeout_ms": "give milliseconds as an integer >= 1",
    "readiness_cache_s": "give seconds as a number >= 0",
    "readiness_timeout_s": "give seconds as a number > 0",
    "max_body_bytes": "give a byte count >= 1024",
    "retry_after_s": "give whole seconds >= 1",
    "log_format": "use json, pretty or auto",
    "application_name": "use 1-63 printable ASCII characters",
    "db_pool_size": "use 0 (NullPool through PgBouncer) or a pool size up to 100 (benchmarks)",
    "idempotency_ttl_s": "give seconds from 60 to 2592000 (30 days)",
}


class ConfigError(Exception):
    """A setting is missing or wrong; the message says which and how to fix it."""


def _env_key(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


class _SecretFileSource(PydanticBaseSettingsSource):
    """Reads `PGSTACK_<NAME>_FILE` for each secret; the docker-library `file_env` convention."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ does the work

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in SECRET_FIELDS:
            file_key = f"{_env_key(name)}_FILE"
            path = os.environ.get(file_key)
            if not path:
                continue
            if os.environ.get(_env_key(name)):
                raise ConfigError(
                    f"{_env_key(name)} and {file_key} are both set: keep only one "
                    f"(the file is preferred for secrets)"
                )
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"{file_key}={path!r}: cannot read the file ({exc.strerror}); check that the "
                    f"secret is mounted and readable by uid {os.getuid()}"
                ) from exc
            # Secret files usually end with a newline that is not part of the secret.
            values[name] = text.rstrip("\r\n")
        return values


class Settings(BaseSettings):
    """The API's and CLI's whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, validate_default=True
    )

    env: Literal["production", "dev"] = "production"
    database_url: str = Field(min_length=1)
    database_password: SecretStr | None = None
    admin_database_url: str | None = None
    admin_database_password: SecretStr | None = None
    pgbouncer_admin_url: str | None = None
    pgbouncer_admin_password: SecretStr | None = None
    ops_token: SecretStr | None = None

    # libpq rounds connect_timeout to whole seconds and treats anything below 2 as 2.
    connect_timeout: int = Field(default=3, ge=2, le=60)
    statement_timeout_ms: int = Field(default=5000, ge=1, le=600_000)
    readiness_cache_s: float = Field(default=1.0, ge=0, le=60)
    readiness_timeout_s: float = Field(default=2.0, gt=0, le=60)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    retry_after_s: int = Field(default=5, ge=1, le=3600)
    log_format: Literal["json", "pretty", "auto"] = "auto"
    application_name: str = Field(default="pgstack-api", pattern=r"^[\x20-\x7e]{1,63}$")
    # 0 (the default): NullPool, PgBouncer is the pool. > 0: an in-process pool of that size,
    # for the benchmark's "pooled, straight to PostgreSQL" baseline only -- in the stack it would
    # multiply server connections by the number of API processes behind PgBouncer's back.
    db_pool_size: int = Field(default=0, ge=0, le=100)
    # How long an Idempotency-Key's first response is kept and replayed (idempotency.py).
    idempotency_ttl_s: int = Field(default=86_400, ge=60, le=30 * 86_400)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No .env file: the environment (compose, the Makefile) is the single source.
        return (init_settings, env_settings, _SecretFileSource(settings_cls))

    @field_validator("database_url", "admin_database_url", "pgbouncer_admin_url")
    @classmethod
    def _normalise_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return normalise_url(value)

    @model_validator(mode="after")
    def _production_rules(self) -> Settings:
        if self.env != "production":
            return self
        if self.database_url.startswith("sqlite"):
            raise ValueError(
                f"{_env_key('database_url')}={self.database_url!r}: SQLite is for development "
                f"only; set {_env_key('env')}=dev or point it at PostgreSQL"
            )
        for name in SECRET_FIELDS:
            secret: SecretStr | None = getattr(self, name)
            if secret is not None and secret.get_secret_value().strip().lower() in PLACEHOLDERS:
                raise ValueError(
                    f"{_env_key(name)}: empty or placeholder secret refused in production; "
                    f"generate one (e.g. `openssl rand -hex 32`) into the file named by "
                    f"{_env_key(name)}_FILE"
                )
        return self

    @property
    def is_dev(self) -> bool:
        return self.env == "dev"

    def api_url(self) -> URL:
        """The API's path (through PgBouncer in the stack), with the password file applied."""
        return _with_password(self.database_url, self.database_password)

    def admin_url(self) -> URL:
        """The owner's direct path, for migrations and the CLI; dev falls back to the API's."""
        if self.admin_database_url is None:
            if self.is_dev:
                return self.api_url()
            raise ConfigError(
                f"{_env_key('admin_database_url')} is not set: migrations and pgstack-db need the "
                f"owner's direct URL, e.g. postgresql+psycopg://app_owner@postgres:5432/pgstack "
                f"with {_env_key('admin_database_password')}_FILE"
            )
        return _with_password(self.admin_database_url, self.admin_database_password)

    def pgbouncer_url(self) -> URL | None:
        if self.pgbouncer_admin_url is None:
            return None
        return _with_password(self.pgbouncer_admin_url, self.pgbouncer_admin_password)


def normalise_url(value: str) -> str:
    """One place that turns the DSN spellings people use into the drivers we ship."""
    try:
        url = make_url(value)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL ({exc})") from exc
    backend, _, driver = url.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("psycopg", ""):
            raise ValueError(f"driver {url.drivername!r} is not shipped; use postgresql+psycopg")
        url = url.set(drivername="postgresql+psycopg")
    elif backend == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    else:
        raise ValueError(f"unsupported database {backend!r}; use postgresql+psycopg or sqlite")
    return url.render_as_string(hide_password=False)


def _with_password(url: str, password: SecretStr | None) -> URL:
    parsed = make_url(url)
    if password is not None:
        parsed = parsed.set(password=password.get_secret_value())
    return parsed


def _describe(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if not loc:  # model-level rule; the message already names the key
        return message
    field = loc[0]
    key = _env_key(field)
    if field in SECRET_FIELDS:
        shown = "<hidden>"
    elif error.get("type") == "missing":
        return f"{key} is required but not set; {_HINTS.get(field, 'set it')}"
    else:
        shown = repr(error.get("input"))
    hint = _HINTS.get(field)
    return f"{key}={shown}: {message}" + (f"; {hint}" if hint else "")


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise ConfigError with one line per problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [_describe(dict(err)) for err in exc.errors(include_url=False)]
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines)) from None
