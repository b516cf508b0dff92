"""The API servers as an edge's HAProxy sees them, read from its admin socket (`show stat`).

    edge_servers.py SOCKET BACKEND [SERVER]

Prints one JSON object: server name -> {"status", "served"}, HAProxy's status ("UP", "DOWN",
"MAINT", "DRAIN", ...) and the sessions it has served since HAProxy started; exits 1 saying so if
HAProxy does not answer on SOCKET. With SERVER, prints that server's status alone, "absent" if
the backend has no such server, or "stopped" if HAProxy does not answer. Runs on the edge host
(Ansible's script module copies it there), with the system's python3 and nothing else: `make
deploy-check` asks it whether every server is UP, a release whether to drain a host and whether
an earlier release left it out of rotation, and the tests which servers answered.
"""

import csv
import json
import socket
import sys


def read_stat(path: str) -> str:
    with socket.socket(socket.AF_UNIX) as admin:
        admin.connect(path)
        admin.sendall(b"show stat\n")
        return b"".join(iter(lambda: admin.recv(65536), b"")).decode()


def servers(stat: str, backend: str) -> dict[str, dict[str, str]]:
    # The header line starts with "# "; the backend's own summary rows are not servers.
    rows = csv.DictReader(stat.lstrip("# ").splitlines())
    return {
        row["svname"]: {"status": row["status"], "served": row["stot"]}
        for row in rows
        if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
    }


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print("usage: edge_servers.py SOCKET BACKEND [SERVER]", file=sys.stderr)
        return 2
    try:
        stat = read_stat(argv[1])
    # No socket yet, or a stale one nobody listens on: HAProxy is not running. Anything else
    # (a permission refused) is an error of its own, not a reason to skip a drain.
    except (FileNotFoundError, ConnectionRefusedError) as error:
        if len(argv) == 4:
            print("stopped")
            return 0
        print(
            f"HAProxy does not answer on {argv[1]} ({error.strerror or error}): is it running? "
            "systemctl status haproxy; journalctl -u haproxy says why not.",
            file=sys.stderr,
        )
        return 1
    found = servers(stat, argv[2])
    if len(argv) == 4:
        print(found.get(argv[3], {}).get("status", "absent"))
    else:
        print(json.dumps(found, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
