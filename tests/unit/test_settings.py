"""Settings are validated loudly: errors name the key and the bad value and say how to fix it;
secrets never print; production refuses placeholders and SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from pgstack_api.settings import ConfigError, load_settings

PG_URL = "postgresql+psycopg://app@/pgstack?host=/run/pgbouncer&port=6432"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test sets: the host's PGSTACK_* must not leak in."""
    import os

    for key in list(os.environ):
        if key.startswith("PGSTACK_"):
            monkeypatch.delenv(key)


def test_defaults_match_the_documented_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSTACK_DATABASE_URL", PG_URL)
    s = load_settings()
    assert s.env == "production"
    assert (s.connect_timeout, s.statement_timeout_ms, s.readiness_cache_s) == (3, 5000, 1.0)
    assert (s.readiness_timeout_s, s.max_body_bytes, s.retry_after_s) == (2.0, 1048576, 5)
    assert (s.log_format, s.application_name) == ("auto", "pgstack-api")
    assert s.ops_token is None


def test_the_socket_url_keeps_host_and_port_query(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSTACK_DATABASE_URL", PG_URL)
    url = load_settings().api_url()
    assert url.drivername == "postgresql+psycopg"
    assert url.username == "app" and url.password is None
    assert dict(url.query) == {"host": "/run/pgbouncer", "port": "6432"}


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("sqlite:///./var/dev.db", "sqlite+aiosqlite"),
    ],
)
def test_dsn_spellings_are_normalised_to_the_shipped_drivers(
    monkeypatch: pytest.MonkeyPatch, given: str, driver: str
) -> None:
    monkeypatch.setenv("PGSTACK_ENV", "dev")
    monkeypatch.setenv("PGSTACK_DATABASE_URL", given)
    assert load_settings().api_url().drivername == driver


def test_a_missing_url_says_which_key_and_gives_an_example() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "PGSTACK_DATABASE_URL is required" in str(raised.value)
    assert "postgresql+psycopg://" in str(raised.value)


def test_a_bad_number_names_the_key_the_value_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSTACK_DATABASE_URL", PG_URL)
    monkeypatch.setenv("PGSTACK_CONNECT_TIMEOUT", "1")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert "PGSTACK_CONNECT_TIMEOUT='1'" in message
    assert "libpq's minimum" in message


def test_an_unknown_database_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSTACK_DATABASE_URL", "mysql://u@h/db")
    with pytest.raises(ConfigError, match=r"PGSTACK_DATABASE_URL='mysql://u@h/db'.*unsupported"):
        load_settings()


def test_production_refuses_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSTACK_DATABASE_URL", "sqlite+aiosqlite:///./var/dev.db")
    with pytest.raises(ConfigError, match="PGSTACK_ENV=dev"):
        load_settings()


@pytest.mark.parametrize("placeholder", ["", "changeme", "CHANGETHIS", "password"])
def test_production_refuses_placeholder_secrets_without_printing_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, placeholder: str
) -> None:
    secret = tmp_path / "ops_token"
    secret.write_text(placeholder + "\n")
    monkeypatch.setenv("PGSTACK_DATABASE_URL", PG_URL)
    monkeypatch.setenv("PGSTACK_OPS_TOKEN_FILE", str(secret))
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "PGSTACK_OPS_TOKEN" in str(raised.value)
    assert "openssl rand" in str(raised.value)


def test_dev_accepts_what_production_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSTACK_ENV", "dev")
    monkeypatch.setenv("PGSTACK_DATABASE_URL", "sqlite+aiosqlite:///./var/dev.db")
    monkeypatch.setenv("PGSTACK_OPS_TOKEN", "changeme")
    s = load_settings()
    assert s.is_dev
    assert s.admin_url() == s.api_url()  # dev migrates through the same URL


def test_secret_files_are_read_without_the_trailing_newline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "owner").write_text("s3cret-owner-password\n")
    monkeypatch.setenv("PGSTACK_DATABASE_URL", PG_URL)
    monkeypatch.setenv("PGSTACK_ADMIN_DATABASE_URL", "postgresql+psycopg://app_owner@pg:5432/db")
    monkeypatch.setenv("PGSTACK_ADMIN_DATABASE_PASSWORD_FILE", str(tmp_path / "owner"))
    s = load_settings()
    assert s.admin_url().password == "s3cret-owner-password"  # noqa: S105
    assert "s3cret" not in repr(s) and "s3cret" not in str(s)


def test_a_missing_secret_file_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSTACK_DATABASE_URL", PG_URL)
    monkeypatch.setenv("PGSTACK_OPS_TOKEN_FILE", "/nonexistent/ops_token")
    with pytest.raises(
        ConfigError, match=r"PGSTACK_OPS_TOKEN_FILE='/nonexistent/ops_token'.*mounted"
    ):
        load_settings()


def test_a_secret_given_twice_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "t").write_text("a-real-token-value")
    monkeypatch.setenv("PGSTACK_DATABASE_URL", PG_URL)
    monkeypatch.setenv("PGSTACK_OPS_TOKEN", "another-real-token")
    monkeypatch.setenv("PGSTACK_OPS_TOKEN_FILE", str(tmp_path / "t"))
    with pytest.raises(ConfigError, match="both set"):
        load_settings()


def test_production_needs_the_admin_url_for_migrations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSTACK_DATABASE_URL", PG_URL)
    with pytest.raises(ConfigError, match="PGSTACK_ADMIN_DATABASE_URL is not set"):
        load_settings().admin_url()
