"""An inventory's vault: make a new one, and tell secrets that are public from secrets that are not.

    vault.py new --inventory ansible/inventory/prod --password-file ~/.config/pgstack/prod.pass
    vault.py public --source <repository> < secrets.json

`new` (make vault) writes `group_vars/pgstack/vault.yml`, encrypted as a whole, with a strong
random value for every name in the pgstack role's `pgstack_secret_names`, and the vault's
password to a 0600 file that should live outside the repository. It never overwrites either
file (a copy of the example's vault, which holds nothing of yours, excepted).

`public` (the pgstack role, on the control node, before it changes anything) reads the secrets to
deploy as a JSON object on stdin and prints, as JSON, which of them are public: the example vault's
values (its password is published) or text in any file of the repository. It prints names and
places, never a value.

Runs with the Python that runs Ansible (it imports ansible's vault code).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import yaml
from ansible.parsing.vault import VaultLib, VaultSecret

REPO = Path(__file__).resolve().parents[2]
ROLE_DEFAULTS = REPO / "ansible" / "roles" / "pgstack" / "defaults" / "main.yml"
VAULT_IN_INVENTORY = Path("group_vars") / "pgstack" / "vault.yml"
# The example inventory's vault and its password, published in ansible/README.md: every value in
# it is public.
EXAMPLE_VAULT = Path("ansible") / "inventory" / "example" / VAULT_IN_INVENTORY
EXAMPLE_VAULT_PASSWORD = "pgstack-example-vault"  # noqa: S105 (public on purpose)
# Each inventory variable is vault_pgstack_<name>; group_vars/pgstack/vars.yml maps them into
# pgstack_secrets (the example inventory shows how).
VAR_PREFIX = "vault_pgstack_"
EXIT_REFUSED = 3


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


def _secret_names() -> list[str]:
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text())
    return [str(name) for name in defaults["pgstack_secret_names"]]


def _refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_REFUSED)


# ---- new -----------------------------------------------------------------------------------


def new(inventory: Path, password_file: Path) -> None:
    """Write a fresh vault for the inventory and its password file; overwrite neither."""
    vault_file = inventory / VAULT_IN_INVENTORY
    example = REPO / EXAMPLE_VAULT
    if vault_file.exists() and vault_file.read_bytes() != example.read_bytes():
        _refuse(
            f"{vault_file} exists; it is not overwritten (your deploys' secrets may be in it). "
            "To change one secret, see ansible/README.md 'Rotate a secret'; to start over, "
            "move it away first."
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
    password = secrets.token_urlsafe(32)
    # 32 random bytes each, URL-safe (no quoting anywhere): 43 characters.
    values = {f"{VAR_PREFIX}{name}": secrets.token_urlsafe(32) for name in _secret_names()}
    plain = "---\n# Made by `make vault`; open with ansible-vault view.\n" + yaml.safe_dump(values)
    encrypted = _vault(password).encrypt(plain).decode()
    password_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: never over a file that appeared meanwhile; 0600 from the start.
    with os.fdopen(os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(password + "\n")
    vault_file.parent.mkdir(parents=True, exist_ok=True)
    vault_file.write_text(encrypted)
    print(f"wrote {vault_file}: {len(values)} secrets, encrypted ({', '.join(values)})")
    print(
        f"wrote {password_file} (0600): the vault's password. Keep it, and a copy off this machine"
    )
    print("(without it the vault, and backup_repo2_cipher_pass with it, cannot be read).")
    mapping = inventory / "group_vars" / "pgstack" / "vars.yml"
    if not mapping.is_file() or VAR_PREFIX not in mapping.read_text():
        print(
            f"note: {mapping} does not map the {VAR_PREFIX}* variables into pgstack_secrets yet; "
            f"copy that mapping from {REPO / EXAMPLE_VAULT.parent / 'vars.yml'}."
        )


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


def public(source: Path, given: dict[str, str]) -> list[dict[str, str]]:
    """Which of the given secrets are public, and where they were found (never the value)."""
    found: list[dict[str, str]] = []
    example = source / EXAMPLE_VAULT
    published: dict[str, str] = {}
    if example.is_file():
        published = _load(example.read_text(), _vault(EXAMPLE_VAULT_PASSWORD))
    example_values = set(published.values())
    texts = []
    for path in _tracked(source):
        try:
            texts.append((path.relative_to(source), path.read_text(errors="ignore")))
        except OSError:
            continue
    for name, value in sorted(given.items()):
        if not value:
            continue  # the role's other check names empty secrets
        if value in example_values:
            found.append(
                {
                    "name": name,
                    "where": f"the example vault {EXAMPLE_VAULT}, whose password is published",
                }
            )
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
