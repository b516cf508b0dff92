"""Several throwaway target hosts on one network: the multi-host layouts' stand-in for a few VMs.

Each host is tests/deploy/target.py's target -- the same image and the same container settings,
read from tests/deploy/target/compose.yml -- so each has systemd, sshd and its own Docker engine.
They share one Docker network and are addressed by their IPs on it, as VMs on one private subnet
are; each host's address is fixed, so a host rebooted or replaced (`replace`) keeps it. The
inventory puts the named hosts in their groups; a host in no group (an "outsider") is there to
prove what a non-member cannot reach. Everything is named `pgstack-deploy-<pid>-fleet...` and
removed by `destroy()`.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import yaml

from tests.deploy.target import (
    ANSIBLE_DIR,
    BIN,
    TARGET_COMPOSE,
    VAULT_SCRIPT,
    ControlFiles,
    Recap,
)
from tests.stack.compose import free_port

CLUSTER_EXAMPLE = ANSIBLE_DIR / "inventory" / "cluster-example"


@dataclass
class FleetHost:
    """One host of the fleet: its name (service and inventory name), SSH port and address."""

    name: str
    container: str
    ssh_port: int
    address: str


@dataclass
class Fleet(ControlFiles):
    """N target hosts on one network; `groups` maps an inventory group to its hosts' names."""

    groups: dict[str, list[str]]
    outsiders: list[str] = field(default_factory=list)
    project: str = field(default_factory=lambda: f"pgstack-deploy-{os.getpid()}-fleet")
    hosts: dict[str, FleetHost] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        grouped = [name for members in self.groups.values() for name in members]
        return list(dict.fromkeys([*grouped, *self.outsiders]))

    @property
    def compose_file(self) -> Path:
        return self.workdir / "fleet-compose.json"

    def _compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.pop("COMPOSE_PROJECT_NAME", None)
        return subprocess.run(
            ["docker", "compose", "--project-name", self.project, "--file",
             str(self.compose_file), *args],
            env=env, capture_output=True, text=True, timeout=timeout, check=True,
        )  # fmt: skip

    # ---- life cycle ------------------------------------------------------------------------

    def create(self) -> None:
        """Write the fleet's compose file, boot every host, install a key, write the inventory."""
        self._write_compose()
        self._compose("build", "--quiet")
        self._compose("up", "--detach")
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.project,
             "-f", str(self.key)],
            check=True,
        )  # fmt: skip
        for host in self.hosts.values():
            self._wait_booted(host)
            self._check_address(host)
            self._install_key(host)
        self._write_inventory()

    def destroy(self) -> None:
        """Remove every host, their engines' volumes and the key; safe to call twice."""
        if self.compose_file.exists():
            env = dict(os.environ)
            env.pop("COMPOSE_PROJECT_NAME", None)
            subprocess.run(
                ["docker", "compose", "--project-name", self.project, "--file",
                 str(self.compose_file), "down", "--volumes", "--remove-orphans",
                 "--timeout", "30"],
                env=env, capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
        for path in (self.key, self.key.with_suffix(".pub")):
            path.unlink(missing_ok=True)

    def reboot(self, name: str, timeout: float = 180) -> None:
        """Reboot host `name`: its container restarted, so systemd shuts everything down (the
        image's stop signal), /run and /tmp come back empty and systemd boots it again. Returns
        once it runs and sshd answers. Its address must stay the same: the inventory names it."""
        host = self.hosts[name]
        docker.from_env().containers.get(host.container).restart(timeout=90)
        self._wait_booted(host, timeout)
        self._check_address(host)

    def replace(self, name: str, timeout: float = 180) -> None:
        """Host `name` lost for good, and a new machine in its place: its container killed (no
        shutdown) and removed with its engine's volume, so its data, images and keys are gone;
        then a fresh container of the same image under the same name, address and SSH port,
        with nothing on it but the control node's SSH key, as a new VM comes."""
        host = self.hosts[name]
        client = docker.from_env()
        container = client.containers.get(host.container)
        container.kill()
        container.remove(v=True)
        client.volumes.get(f"{self.project}_{name}-docker").remove()
        self._compose("up", "--detach", "--no-deps", name)
        self._wait_booted(host, timeout)
        self._check_address(host)
        self._install_key(host)

    def _install_key(self, host: FleetHost) -> None:
        self.sh(
            host.name,
            "install -d -m 0700 -o debian -g debian ~debian/.ssh && "
            "install -m 0600 -o debian -g debian /dev/stdin ~debian/.ssh/authorized_keys",
            input=self.key.with_suffix(".pub").read_text(),
        )

    def _write_compose(self) -> None:
        """tests/deploy/target/compose.yml's target, once per host, on the project's network
        (a subnet of its own, each host at a fixed address on it)."""
        target = yaml.safe_load(TARGET_COMPOSE.read_text())
        template = target["services"]["target"]
        template["build"]["context"] = str(TARGET_COMPOSE.parent)
        template["build"]["args"]["BASE_IMAGE"] = os.environ.get("BASE_IMAGE", "debian:trixie-slim")
        subnet = _free_subnet()
        services, volumes = {}, {}
        for n, name in enumerate(self.names):
            service = copy.deepcopy(template)
            if n > 0:
                service.pop("build")  # one build; every host runs the same image
            service["hostname"] = name
            # SSH only, on loopback; the hosts reach each other on the network.
            port = free_port()
            service["ports"] = [f"127.0.0.1:{port}:22"]
            service["volumes"] = [
                f"{name}-docker:/var/lib/docker" if v.endswith(":/var/lib/docker") else v
                for v in service["volumes"]
            ]
            address = str(subnet.network_address + 10 + n)
            service["networks"] = {"default": {"ipv4_address": address}}
            services[name] = service
            volumes[f"{name}-docker"] = {}
            self.hosts[name] = FleetHost(name, f"{self.project}-{name}-1", port, address)
        network = {"default": {"ipam": {"config": [{"subnet": str(subnet)}]}}}
        self.compose_file.write_text(
            json.dumps({"services": services, "volumes": volumes, "networks": network}, indent=2)
        )

    def _check_address(self, host: FleetHost) -> None:
        """The host's address is the one the inventory names (fixed in the compose file)."""
        inspected = subprocess.run(
            ["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", host.container],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        address = json.loads(inspected.stdout)[f"{self.project}_default"]["IPAddress"]
        if address != host.address:
            raise AssertionError(f"{host.name} runs at {address}, not {host.address}")

    def _wait_booted(self, host: FleetHost, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            state = self.sh(host.name, "systemctl is-system-running --wait || true", check=False)
            sshd = self.sh(host.name, "systemctl is-active ssh.service || true", check=False)
            if state.stdout.strip() in {"running", "degraded"} and sshd.stdout.strip() == "active":
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{host.name} did not boot in {timeout} s: {state.stdout!r}")
            time.sleep(1)

    def _write_inventory(self) -> None:
        """The cluster example's group_vars, a new vault made by `make vault`'s script (the
        example's is public, and cluster.yml refuses it), and the fleet's hosts in their groups."""
        inventory = self.inventory.parent
        shutil.copytree(
            CLUSTER_EXAMPLE / "group_vars",
            inventory / "group_vars",
            ignore=shutil.ignore_patterns("vault.yml"),
        )
        subprocess.run(
            [sys.executable, str(VAULT_SCRIPT), "new", "--inventory", str(inventory),
             "--password-file", str(self.vault_password)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        common = {
            "ansible_user": "debian",
            "ansible_ssh_private_key_file": str(self.key),
            # New host keys per run, on loopback ports: nothing to verify them against.
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null",
            # Measured on the CI machines: the inner dockerd needs this to start containers.
            "docker_service_environment": {"DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE": "1"},
        }
        groups = {
            group: {
                "hosts": {
                    name: {
                        "ansible_host": "127.0.0.1",
                        "ansible_port": self.hosts[name].ssh_port,
                        # The address the other hosts reach this one at (the fleet's network).
                        "pgstack_address": self.hosts[name].address,
                    }
                    for name in members
                }
            }
            for group, members in self.groups.items()
        }
        self.inventory.write_text(
            json.dumps({"all": {"vars": common, "children": groups}}, indent=2)
        )

    # ---- acting on the hosts ---------------------------------------------------------------

    def sh(
        self,
        name: str,
        script: str,
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell script as root on host `name` (through the outer engine, not SSH)."""
        result = subprocess.run(
            ["docker", "exec", "--interactive", self.hosts[name].container, "bash", "-c", script],
            capture_output=True, text=True, timeout=timeout, input=input, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"on {name}: {script}\nexit {result.returncode}\n{result.stdout}{result.stderr}"
            )
        return result

    def _log(self, argv: list[str], result: subprocess.CompletedProcess[str]) -> None:
        with (self.workdir / "playbooks.log").open("a") as log:
            log.write(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}")

    def run_playbook(
        self, name: str, *args: str, timeout: float = 1500
    ) -> subprocess.CompletedProcess[str]:
        """Run ansible/<name> against the fleet over SSH, whatever its outcome (logged)."""
        argv = [str(BIN / "ansible-playbook"), "--inventory", str(self.inventory),
                "--vault-password-file", str(self.vault_password),
                str(ANSIBLE_DIR / name), *args]  # fmt: skip
        result = subprocess.run(
            argv, cwd=ANSIBLE_DIR, env=self.ansible_env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        self._log(argv, result)
        return result

    def run_make(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """ControlFiles.run_make, logged with the fleet's playbooks."""
        result = super().run_make(*args, timeout=timeout)
        self._log(["make", *args], result)
        return result

    def playbook(self, name: str, *args: str, timeout: float = 1500) -> Recap:
        """Run ansible/<name> against the fleet over SSH; the recap summed over every host."""
        result = self.run_playbook(name, *args, timeout=timeout)
        return self._recap(result, f"ansible-playbook {name} {' '.join(args)}")

    def make(self, *args: str, timeout: float = 1800) -> Recap:
        """`run_make` that must succeed; the recap of its playbook summed over every host."""
        return self._recap(self.run_make(*args, timeout=timeout), f"make {' '.join(args)}")

    def _recap(self, result: subprocess.CompletedProcess[str], command: str) -> Recap:
        output = result.stdout + result.stderr
        totals = [0, 0, 0, 0]
        recaps = 0
        for line in result.stdout.split("PLAY RECAP", 1)[-1].splitlines():
            fields = dict(
                part.split("=", 1) for part in line.partition(":")[2].split() if "=" in part
            )
            if "ok" in fields:
                recaps += 1
                for i, key in enumerate(("ok", "changed", "unreachable", "failed")):
                    totals[i] += int(fields[key])
        if result.returncode != 0 or recaps == 0:
            raise AssertionError(
                f"{command} failed ({result.returncode}):\n"
                f"{output[-8000:]}\n{self.troubled_containers()}"
            )
        return Recap(*totals, output=output)

    def troubled_containers(self, lines: int = 40) -> str:
        """Each group host's containers (outsiders run no engine) that are unhealthy, restarting
        or exited non-zero, with their last log lines: what a failed playbook's output does not
        show (compose says only "container ... is unhealthy")."""
        script = (
            "docker ps --all --format '{{.Names}}\t{{.Status}}' 2>/dev/null | "
            "grep -E 'unhealthy|Restarting|Exited \\([1-9]' | while IFS=$'\\t' read -r c s; do "
            f'echo "--- $c ($s)"; docker logs --tail {lines} "$c" 2>&1; done'
        )
        report = []
        for host in dict.fromkeys(name for members in self.groups.values() for name in members):
            found = self.sh(host, script, check=False, timeout=60).stdout.strip()
            if found:
                report.append(f"=== {host}\n{found}")
        return "\n".join(report) or "(no host has an unhealthy, restarting or failed container)"


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 for the fleet's network that overlaps no Docker network and no route of this
    machine: fixed addresses need a subnet given by hand. Outside Docker's default pools
    (172.17-31.0.0/16, 192.168.0.0/16), so a network Docker allocates later will not take it."""
    taken = [
        ipaddress.ip_network(config["Subnet"])
        for network in docker.from_env().networks.list(greedy=True)
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []
        if "Subnet" in config
    ]
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True)
    taken += [
        ipaddress.ip_network(line.split()[0], strict=False)
        for line in routes.stdout.splitlines()
        if line.split()[0][0].isdigit()
    ]
    first = os.getpid() % 256
    for n in range(256):
        candidate = ipaddress.ip_network(f"10.213.{(first + n) % 256}.0/24")
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise AssertionError("no free /24 in 10.213.0.0/16 for the fleet's network")
