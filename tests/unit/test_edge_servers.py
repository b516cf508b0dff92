"""ansible/scripts/edge_servers.py, the one reader of an edge's `show stat` (deploy-check, a
release, the tests), run as Ansible runs it, against a socket that answers like HAProxy's admin
socket. tests/deploy/test_cluster_deploy.py reads a real edge with it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "ansible" / "scripts" / "edge_servers.py"

# HAProxy 2.6's `show stat`, cut to the columns the script reads plus a few around them.
STAT = """\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,status,weight
https,FRONTEND,,,3,9,2000,812,0,0,OPEN,
api,db1,0,0,1,4,,400,0,0,UP,1
api,db2,0,0,0,3,,397,0,0,MAINT,1
api,web1,0,0,0,0,,0,0,0,DOWN,1
api,BACKEND,0,0,1,7,200,797,0,0,UP,2
stats,FRONTEND,,,0,1,2000,4,0,0,OPEN,

"""


@pytest.fixture
def admin_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "admin.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                assert conn.recv(100) == b"show stat\n"
                conn.sendall(STAT.encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path
    server.close()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False
    )


def test_every_server_of_the_backend_with_its_state(admin_socket: Path) -> None:
    found = _run(str(admin_socket), "api")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == {
        "db1": {"status": "UP", "served": "400"},
        "db2": {"status": "MAINT", "served": "397"},
        "web1": {"status": "DOWN", "served": "0"},
    }


@pytest.mark.parametrize(("server", "said"), [("db2", "MAINT"), ("db1", "UP"), ("db9", "absent")])
def test_one_servers_state_or_absent(admin_socket: Path, server: str, said: str) -> None:
    found = _run(str(admin_socket), "api", server)
    assert (found.returncode, found.stdout) == (0, f"{said}\n"), found.stderr


def test_an_haproxy_not_running_is_named_not_a_traceback(tmp_path: Path) -> None:
    # No socket file at all (never started), and a stale one nobody listens on (stopped).
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as bound:
        bound.bind(str(stale))  # closed: the file stays, nobody listens
    for path in (tmp_path / "missing.sock", stale):
        listing = _run(str(path), "api")
        assert listing.returncode == 1 and "Traceback" not in listing.stderr, listing.stderr
        assert f"HAProxy does not answer on {path}" in listing.stderr
        assert "systemctl status haproxy" in listing.stderr
        one = _run(str(path), "api", "db1")
        assert (one.returncode, one.stdout) == (0, "stopped\n"), one.stderr


def test_a_socket_it_cannot_reach_for_another_reason_is_an_error_not_stopped(
    tmp_path: Path,
) -> None:
    # A path through a regular file (NotADirectoryError; as root a permission error cannot be
    # made): an error of its own, never "stopped", which would make a release skip its drain.
    (tmp_path / "file").write_text("")
    one = _run(str(tmp_path / "file" / "admin.sock"), "api", "db1")
    assert one.returncode != 0 and one.stdout != "stopped\n", (one.stdout, one.stderr)


def test_a_wrong_call_says_how_to_call_it() -> None:
    found = _run("/run/haproxy/admin.sock")
    assert found.returncode == 2
    assert "usage: edge_servers.py SOCKET BACKEND [SERVER]" in found.stderr
