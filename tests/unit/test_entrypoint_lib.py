"""The entrypoints' shared library (services/lib), sourced in bash as the images source it:
secrets and *_FILE variables, and pgBackRest's configuration rendered from the environment --
including every way an operator can get that environment wrong."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "services/lib"


def _bash(script: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run `script` after sourcing both library files; chown to the current user is allowed."""
    sources = f"source {LIB / 'pgstack-lib.sh'}; source {LIB / 'pgbackrest-conf.sh'}"
    prelude = f"set -Eeuo pipefail; {sources}\n"
    return subprocess.run(
        ["bash", "-c", prelude + script],
        env={"PATH": os.environ["PATH"], "PGSTACK_SECRETS_DIR": str(tmp_path / "secrets"), **env},
        capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "backup_repo2_cipher_pass").write_text("cipher-secret")
    (folder / "backup_repo2_s3_key").write_text("key-id")
    (folder / "backup_repo2_s3_key_secret").write_text("key-secret")
    return folder


def _render(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    me = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    conf = tmp_path / "run" / "pgbackrest.conf"
    env = {"PGBACKREST_CONFIG": str(conf), "PGDATA": "/data/pgdata", **env}
    return _bash(f'pgbackrest_render_conf {me}; cat "{conf}"', env, tmp_path)


def test_the_default_configuration_has_one_local_repository_and_a_bounded_archive_queue(
    tmp_path: Path, secrets: Path
) -> None:
    result = _render(tmp_path)
    assert result.returncode == 0, result.stderr
    conf = result.stdout
    assert "repo1-path=/var/lib/pgstack-backup/pgbackrest" in conf
    assert "archive-async=y" in conf and "archive-push-queue-max=1073741824" in conf
    assert "expire-auto=n" in conf and "pg1-path=/data/pgdata" in conf
    assert "repo2" not in conf
    mode = (tmp_path / "run" / "pgbackrest.conf").stat().st_mode & 0o777
    assert mode == 0o600


def test_an_off_site_repository_is_always_encrypted(tmp_path: Path, secrets: Path) -> None:
    result = _render(tmp_path, BACKUP_REPO2="posix")
    assert result.returncode == 0, result.stderr
    assert "repo2-type=posix" in result.stdout
    assert "repo2-cipher-type=aes-256-cbc" in result.stdout
    assert "repo2-cipher-pass=cipher-secret" in result.stdout


def test_s3_takes_its_keys_from_secret_files(tmp_path: Path, secrets: Path) -> None:
    result = _render(tmp_path, BACKUP_REPO2="s3", BACKUP_REPO2_S3_ENDPOINT="s3.example",
                     BACKUP_REPO2_S3_BUCKET="b", BACKUP_REPO2_S3_REGION="eu-west-1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    for line in ("repo2-type=s3", "repo2-path=/pgstack", "repo2-s3-bucket=b",
                 "repo2-s3-key=key-id", "repo2-s3-key-secret=key-secret",
                 "repo2-storage-verify-tls=y"):  # fmt: skip
        assert line in result.stdout


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"BACKUP_REPO2": "S3"}, "BACKUP_REPO2=S3: expected empty"),
        (
            {"BACKUP_REPO2": "s3", "BACKUP_REPO2_S3_BUCKET": "b", "BACKUP_REPO2_S3_REGION": "r"},
            "needs BACKUP_REPO2_S3_ENDPOINT",
        ),
        ({"WAL_ARCHIVE_QUEUE_MAX": "1GB"}, "WAL_ARCHIVE_QUEUE_MAX=1GB: expected a whole number"),
        ({"BACKUP_REPO1_RETENTION_FULL": "two"}, "BACKUP_REPO1_RETENTION_FULL=two"),
    ],
    ids=["upper-case-type", "s3-without-endpoint", "queue-with-unit", "retention-in-words"],
)
def test_a_bad_setting_stops_the_container_naming_it_and_writes_nothing(
    tmp_path: Path, secrets: Path, env: dict[str, str], says: str
) -> None:
    result = _render(tmp_path, **env)
    assert result.returncode != 0
    assert says in result.stderr
    assert not (tmp_path / "run" / "pgbackrest.conf").exists()


def test_a_missing_cipher_secret_is_an_error_with_the_fix(tmp_path: Path, secrets: Path) -> None:
    (secrets / "backup_repo2_cipher_pass").unlink()
    result = _render(tmp_path, BACKUP_REPO2="posix")
    assert result.returncode != 0
    assert (
        "backup_repo2_cipher_pass is missing" in result.stderr and "make secrets" in result.stderr
    )


def test_file_env_reads_a_file_and_refuses_both_forms(tmp_path: Path, secrets: Path) -> None:
    value = tmp_path / "value"
    value.write_text("from-a-file")
    ok = _bash('file_env GREETING; echo "$GREETING"', {"GREETING_FILE": str(value)}, tmp_path)
    assert ok.returncode == 0 and ok.stdout.strip() == "from-a-file"
    both = _bash("file_env GREETING", {"GREETING": "x", "GREETING_FILE": str(value)}, tmp_path)
    assert both.returncode != 0 and "exclusive" in both.stderr


def test_sourcing_an_entrypoint_runs_nothing(tmp_path: Path) -> None:
    for image in ("postgres", "pgbouncer", "backup"):
        entrypoint = REPO / "services" / image / "docker-entrypoint.sh"
        text = entrypoint.read_text().replace("/usr/local/lib/pgstack", str(LIB))
        copy = tmp_path / f"{image}-entrypoint.sh"
        copy.write_text(text)
        env = {"PATH": os.environ["PATH"], "PGDATA": "/nonexistent/pgdata"}
        result = subprocess.run(["bash", "-c", f"source {copy} postgres; echo sourced"],
                                capture_output=True, text=True, check=False, env=env)  # fmt: skip
        assert result.returncode == 0, (image, result.stderr)
        assert result.stdout.strip() == "sourced", image
