"""A throwaway target host for the deploy tests: a systemd container reached over SSH by Ansible.

The target stands in for a fresh Debian trixie VM (tests/deploy/target/): systemd as PID 1, sshd,
python3 and sudo, and room for its own Docker engine. Everything it makes is named
`pgstack-deploy-<pid>...` and removed by `destroy()`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import httpx

from tests.deploy.tls import Certificates, issue
from tests.stack.compose import REPO, free_port

ANSIBLE_DIR = REPO / "ansible"
TARGET_COMPOSE = Path(__file__).parent / "target" / "compose.yml"
BIN = Path(sys.executable).parent
VAULT_SCRIPT = ANSIBLE_DIR / "scripts" / "vault.py"


def load_vault_script() -> ModuleType:
    """`make vault`'s script as a module (loaded by path: the directory `ansible` is not the
    package `ansible`)."""
    spec = importlib.util.spec_from_file_location("pgstack_vault_script", VAULT_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# The example vault's published password, from the one place it is spelled. The playbook
# refuses the example vault's values, so each target gets a vault of its own.
EXAMPLE_VAULT_PASSWORD = str(load_vault_script().EXAMPLE_VAULT_PASSWORD)
STACK_DIR = "/opt/pgstack"
_RECAP = re.compile(
    r"^target\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)


@dataclass(frozen=True)
class Recap:
    """The PLAY RECAP line of one playbook run, plus its whole output for failure messages."""

    ok: int
    changed: int
    unreachable: int
    failed: int
    output: str

    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported `changed` (for a readable idempotence failure)."""
        names, current = [], ""
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                current = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed:"):
                names.append(current)
        return names


