"""ansible/ is clean under ansible-lint's production profile and yamllint, with no rule skipped."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.deploy.target import ANSIBLE_DIR, BIN


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"), NO_COLOR="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        argv, cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=300
    )


def test_yamllint_finds_nothing() -> None:
    result = _run(str(BIN / "yamllint"), "--strict", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(300)
def test_ansible_lint_production_profile_passes() -> None:
    result = _run(str(BIN / "ansible-lint"), "--profile", "production", "--offline")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_rule_is_skipped_anywhere() -> None:
    config = (ANSIBLE_DIR / ".ansible-lint").read_text()
    assert "skip_list" not in config and "warn_list" not in config
    noqa = _run("grep", "-rn", "--include=*.yml", "noqa", ".")
    assert noqa.stdout == "", noqa.stdout
