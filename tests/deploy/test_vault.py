"""`make vault` on a fresh inventory, and the roles' refusal of public secrets, on the control node,
for both layouts: the single VM (group pgstack) and the cluster (group pgstack_db).

The role's variable checks run in a one-task playbook against local-connection hosts: no target
is needed to tell a usable vault from a public one (test_deploy.py and test_ops.py refuse the
example vault on a real target too). The last test here refuses the cluster example's on the
single-VM modules' shared host while nothing has touched it yet (conftest.py runs this module
first on it).
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.vault import VaultLib, VaultSecret

from tests.deploy.target import (
    ANSIBLE_DIR,
    BIN,
    EXAMPLE_VAULT_PASSWORD,
    REPO,
    Target,
    load_vault_script,
)

VENV = Path(sys.prefix)
# Each layout's group (also its role) and its example inventory.
EXAMPLES = {"pgstack": "example", "pgstack_db": "cluster-example"}
_CHECK_PLAY = """\
- name: Check the variables and secrets, as site.yml and cluster.yml do before any role
  hosts: {group}
  gather_facts: false
  tasks:
    - name: Run the role's variable checks
      ansible.builtin.include_role:
        name: {group}
        tasks_from: assert.yml
"""


def _secret_names(group: str = "pgstack", *, vault: bool = True) -> list[str]:
    """The names in the group's vault (the cluster's also holds its API tier's), or only the
    group's role's (vault=False)."""
    names: list[str] = []
    roles = (group, "pgstack_api") if vault and group == "pgstack_db" else (group,)
    for role in roles:
        defaults = yaml.safe_load((ANSIBLE_DIR / f"roles/{role}/defaults/main.yml").read_text())
        names += [str(n) for n in defaults[f"{role}_secret_names"] if str(n) not in names]
    return names


def _example_vault(group: str) -> Path:
    return ANSIBLE_DIR / "inventory" / EXAMPLES[group] / "group_vars" / group / "vault.yml"


def _example_values(group: str = "pgstack") -> list[str]:
    """An example vault's values, decrypted with its published password (value by value)."""
    vault = VaultLib([("default", VaultSecret(EXAMPLE_VAULT_PASSWORD.encode()))])
    blocks = _example_vault(group).read_text().split("!vault |")[1:]
    values = [vault.decrypt("\n".join(row.strip() for row in b.splitlines() if row.startswith(" ")))
              for b in blocks]  # fmt: skip
    assert len(values) == len(_secret_names(group))
    return [value.decode() for value in values]


