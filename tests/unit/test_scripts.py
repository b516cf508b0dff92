"""The host-side scripts behind `make up`: secrets generation and the preflight messages."""

from __future__ import annotations

import os
import pty
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECRETS = REPO / "scripts/secrets.sh"
PREFLIGHT = REPO / "scripts/preflight.sh"
NAMES = {
    "postgres_password", "app_owner_password", "app_password", "app_backup_password",
    "pgbouncer_stats_password", "ops_token",
}  # fmt: skip


def test_secrets_are_generated_once_with_mode_0600_and_256_bits(tmp_path: Path) -> None:
    target = tmp_path / "secrets"
    subprocess.run([str(SECRETS), str(target)], check=True, capture_output=True)
    files = {p.name: p for p in target.iterdir()}
    assert set(files) >= NAMES
    values = set()
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        value = path.read_text()
        assert len(value) == 43 and value.isascii() and "\n" not in value  # base64url of 32 bytes
        values.add(value)
    assert len(values) == len(files)  # all different
    before = {name: p.read_text() for name, p in files.items()}
    again = subprocess.run([str(SECRETS), str(target)], check=True, capture_output=True, text=True)
    assert again.stdout == ""  # nothing generated
    assert {name: p.read_text() for name, p in files.items()} == before


def test_secrets_refuse_an_empty_file_instead_of_overwriting_it(tmp_path: Path) -> None:
    target = tmp_path / "secrets"
    target.mkdir()
    (target / "app_password").write_text("")
    result = subprocess.run([str(SECRETS), str(target)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "app_password exists but is empty" in result.stderr


def test_the_clusters_secrets_are_added_only_when_asked_for_and_keep_the_others(
    tmp_path: Path,
) -> None:
    cluster = {
        "replication_password", "rewind_password", "patroni_api_password",
        "etcd_root_password", "etcd_patroni_password",
    }  # fmt: skip
    target = tmp_path / "secrets"
    subprocess.run([str(SECRETS), str(target)], check=True, capture_output=True)
    single = {p.name: p.read_text() for p in target.iterdir()}
    assert not cluster & set(single)
    subprocess.run([str(SECRETS), str(target), "ha"], check=True, capture_output=True)
    both = {p.name: p.read_text() for p in target.iterdir()}
    assert set(both) == set(single) | cluster
    assert {name: both[name] for name in single} == single
    for name in cluster:
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600
    wrong = subprocess.run([str(SECRETS), str(target), "cluster"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "unknown secret set" in wrong.stderr


def _fake_bin(tmp_path: Path, docker_script: str | None) -> dict[str, str]:
    """A PATH holding only bash, the basic tools and (optionally) a stand-in docker command."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "cat", "env"):
        (bin_dir / tool).symlink_to(
            f"/bin/{tool}" if Path(f"/bin/{tool}").exists() else f"/usr/bin/{tool}"
        )
    if docker_script is not None:
        docker = bin_dir / "docker"
        docker.write_text(f"#!/bin/bash\n{docker_script}\n")
        docker.chmod(0o755)
    return {**os.environ, "PATH": str(bin_dir)}


def test_preflight_says_how_to_install_docker_when_it_is_missing(tmp_path: Path) -> None:
    result = subprocess.run(
        ["/bin/bash", str(PREFLIGHT)], env=_fake_bin(tmp_path, None), capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "docker is not installed" in result.stderr
    assert "apt-get install docker.io" in result.stderr


def test_preflight_says_how_to_install_compose_when_it_is_missing(tmp_path: Path) -> None:
    fake = 'if [[ $1 == compose ]]; then echo "unknown command: compose" >&2; exit 1; fi; exit 0'
    result = subprocess.run(
        ["/bin/bash", str(PREFLIGHT)], env=_fake_bin(tmp_path, fake), capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "Compose v2" in result.stderr


def test_preflight_says_when_the_engine_does_not_answer(tmp_path: Path) -> None:
    fake = "if [[ $1 == info ]]; then exit 1; fi; exit 0"
    result = subprocess.run(
        ["/bin/bash", str(PREFLIGHT)], env=_fake_bin(tmp_path, fake), capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "does not answer" in result.stderr


def test_make_help_writes_colour_codes_only_to_a_terminal() -> None:
    piped = subprocess.run(["make", "--no-print-directory", "help"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "restore" in piped and "\x1b[" not in piped
    # The same target on a pseudo-terminal: the colours are there.
    leader, follower = pty.openpty()
    with subprocess.Popen(["make", "--no-print-directory", "help"], cwd=REPO,
                          stdout=follower, stderr=follower) as make:  # fmt: skip
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        make.wait(timeout=30)
    os.close(leader)
    on_terminal = b"".join(chunks).decode()
    assert "restore" in on_terminal and "\x1b[36m" in on_terminal
