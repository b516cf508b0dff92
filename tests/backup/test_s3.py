"""pgBackRest's off-site repository on S3-compatible object storage: moto's S3 server (Debian's
python3-moto) behind TLS with a CA of its own, reached like a real bucket over the route out
(services/backup/compose.s3.yml). Backups and WAL land there encrypted, and when the local
machine is lost, a new one recovers the cluster from the bucket alone."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.backup.conftest import REPO, BackupStack

pytestmark = pytest.mark.chaos

S3_SERVICE = f"""
services:
  s3:
    build:
      context: {REPO / "tests/backup/s3"}
      args: {{BASE_IMAGE: "${{BASE_IMAGE:-debian:trixie-slim}}"}}
    image: pgstack-s3test:${{PGSTACK_IMAGE_TAG:-local}}
    networks: [frontend]
    volumes: [s3-ca:/var/lib/s3-ca]
  postgres:
    depends_on:
      s3: {{condition: service_healthy}}
    volumes: [s3-ca:/var/lib/s3-ca:ro]
  backup:
    volumes: [s3-ca:/var/lib/s3-ca:ro]
volumes:
  s3-ca: {{}}
"""


@pytest.fixture(scope="module")
def s3stack(
    backup_stack_factory: Callable[..., BackupStack], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackupStack]:
    keys: Path = tmp_path_factory.mktemp("s3-keys")
    (keys / "key").write_text("pgstack-test-key")
    (keys / "secret").write_text("pgstack-test-secret")
    env = {
        "BACKUP_REPO2": "s3", "BACKUP_REPO2_S3_ENDPOINT": "s3",
        "BACKUP_REPO2_S3_BUCKET": "pgstack-test", "BACKUP_REPO2_S3_REGION": "us-east-1",
        "BACKUP_REPO2_S3_URI_STYLE": "path", "BACKUP_REPO2_S3_CA_FILE": "/var/lib/s3-ca/ca.pem",
        "BACKUP_REPO2_S3_KEY_FILE": str(keys / "key"),
        "BACKUP_REPO2_S3_KEY_SECRET_FILE": str(keys / "secret"),
    }  # fmt: skip
    stack = backup_stack_factory("s3", env=env, override=S3_SERVICE,
                                 extra_files=("services/backup/compose.s3.yml",))  # fmt: skip
    try:
        stack.compose("build", "--quiet", "s3")
        stack.up()
        yield stack
    finally:
        stack.down()


def test_backups_and_wal_reach_the_bucket_encrypted_over_verified_tls(s3stack: BackupStack) -> None:
    summary = s3stack.backup()
    assert summary["physical"]["repo2"]["type"] == "full"
    code, out = s3stack.exec("backup", "pgbackrest", "--stanza=pgstack", "--repo=2", "info",
                             "--output=json", user="postgres")  # fmt: skip
    assert code == 0, out
    assert '"cipher":"aes-256-cbc"' in out and summary["physical"]["repo2"]["label"] in out
    # PostgreSQL reaches the bucket itself (archive-push) only because compose.s3.yml gives it
    # the route out; without that file it stays on the internal network.
    networks = s3stack.container("postgres").attrs["NetworkSettings"]["Networks"]
    assert f"{s3stack.project}_frontend" in networks
    s3stack.psql("SELECT pg_switch_wal()")
    code, out = s3stack.exec("backup", "pgbackrest", "--stanza=pgstack", "--repo=2", "repo-ls",
                             "--recurse", "archive/pgstack/17-1", user="postgres")  # fmt: skip
    assert code == 0 and ".zst" in out, out


def test_a_new_machine_recovers_the_cluster_from_the_bucket_alone(s3stack: BackupStack) -> None:
    s3stack.psql("INSERT INTO users (email, name) VALUES ('s3@x.test', 'from-the-bucket')")
    s3stack.backup()
    time.sleep(1)
    target = s3stack.psql("SELECT now()")
    time.sleep(1)
    s3stack.psql("INSERT INTO users (email, name) VALUES ('late@x.test', 'too-late')")
    # Everything up to now reaches both repositories before the machine is lost.
    code, out = s3stack.exec("backup", "pgbackrest", "--stanza=pgstack", "check", user="postgres")
    assert code == 0, out
    # The machine is gone: the data volume and the backups volume (repo1, the dumps) with it.
    # What is left is the bucket and the secrets -- docs/operations.md, "Restore on a new VM".
    s3stack.compose("rm", "--stop", "--force", "postgres", "backup")
    for volume in ("pgdata", "backups"):
        s3stack.client.volumes.get(f"{s3stack.project}_{volume}").remove(force=True)
    s3stack.up("api")  # a new, empty cluster
    s3stack.compose("up", "--detach", "backup")  # unhealthy: the bucket is another cluster's
    s3stack.wait_healthy("postgres")
    assert s3stack.rows("true") == 0

    listing = s3stack.make("backup-list")
    assert "any time between" in listing.stdout, listing.stdout + listing.stderr
    restored = s3stack.make("restore", f"TARGET_TIME={target}", "CONFIRM=1", timeout=600)
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-3000:]
    assert '"repo": 2' in restored.stdout
    assert s3stack.rows("name = 'from-the-bucket'") == 1
    assert s3stack.rows("name = 'too-late'") == 0
    s3stack.wait_ready()
    # The recovered cluster is the bucket's own again: archiving and backups work, health is green.
    assert s3stack.backup_cli("check-archive").returncode == 0
    s3stack.wait_healthy("backup", timeout=60)
