"""Another host on the target's network: a container that reaches the target the way a client on
the LAN would, through the target's own network interface and so through its firewall.

It runs the target's image (Debian with python3, already built) with a plain HTTP server instead
of systemd, so the stack's containers can also be asked to reach *it* (their way out of the
target, through Docker's NAT). Every probe runs inside it with the docker SDK.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass

import docker
import docker.models.containers

IMAGE = "pgstack-deploy-target:local"
# The port the outsider's HTTP server listens on (for the stack's containers to reach it).
LISTEN_PORT = 8080
# The target's name on its compose network: also in the edge's certificate.
TARGET = "target"

# Runs inside the outsider: one probe, its result as JSON on stdout.
_PROBE = textwrap.dedent("""
    import json, socket, ssl, sys, urllib.request
    kind, host, port, rest = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    try:
        if kind == "connect":
            with socket.create_connection((host, port), timeout=3) as sock:
                sock.settimeout(3)
                banner = sock.recv(64).decode(errors="replace") if rest else ""
                out = {"open": True, "banner": banner}
        else:
            context = ssl.create_default_context(cadata=rest[1])
            url = f"{kind}://{host}:{port}{rest[0]}"
            try:
                with urllib.request.urlopen(url, timeout=5, context=context) as answer:
                    out = {"open": True, "status": answer.status, "body": answer.read().decode()}
            except urllib.error.HTTPError as error:
                out = {"open": True, "status": error.code, "body": error.read().decode()}
    except (OSError, urllib.error.URLError) as error:
        out = {"open": False, "error": repr(error)}
    print(json.dumps(out))
""")


@dataclass
class Outsider:
    """A container on the target's compose network; `stop()` removes it."""

    container: docker.models.containers.Container
    ca: str

    @classmethod
    def start(cls, project: str, ca: str) -> Outsider:
        client = docker.from_env()
        container = client.containers.run(
            IMAGE,
            ["python3", "-m", "http.server", "--bind", "0.0.0.0", str(LISTEN_PORT)],
            name=f"{project}-outsider",
            network=f"{project}_default",
            labels={"com.docker.compose.project": project},
            detach=True,
        )
        container.reload()
        return cls(container, ca)

    def stop(self) -> None:
        self.container.remove(force=True)

    @property
    def address(self) -> str:
        """The outsider's IP address on the target's network (what the target sees as source)."""
        self.container.reload()
        networks = self.container.attrs["NetworkSettings"]["Networks"]
        return str(next(iter(networks.values()))["IPAddress"])

    def _probe(self, *args: str) -> dict[str, object]:
        result = self.container.exec_run(["python3", "-c", _PROBE, *args])
        assert result.exit_code == 0, result.output.decode()
        return dict(json.loads(result.output.decode().strip().splitlines()[-1]))

    def connects(self, port: int) -> bool:
        """Whether a TCP connection to the target's port is accepted (refused or dropped: no)."""
        return bool(self._probe("connect", TARGET, str(port))["open"])

    def banner(self, port: int) -> str:
        """The first bytes the target's port sends (sshd says `SSH-2.0-...`), "" if closed."""
        answer = self._probe("connect", TARGET, str(port), "banner")
        return str(answer.get("banner", ""))

    def https(self, path: str, port: int = 443) -> dict[str, object]:
        """GET over HTTPS verified against the test CA for the name `target`."""
        return self._probe("https", TARGET, str(port), path, self.ca)

    def http(self, path: str, port: int) -> dict[str, object]:
        """GET over plain HTTP."""
        return self._probe("http", TARGET, str(port), path, self.ca)