def _view(vault_file: Path, password_file: Path) -> dict[str, str]:
    shown = subprocess.run(
        [str(BIN / "ansible-vault"), "view", "--vault-password-file", str(password_file),
         str(vault_file)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return dict(yaml.safe_load(shown))


def _make_vault(inventory: Path, password_file: Path) -> subprocess.CompletedProcess[str]:
    # The venv running these tests is the tools venv; -o: make must not reinstall it.
    return subprocess.run(
        ["make", "vault", f"INVENTORY={inventory}", f"VAULT_PASSWORD_FILE={password_file}",
         f"TEST_VENV={VENV}", "-o", f"{VENV}/.installed"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _role_checks(
    tmp_path: Path, group_vars: Path, password_file: Path, *extra: str, group: str = "pgstack"
) -> subprocess.CompletedProcess[str]:
    """The assert.yml of the role of `group` for local hosts whose group_vars are `group_vars`:
    one host for the single VM, three (with their addresses) for the cluster."""
    inventory = tmp_path / "checked"
    inventory.mkdir(exist_ok=True)
    if not (inventory / "group_vars").exists():
        (inventory / "group_vars").symlink_to(group_vars)
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    if group == "pgstack":
        hosts = {"control": local}
    else:
        hosts = {f"db{n}": {**local, "pgstack_address": f"10.0.0.1{n}"} for n in (1, 2, 3)}
    (inventory / "hosts.yml").write_text(json.dumps({group: {"hosts": hosts}}))
    play = tmp_path / "play" / "check.yml"
    play.parent.mkdir(exist_ok=True)
    play.write_text(_CHECK_PLAY.format(group=group))
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(ANSIBLE_DIR / "roles"),
        ANSIBLE_NOCOLOR="1",
    )
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "--inventory", str(inventory / "hosts.yml"),
         "--vault-password-file", str(password_file), str(play),
         "--extra-vars", "pgstack_images_archive=/unused.tar",
         "--extra-vars", "pgstack_db_images_archive=/unused.tar",
         "--extra-vars", f"pgstack_source_dir={REPO}", *extra],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture
def made(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh inventory (the example's vars.yml, no vault) and `make vault` run into it."""
    inventory = tmp_path / "inventory" / "prod"
    (inventory / "group_vars" / "pgstack").mkdir(parents=True)
    example = ANSIBLE_DIR / "inventory" / "example" / "group_vars" / "pgstack" / "vars.yml"
    (inventory / "group_vars" / "pgstack" / "vars.yml").write_text(example.read_text())
    password_file = tmp_path / "home" / "prod.vault-pass"
    result = _make_vault(inventory, password_file)
    assert result.returncode == 0, result.stdout + result.stderr
    return inventory, password_file


def _fresh_vault(inventory: Path, password_file: Path, group: str) -> dict[str, str]:
    """The vault `make vault` wrote for `group`, checked: encrypted as a whole, its password file
    private, a strong value of its own for every secret the role names."""
    vault_file = inventory / "group_vars" / group / "vault.yml"
    assert vault_file.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    values = _view(vault_file, password_file)
    assert sorted(values) == sorted(f"vault_pgstack_{name}" for name in _secret_names(group))
    assert all(len(value) >= 40 for value in values.values())
    assert len(set(values.values())) == len(values), "every secret is its own random value"
    return values


def test_make_vault_writes_an_encrypted_vault_and_a_private_password_file(
    made: tuple[Path, Path],
) -> None:
    _fresh_vault(*made, "pgstack")


def test_the_role_accepts_the_secrets_make_vault_made(
    made: tuple[Path, Path], tmp_path: Path
) -> None:
    inventory, password_file = made
    result = _role_checks(tmp_path, inventory / "group_vars", password_file)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_make_vault_run_twice_refuses_to_overwrite_anything(made: tuple[Path, Path]) -> None:
    inventory, password_file = made
    vault_file = inventory / "group_vars" / "pgstack" / "vault.yml"
    before = (vault_file.read_bytes(), password_file.read_bytes())
    again = _make_vault(inventory, password_file)
    assert again.returncode != 0 and "is not overwritten" in again.stderr, again.stderr
    other_password = password_file.with_name("other.vault-pass")
    again = _make_vault(inventory, other_password)
    assert again.returncode != 0 and f"{vault_file} exists" in again.stderr, again.stderr
    assert not other_password.exists()
    assert (vault_file.read_bytes(), password_file.read_bytes()) == before


@pytest.mark.parametrize("group", list(EXAMPLES))
def test_the_role_refuses_its_example_vault_naming_each_secret_not_its_value(
    tmp_path: Path, group: str
) -> None:
    password_file = tmp_path / "example-pass"
    password_file.write_text(EXAMPLE_VAULT_PASSWORD + "\n")
    group_vars = ANSIBLE_DIR / "inventory" / EXAMPLES[group] / "group_vars"
    result = _role_checks(tmp_path, group_vars, password_file, group=group)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "Refusing to deploy public secrets" in output and "make vault" in output, output
    assert f"inventory/{EXAMPLES[group]}/group_vars/{group}/vault.yml" in output
    assert all(name in output for name in _secret_names(group, vault=False))
    for value in _example_values(group):
        assert value not in output, "a secret's value was printed"


def test_the_role_refuses_a_secret_whose_value_is_text_in_the_repository(
    made: tuple[Path, Path], tmp_path: Path
) -> None:
    inventory, password_file = made
    # A value from a tracked file: long enough, not a placeholder, and public all the same.
    planted = "The whole suite: unit tests, the real stack"
    assert planted in (REPO / "Makefile").read_text()
    result = _role_checks(
        tmp_path, inventory / "group_vars", password_file,
        "--extra-vars", json.dumps({"vault_pgstack_ops_token": planted}),
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "ops_token (found in the repository's file Makefile)" in " ".join(output.split())
    assert "app_password" not in output.split("Refusing", 1)[1].split("PLAY RECAP")[0]


# ---- the cluster layout (group pgstack_db) ---------------------------------------------------


@pytest.fixture
def cluster_made(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the cluster example inventory, its public vault included, and `make vault`."""
    inventory = tmp_path / "inventory" / "prod-cluster"
    shutil.copytree(ANSIBLE_DIR / "inventory" / "cluster-example", inventory)
    password_file = tmp_path / "home" / "prod-cluster.vault-pass"
    result = _make_vault(inventory / "hosts.yml", password_file)
    assert result.returncode == 0, result.stdout + result.stderr
    return inventory, password_file


def test_make_vault_replaces_a_copied_cluster_example_vault_with_the_cluster_secrets(
    cluster_made: tuple[Path, Path],
) -> None:
    inventory, password_file = cluster_made
    values = _fresh_vault(inventory, password_file, "pgstack_db")
    assert not set(values.values()) & set(_example_values("pgstack_db"))
    assert not (inventory / "group_vars" / "pgstack").exists(), "no single-VM vault uninvited"


def test_make_vault_writes_each_layouts_vault_under_one_password(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory" / "both"
    for group, example in EXAMPLES.items():
        source = ANSIBLE_DIR / "inventory" / example / "group_vars" / group / "vars.yml"
        (inventory / "group_vars" / group).mkdir(parents=True)
        shutil.copy(source, inventory / "group_vars" / group / "vars.yml")
    password_file = tmp_path / "home" / "both.vault-pass"
    result = _make_vault(inventory, password_file)
    assert result.returncode == 0, result.stdout + result.stderr
    for group in EXAMPLES:
        values = _view(inventory / "group_vars" / group / "vault.yml", password_file)
        assert sorted(values) == sorted(f"vault_pgstack_{n}" for n in _secret_names(group))


def test_make_vault_leaves_no_file_behind_when_a_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that fills up after the first vault, simulated (these tests run as root, so no
    directory can be made unwritable): the run fails, every file is as it was -- the copied
    example vault included --, and the next run succeeds instead of refusing the password file."""
    inventory = tmp_path / "inventory" / "both"
    for group, example in EXAMPLES.items():
        source = ANSIBLE_DIR / "inventory" / example / "group_vars" / group / "vars.yml"
        (inventory / "group_vars" / group).mkdir(parents=True)
        shutil.copy(source, inventory / "group_vars" / group / "vars.yml")
    copied_example = inventory / "group_vars" / "pgstack" / "vault.yml"
    shutil.copy(_example_vault("pgstack"), copied_example)
    password_file = tmp_path / "home" / "both.vault-pass"
    write_text = Path.write_text

    def disk_full_at_the_cluster_vault(path: Path, *args: Any, **kwargs: Any) -> int:
        if path == inventory / "group_vars" / "pgstack_db" / "vault.yml":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full_at_the_cluster_vault)
    with pytest.raises(SystemExit):
        load_vault_script().new(inventory, password_file)
    monkeypatch.undo()
    assert not password_file.exists()
    assert copied_example.read_bytes() == _example_vault("pgstack").read_bytes()
    assert not (inventory / "group_vars" / "pgstack_db" / "vault.yml").exists()
    result = _make_vault(inventory, password_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _fresh_vault(inventory, password_file, "pgstack_db")


def test_make_vault_refuses_an_inventory_with_no_layout_and_writes_nothing(
    tmp_path: Path,
) -> None:
    inventory = tmp_path / "inventory" / "empty"
    inventory.mkdir(parents=True)
    password_file = tmp_path / "home" / "empty.vault-pass"
    result = _make_vault(inventory, password_file)
    assert result.returncode != 0
    assert "group_vars/pgstack_db/vars.yml" in result.stderr, result.stderr
    assert not password_file.exists() and not any(inventory.iterdir())


def test_make_vault_on_a_cluster_inventory_refuses_to_overwrite_its_vault(
    cluster_made: tuple[Path, Path],
) -> None:
    inventory, password_file = cluster_made
    vault_file = inventory / "group_vars" / "pgstack_db" / "vault.yml"
    before = vault_file.read_bytes()
    other_password = password_file.with_name("other.vault-pass")
    again = _make_vault(inventory, other_password)
    assert again.returncode != 0 and f"{vault_file} exists" in again.stderr, again.stderr
    assert not other_password.exists() and vault_file.read_bytes() == before


def test_vault_public_names_the_cluster_example_vault_for_each_of_its_values() -> None:
    names = _secret_names("pgstack_db")
    given = dict(zip(names, _example_values("pgstack_db"), strict=True))
    given["mine"] = secrets.token_urlsafe(32)  # made now: in no file of the repository
    result = subprocess.run(
        [sys.executable, str(ANSIBLE_DIR / "scripts" / "vault.py"), "public"],
        input=json.dumps(given), capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = json.loads(result.stdout)
    assert sorted(item["name"] for item in found) == sorted(names)
    where = "ansible/inventory/cluster-example/group_vars/pgstack_db/vault.yml"
    assert all(where in item["where"] for item in found)
    assert not any(value in result.stdout for value in given.values())


def test_the_cluster_role_accepts_the_secrets_make_vault_made(
    cluster_made: tuple[Path, Path], tmp_path: Path
) -> None:
    inventory, password_file = cluster_made
    result = _role_checks(tmp_path, inventory / "group_vars", password_file, group="pgstack_db")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def test_cluster_yml_refuses_the_cluster_example_vault_before_a_fresh_host_is_touched(
    target: Target,
) -> None:
    inventory, password = target.cluster_example_inventory()
    for mode in (["--check"], []):
        result = target.run_playbook(
            "cluster.yml", "--extra-vars", "pgstack_db_images_archive=/unused.tar", *mode,
            inventory=inventory, vault_password=password, timeout=300,
        )  # fmt: skip
        output = " ".join((result.stdout + result.stderr).split())
        assert result.returncode != 0, output[-3000:]
        assert "Refusing to deploy public secrets" in output, output[-3000:]
        assert "cluster-example/group_vars/pgstack_db/vault.yml" in output
        assert "make vault INVENTORY=" in output
        recaps = re.findall(r"db\d : ok=\d+ changed=(\d+)", output)
        assert recaps == ["0", "0", "0"], "nothing may change before the refusal"
        for value in _example_values("pgstack_db"):
            assert value not in output, "a secret's value was printed"
    # Neither the docker role nor the cluster's own ran: no engine, no /opt/pgstack-db.
    installed = target.sh("dpkg-query -W -f '${Status}' docker.io || true", check=False)
    assert "install ok installed" not in installed.stdout
    assert target.sh("test -e /opt/pgstack-db", check=False).returncode != 0


_API_CHECK_PLAY = """\
- name: Check the API tier's groups, variables and secrets, as cluster.yml does before any role
  hosts: pgstack_api
  gather_facts: false
  tasks:
    - name: Run the API role's variable checks
      ansible.builtin.include_role:
        name: pgstack_api
        tasks_from: assert.yml
"""


@pytest.mark.parametrize(
    ("api", "edge", "outsider"),
    [(["db1", "db2"], ["db3"], None), (["db1", "web1"], ["db3"], "web1"),
     (["db1", "db2"], ["lb1"], "lb1")],
)  # fmt: skip
def test_the_api_tier_is_checked_before_anything_and_its_hosts_must_be_cluster_members(
    cluster_made: tuple[Path, Path],
    tmp_path: Path,
    api: list[str],
    edge: list[str],
    outsider: str | None,
) -> None:
    """make vault's cluster secrets pass the API role's checks; an API or edge host that is not
    a database host (a typo, or a separate machine, not supported yet) is refused by name."""
    inventory, password_file = cluster_made
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    address = {
        name: f"10.0.0.{n}" for n, name in enumerate(["db1", "db2", "db3", "web1", "lb1"], 11)
    }
    hosts = {
        group: {"hosts": {name: {**local, "pgstack_address": address[name]} for name in names}}
        for group, names in (("pgstack_db", ["db1", "db2", "db3"]), ("pgstack_api", api),
                             ("pgstack_edge", edge))
    }  # fmt: skip
    (inventory / "hosts.yml").write_text(json.dumps(hosts))
    play = tmp_path / "api-check.yml"
    play.write_text(_API_CHECK_PLAY)
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(ANSIBLE_DIR / "roles"),
        ANSIBLE_NOCOLOR="1",
    )
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "--inventory", str(inventory / "hosts.yml"),
         "--vault-password-file", str(password_file), str(play),
         "--extra-vars", "pgstack_db_images_archive=/unused.tar",
         "--extra-vars", f"pgstack_source_dir={REPO}"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = " ".join((result.stdout + result.stderr).split())
    if outsider is None:
        assert result.returncode == 0, output[-3000:]
    else:
        assert result.returncode != 0, output[-3000:]
        assert f"Not members: {outsider}." in output, output[-3000:]
        assert "must also be in group pgstack_db" in output
