"""An inventory's vaults: make new ones, and tell secrets that are public from secrets that are not.

    vault.py new --inventory ansible/inventory/prod --password-file ~/.config/pgstack/prod.pass
    vault.py public --source <repository> < secrets.json

`new` (make vault) writes a vault for each layout the inventory has -- a layout is there when its
group's `group_vars/<group>/vars.yml` is (LAYOUTS: `pgstack`, the single VM; `pgstack_db`, the
cluster) -- as `group_vars/<group>/vault.yml`, encrypted as a whole, with a strong random value
for every name in that role's `<group>_secret_names` (and its companion roles'); and the vaults'
one password to a 0600 file that should live outside the repository. It never overwrites a vault
or the password file (a copy of the example's vault, which holds nothing of yours, excepted).

`public` (the roles, on the control node, before they change anything) reads the secrets to
deploy as a JSON object on stdin and prints, as JSON, which of them are public: a value of any
layout's example vault (their password is published) or text in any file of the repository. It
prints names and places, never a value.

Runs with the Python that runs Ansible (it imports ansible's vault code).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from ansible.parsing.vault import VaultLib, VaultSecret

REPO = Path(__file__).resolve().parents[2]
# The example inventories' vaults share one password, published in ansible/README.md: every value
# in them is public.
EXAMPLE_VAULT_PASSWORD = "pgstack-example-vault"  # noqa: S105 (public on purpose)
# Each inventory variable is vault_pgstack_<name>, in both layouts; group_vars/<group>/vars.yml
# maps them into <group>_secrets (the example inventories show how).
VAR_PREFIX = "vault_pgstack_"
EXIT_REFUSED = 3


@dataclass(frozen=True)
class Layout:
    """A layout: its inventory group (also the role that deploys it) and its example inventory."""

    group: str
    example: str
    # Other roles deployed by the same inventory group's vault (the cluster's API tier runs on
    # its members and shares the app roles' passwords): their <role>_secret_names too.
    also: tuple[str, ...] = ()

    @property
    def vars_file(self) -> Path:
        """Relative to an inventory: the group's vars, which map the vault into the secrets."""
        return Path("group_vars") / self.group / "vars.yml"

    @property
    def vault_file(self) -> Path:
        return Path("group_vars") / self.group / "vault.yml"

    @property
    def example_inventory(self) -> Path:
        """Relative to the repository."""
        return Path("ansible") / "inventory" / self.example

    def secret_names(self) -> list[str]:
        """Every role's secret names, each once, in the roles' order."""
        names: dict[str, None] = {}
        for role in (self.group, *self.also):
            defaults = REPO / "ansible" / "roles" / role / "defaults" / "main.yml"
            names.update(
                (str(name), None)
                for name in yaml.safe_load(defaults.read_text())[f"{role}_secret_names"]
            )
        return list(names)


LAYOUTS = (
    Layout("pgstack", "example"),
    Layout("pgstack_db", "cluster-example", also=("pgstack_api",)),
)


def _vault(password: str) -> VaultLib:
    return VaultLib([("default", VaultSecret(password.encode()))])


def _load(text: str, vault: VaultLib) -> dict[str, str]:
    """A vars file, encrypted as a whole or value by value (`!vault |`), decrypted."""

    class _Loader(yaml.SafeLoader):
        pass

    def _decrypt(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
        return vault.decrypt(str(loader.construct_scalar(node))).decode()

    _Loader.add_constructor("!vault", _decrypt)
    if VaultLib.is_encrypted(text):
        text = vault.decrypt(text).decode()
    data = yaml.load(text, Loader=_Loader)  # noqa: S506 (SafeLoader plus !vault)
    return {str(key): str(value) for key, value in (data or {}).items()}


def _refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_REFUSED)


# ---- new -----------------------------------------------------------------------------------


def _layouts(inventory: Path) -> list[Layout]:
    """The layouts the inventory has: those whose group's vars.yml it holds."""
    found = [layout for layout in LAYOUTS if (inventory / layout.vars_file).is_file()]
    if not found:
        wanted = " or ".join(f"{layout.vars_file} ({layout.group})" for layout in LAYOUTS)
        _refuse(
            f"{inventory} has no {wanted}, so there is no layout to make a vault for. Copy an "
            "example inventory first (ansible/README.md, 'Layouts'), then run make vault again."
        )
    return found


def _refuse_to_overwrite(inventory: Path, layouts: list[Layout], password_file: Path) -> None:
    for layout in layouts:
        vault_file = inventory / layout.vault_file
        example = REPO / layout.example_inventory / layout.vault_file
        if vault_file.exists() and vault_file.read_bytes() != example.read_bytes():
            _refuse(
                f"{vault_file} exists; it is not overwritten (your deploys' secrets may be in "
                "it). To change one secret, see ansible/README.md 'Rotate a secret'; to start "
                "over, move it away first."
            )
    if password_file.exists():
        _refuse(
            f"{password_file} exists; it is not overwritten (it may open another vault). "
            "Pass another VAULT_PASSWORD_FILE, or move it away first."
        )
    try:
        password_file.resolve().relative_to(REPO)
    except ValueError:
        pass
    else:
        _refuse(f"{password_file} is inside the repository; keep the vault's password outside it")