@dataclass
class ControlFiles:
    """What the control node keeps for the hosts it deploys to, in `workdir`: the SSH key and
    the inventory (Target: one host; fleet.Fleet: several)."""

    workdir: Path

    @property
    def key(self) -> Path:
        return self.workdir / "id_ed25519"

    @property
    def inventory(self) -> Path:
        return self.workdir / "inventory" / "hosts.yml"

    @property
    def vault_password(self) -> Path:
        return self.workdir / "vault-password"

    @property
    def ansible_env(self) -> dict[str, str]:
        """The environment `ansible-playbook` and `make deploy*` run with against these hosts."""
        env = dict(os.environ)
        env.update(
            ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
            ANSIBLE_LOCAL_TEMP=str(self.workdir / "ansible-tmp"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        )
        return env

    def run_make(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """A make target of the repository from the control node, INVENTORY these hosts', as an
        operator runs `make deploy INVENTORY=...`, whatever its outcome."""
        return subprocess.run(
            ["make", *args, f"INVENTORY={self.inventory}",
             f"VAULT_PASSWORD_FILE={self.vault_password}", f"TEST_VENV={BIN.parent}",
             "-o", f"{BIN.parent}/.installed"],
            cwd=REPO, env=self.ansible_env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip


@dataclass
class Target(ControlFiles):
    """One target host: its compose project, SSH key, inventory and published ports.

    Clients reach the stack through the edge's HTTPS (port 443 on the target, on `https_port`
    here), verified against a CA made for this target. `sshd_port` is the port sshd listens on
    inside the target (22 like a fresh VM, or another to test a host that moved it).
    """

    project: str = field(default_factory=lambda: f"pgstack-deploy-{os.getpid()}")
    ssh_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    sshd_port: int = 22
    # The name other containers on the target's network know it by, and the loopback address the
    # tests use: both are in the edge's certificate.
    tls: Certificates = field(default_factory=lambda: issue(["target", "localhost"], ["127.0.0.1"]))

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("COMPOSE_PROJECT_NAME", None)
        env.update(
            PGSTACK_DEPLOY_PROJECT=self.project,
            PGSTACK_DEPLOY_SSH_PORT=str(self.ssh_port),
            PGSTACK_DEPLOY_TARGET_SSH_PORT=str(self.sshd_port),
            PGSTACK_DEPLOY_HTTPS_PORT=str(self.https_port),
        )
        return env

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.crt"

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the edge against this target's CA only."""
        return ssl.create_default_context(cafile=self.ca_file)

    def _compose(
        self, *args: str, timeout: float = 600, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            # --project-name: COMPOSE_PROJECT_NAME (exported by the Makefile and CI) would
            # otherwise win over the file's `name:` and put the target in someone else's project.
            ["docker", "compose", "--project-name", self.project, "--file", str(TARGET_COMPOSE),
             *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=check, input=input,
        )  # fmt: skip

    # ---- life cycle ------------------------------------------------------------------------

    def create(self) -> None:
        """Build the target image (cached), boot it, install a new SSH key, write the inventory."""
        self._compose("build", "--quiet")
        self._compose("up", "--detach")
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                self.project,
                "-f",
                str(self.key),
            ],
            check=True,
        )
        self._wait_booted()
        if self.sshd_port != 22:
            self.sh(
                f"echo 'Port {self.sshd_port}' >/etc/ssh/sshd_config.d/pgstack-test-port.conf"
                " && systemctl restart ssh.service"
            )
        self.tls.write_ca(self.ca_file)
        pub = self.key.with_suffix(".pub").read_text()
        self.sh(
            "install -d -m 0700 -o debian -g debian ~debian/.ssh && "
            "install -m 0600 -o debian -g debian /dev/stdin ~debian/.ssh/authorized_keys",
            input=pub,
        )
        self._write_inventory()

    def destroy(self) -> None:
        """Remove the target, its inner engine's volume and the key; safe to call twice."""
        self._compose("down", "--volumes", "--remove-orphans", "--timeout", "30", check=False)
        for path in (self.key, self.key.with_suffix(".pub")):
            path.unlink(missing_ok=True)

    def _wait_booted(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            # `degraded` is fine: a container has units that cannot start (no hardware).
            state = self.sh(
                "systemctl is-system-running --wait || true", check=False
            ).stdout.strip()
            sshd = self.sh("systemctl is-active ssh.service || true", check=False).stdout.strip()
            if state in {"running", "degraded"} and sshd == "active":
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"target did not boot in {timeout} s: system {state!r}, sshd {sshd!r}"
                )
            time.sleep(1)

    def _write_inventory(self) -> None:
        """The example inventory's vars.yml, a new vault made by `make vault`'s script, and this
        target's connection details."""
        inventory = self.inventory.parent
        (inventory / "group_vars" / "pgstack").mkdir(parents=True)
        shutil.copy(
            ANSIBLE_DIR / "inventory" / "example" / "group_vars" / "pgstack" / "vars.yml",
            inventory / "group_vars" / "pgstack" / "vars.yml",
        )
        subprocess.run(
            [sys.executable, str(VAULT_SCRIPT), "new", "--inventory", str(inventory),
             "--password-file", str(self.vault_password)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        self._write_edge_tls(inventory, self.vault_password)
        self.inventory.write_text(json.dumps({"pgstack": {"hosts": {"target": self._host()}}}))

    def _write_edge_tls(self, inventory: Path, vault_password: Path) -> None:
        """The edge's certificate and key where ansible/README.md tells an operator to put them:
        tls/server.crt, and the key encrypted with ansible-vault's encrypt_string."""
        (inventory / "tls").mkdir(exist_ok=True)
        (inventory / "tls" / "server.crt").write_text(self.tls.certificate)
        encrypted = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-vault"), "encrypt_string",
             "--vault-password-file", str(vault_password), "--stdin-name", "vault_edge_tls_key"],
            input=self.tls.key, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        (inventory / "group_vars" / "pgstack" / "edge_tls_key.yml").write_text(encrypted)

    def example_inventory(self) -> tuple[Path, Path]:
        """This target in an inventory with the example's group_vars, its public vault included:
        (hosts.yml, the vault's password file)."""
        inventory = self.workdir / "example-inventory"
        if not inventory.exists():
            shutil.copytree(
                ANSIBLE_DIR / "inventory" / "example" / "group_vars", inventory / "group_vars"
            )
            hosts = {"pgstack": {"hosts": {"target": self._host()}}}
            (inventory / "hosts.yml").write_text(json.dumps(hosts))
            (inventory / "vault-password").write_text(EXAMPLE_VAULT_PASSWORD + "\n")
            self._write_edge_tls(inventory, inventory / "vault-password")
        return inventory / "hosts.yml", inventory / "vault-password"

    def cluster_example_inventory(self) -> tuple[Path, Path]:
        """This target as the three database hosts of the cluster example's inventory, its public
        vault included: (hosts.yml, the vault's password file). Enough for what happens before
        any role runs; a deploy needs three real hosts (tests/deploy/fleet.py)."""
        inventory = self.workdir / "cluster-example-inventory"
        if not inventory.exists():
            shutil.copytree(
                ANSIBLE_DIR / "inventory" / "cluster-example" / "group_vars",
                inventory / "group_vars",
            )
            members = {
                f"db{n}": {**self._host(), "pgstack_address": f"10.0.0.1{n}"} for n in (1, 2, 3)
            }
            (inventory / "hosts.yml").write_text(json.dumps({"pgstack_db": {"hosts": members}}))
            (inventory / "vault-password").write_text(EXAMPLE_VAULT_PASSWORD + "\n")
        return inventory / "hosts.yml", inventory / "vault-password"

    def _host(self) -> dict[str, object]:
        return {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.ssh_port,
            "ansible_user": "debian",
            "ansible_ssh_private_key_file": str(self.key),
            # A new host key per run, on a loopback port: nothing to verify it against.
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null",
            # Measured on the CI machines: the inner dockerd needs this to start containers.
            "docker_service_environment": {"DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE": "1"},
            # The control node reaches the target's HTTPS port through the outer engine.
            "pgstack_check_url": self.base_url,
            "pgstack_check_ca_path": str(self.ca_file),
        }

    # ---- acting on the target --------------------------------------------------------------

    def sh(
        self, script: str, *, input: str | None = None, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell script as root on the target (through the outer engine, not SSH)."""
        result = self._compose(
            "exec",
            "--no-TTY",
            "target",
            "bash",
            "-c",
            script,
            check=False,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"on the target: {script}\nexit {result.returncode}\n{result.stdout}{result.stderr}"
            )
        return result

    def stack(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """`docker compose` in the deployed stack's directory on the target."""
        quoted = " ".join(f"'{arg}'" for arg in args)
        return self.sh(
            f"docker compose --project-directory {STACK_DIR} {quoted}", check=check, timeout=timeout
        )

    def services(self) -> dict[str, dict[str, object]]:
        """Every container of the deployed stack, by service: State, Health, ExitCode, ..."""
        lines = self.stack("ps", "--all", "--format", "json").stdout.splitlines()
        return {row["Service"]: row for row in map(json.loads, filter(None, lines))}

    def run_playbook(
        self,
        name: str,
        *args: str,
        inventory: Path | None = None,
        vault_password: Path | None = None,
        timeout: float = 900,
    ) -> subprocess.CompletedProcess[str]:
        """Run ansible/<name> against this target over SSH, whatever its outcome (logged)."""
        result = subprocess.run(
            [str(BIN / "ansible-playbook"), "--inventory", str(inventory or self.inventory),
             "--vault-password-file", str(vault_password or self.vault_password),
             str(ANSIBLE_DIR / name), *args],
            cwd=ANSIBLE_DIR, env=self.ansible_env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        with (self.workdir / "playbooks.log").open("a") as log:
            log.write(result.stdout + result.stderr)
        return result

    def playbook(self, name: str, *args: str, timeout: float = 900) -> Recap:
        """Run ansible/<name> against this target over SSH; fail with the output if it fails."""
        result = self.run_playbook(name, *args, timeout=timeout)
        output = result.stdout + result.stderr
        match = _RECAP.search(result.stdout)
        if result.returncode != 0 or match is None:
            raise AssertionError(
                f"ansible-playbook {name} {' '.join(args)} failed ({result.returncode}):\n"
                f"{output[-6000:]}"
            )
        ok, changed, unreachable, failed = map(int, match.groups())
        return Recap(ok, changed, unreachable, failed, output)

    def http(self, timeout: float = 20) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout, verify=self.ssl_context())

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        status: int | str = "no answer"
        while time.monotonic() < deadline:
            try:
                with self.http(timeout=3) as http:
                    status = http.get("/readyz").status_code
                if status == 200:
                    return
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            time.sleep(0.5)
        raise AssertionError(f"/readyz through the edge: {status} after {timeout} s")


class Downtime:
    """Polls /readyz every 100 ms in a thread while the `with` block runs; records the gaps.

    Bounded by the block itself (and a hard limit), never by the server's answers.
    """

    def __init__(self, url: str, verify: ssl.SSLContext, limit_s: float = 900) -> None:
        import threading

        self.url, self.verify, self.limit_s = url, verify, limit_s
        self.gaps: list[float] = []
        self.polls = 0
        # (seconds since the start, what a poll got) each time that changes: why a gap was long.
        self.changes: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Downtime:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def longest_s(self) -> float:
        return max(self.gaps, default=0.0)

    def _run(self) -> None:
        started = time.monotonic()
        down_since: float | None = None
        with httpx.Client(timeout=1, verify=self.verify) as http:
            while not self._stop.is_set() and time.monotonic() - started < self.limit_s:
                now = time.monotonic()
                self.polls += 1
                try:
                    outcome = str(http.get(self.url).status_code)
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                up = outcome == "200"
                if not self.changes or self.changes[-1][1] != outcome:
                    self.changes.append((round(now - started, 1), outcome))
                if not up and down_since is None:
                    down_since = now
                elif up and down_since is not None:
                    self.gaps.append(now - down_since)
                    down_since = None
                self._stop.wait(0.1)
        if down_since is not None:
            self.gaps.append(time.monotonic() - down_since)
