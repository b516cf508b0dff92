"""Static checks that run with the suite: every Dockerfile passes hadolint, every shell script
passes shellcheck (the repository's files, as git knows them)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is missing: install tests/requirements.txt (make test does)"
    return found


def _tracked() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    return [REPO / name for name in out.split("\0") if name and (REPO / name).is_file()]


def _shell_scripts() -> list[Path]:
    scripts = []
    for path in _tracked():
        if path.suffix == ".sh" or path.name == "run":
            scripts.append(path)
            continue
        with path.open("rb") as handle:
            first = handle.readline(100)
        if first.startswith(b"#!") and (b"bash" in first or b"/sh" in first):
            scripts.append(path)
    return scripts


def test_every_dockerfile_passes_hadolint() -> None:
    dockerfiles = [p for p in _tracked() if p.name == "Dockerfile"]
    assert len(dockerfiles) >= 4
    result = subprocess.run(
        [_tool("hadolint"), *map(str, dockerfiles)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_shell_script_passes_shellcheck() -> None:
    scripts = _shell_scripts()
    assert any(p.name == "docker-entrypoint.sh" for p in scripts)
    result = subprocess.run(
        [_tool("shellcheck"), "--external-sources", *map(str, scripts)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