def new(inventory: Path, password_file: Path) -> None:
    """Write a fresh vault for each of the inventory's layouts, and their one password file;
    overwrite nothing (every file is checked before any is written), and leave nothing behind
    when a write fails (a password file without its vault would make the next run refuse)."""
    layouts = _layouts(inventory)
    _refuse_to_overwrite(inventory, layouts, password_file)
    password = secrets.token_urlsafe(32)
    # Everything is made in memory first, so only a write can fail once writing has started.
    vaults: dict[Path, str] = {}
    notes: list[str] = []
    for layout in layouts:
        # 32 random bytes each, URL-safe (no quoting anywhere): 43 characters.
        names = layout.secret_names()
        values = {f"{VAR_PREFIX}{name}": secrets.token_urlsafe(32) for name in names}
        plain = "---\n# Made by `make vault`; open with ansible-vault view.\n" + yaml.safe_dump(
            values
        )
        vault_file = inventory / layout.vault_file
        vaults[vault_file] = _vault(password).encrypt(plain).decode()
        notes.append(f"wrote {vault_file}: {len(values)} secrets, encrypted ({', '.join(names)})")
        if VAR_PREFIX not in (inventory / layout.vars_file).read_text():
            notes.append(
                f"note: {inventory / layout.vars_file} does not map the {VAR_PREFIX}* variables "
                f"into {layout.group}_secrets yet; copy that mapping from "
                f"{REPO / layout.example_inventory / layout.vars_file}."
            )
    _write_all(password_file, password, vaults)
    print("\n".join(notes))
    print(
        f"wrote {password_file} (0600): the vault's password. Keep it, and a copy off this machine"
    )
    print("(without it the vault, and backup_repo2_cipher_pass with it, cannot be read).")


def _write_all(password_file: Path, password: str, vaults: dict[Path, str]) -> None:
    """The password file, then the vaults; on any failure, every file as it was before."""
    written: list[tuple[Path, bytes | None]] = []  # what this run wrote, and what was there
    try:
        password_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # O_EXCL: never over a file that appeared meanwhile; 0600 from the start.
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        written.append((password_file, None))
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        for vault_file, text in vaults.items():
            # Only a copy of an example vault can be there (_refuse_to_overwrite).
            before = vault_file.read_bytes() if vault_file.exists() else None
            written.append((vault_file, before))
            vault_file.write_text(text)
    except OSError as error:
        for path, before in reversed(written):
            if before is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(before)
        print(f"error: {error}; nothing was written, run make vault again once it is fixed",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(1) from error


# ---- public --------------------------------------------------------------------------------


def _tracked(source: Path) -> list[Path]:
    """The repository's files as git knows them; every file below source outside git."""
    result = subprocess.run(
        ["git", "-C", str(source), "ls-files", "-z"], capture_output=True, check=False
    )
    if result.returncode == 0:
        names = result.stdout.decode().split("\0")
        return [source / name for name in names if name and (source / name).is_file()]
    files: list[Path] = []
    for top, dirs, names in os.walk(source):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .git, .venv-test, ...
        files.extend(Path(top) / name for name in names)
    return files


def _published(source: Path) -> dict[str, Path]:
    """Every value of every layout's example vault, and the vault it is in."""
    published: dict[str, Path] = {}
    for layout in LAYOUTS:
        example = layout.example_inventory / layout.vault_file
        if (source / example).is_file():
            values = _load((source / example).read_text(), _vault(EXAMPLE_VAULT_PASSWORD))
            published.update(dict.fromkeys(values.values(), example))
    return published


def public(source: Path, given: dict[str, str]) -> list[dict[str, str]]:
    """Which of the given secrets are public, and where they were found (never the value)."""
    found: list[dict[str, str]] = []
    published = _published(source)
    texts = []
    for path in _tracked(source):
        try:
            texts.append((path.relative_to(source), path.read_text(errors="ignore")))
        except OSError:
            continue
    for name, value in sorted(given.items()):
        if not value:
            continue  # the role's other check names empty secrets
        if value in published:
            where = f"the example vault {published[value]}, whose password is published"
            found.append({"name": name, "where": where})
            continue
        hit = next((str(rel) for rel, text in texts if value in text), None)
        if hit is not None:
            found.append({"name": name, "where": f"the repository's file {hit}"})
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("new", help="a new vault with random secrets, and its password file")
    make.add_argument("--inventory", type=Path, required=True)
    make.add_argument("--password-file", type=Path, required=True)
    check = sub.add_parser("public", help="secrets (JSON on stdin) that are public, as JSON")
    check.add_argument("--source", type=Path, default=REPO)
    args = parser.parse_args(argv)
    if args.command == "new":
        new(args.inventory, args.password_file.expanduser())
    else:
        given = json.load(sys.stdin)
        print(json.dumps(public(args.source.resolve(), {k: str(v) for k, v in given.items()})))


if __name__ == "__main__":
    main()
