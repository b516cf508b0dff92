"""services/patroni/pgstack-rewind, run against stand-in pg_rewind and psql programs: pg_rewind's
result passes through untouched, the WAL record is written only after a successful rewind, and a
failed write is reported with its recovery, not turned into a failed rewind."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
DSN = "dbname=postgres user=rewind host=patroni2 port=5432"


def _wrapper() -> ModuleType:
    path = str(REPO / "services/patroni/pgstack-rewind")
    loader = importlib.machinery.SourceFileLoader("pgstack_rewind", path)
    spec = importlib.util.spec_from_loader("pgstack_rewind", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str, rewind: int = 0, psql: str = ""
) -> tuple[int, list[str]]:
    """main() with stand-ins in BIN: pg_rewind exits `rewind`; psql runs `psql` (shell) after
    noting its arguments. Returns the exit code and the programs' calls, one line each."""
    calls = tmp_path / "calls"
    for name, body in (("pg_rewind", f"exit {rewind}"), ("psql", psql or "echo 0/3000060")):
        program = tmp_path / name
        program.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\n{body}\n')
        program.chmod(0o755)
    wrapper = _wrapper()
    monkeypatch.setattr(wrapper, "BIN", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["pgstack-rewind", *args])
    code = wrapper.main()
    return code, calls.read_text().splitlines() if calls.exists() else []


def test_a_successful_rewind_then_writes_one_record_on_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, calls = _run(tmp_path, monkeypatch, "-D", "/data", "--source-server", DSN)
    assert code == 0
    assert calls[0] == f"pg_rewind -D /data --source-server {DSN}"
    assert calls[1].startswith("psql ") and DSN in calls[1]
    assert "pg_logical_emit_message" in calls[1]
    assert "wrote a WAL record on the source at 0/3000060" in capsys.readouterr().err


def test_the_source_given_with_an_equals_sign_is_found_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, calls = _run(tmp_path, monkeypatch, "-D", "/data", f"--source-server={DSN}")
    assert code == 0 and len(calls) == 2 and DSN in calls[1]


def test_a_failed_rewind_keeps_its_exit_code_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, calls = _run(tmp_path, monkeypatch, "-D", "/data", "--source-server", DSN, rewind=1)
    assert code == 1
    assert [c.split()[0] for c in calls] == ["pg_rewind"]


def test_no_source_server_no_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Patroni's capability probe (pg_rewind --help) must not touch any server.
    code, calls = _run(tmp_path, monkeypatch, "--help")
    assert code == 0 and [c.split()[0] for c in calls] == ["pg_rewind"]


def test_a_failed_write_leaves_the_rewind_successful_and_says_how_to_recover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = 'echo "psql: error: connection refused" >&2; exit 2'
    code, _ = _run(tmp_path, monkeypatch, "--source-server", DSN, psql=refused)
    assert code == 0
    err = capsys.readouterr().err
    assert "could not write a WAL record on the source (psql: error: connection refused)" in err
    assert "run CHECKPOINT on the leader" in err
