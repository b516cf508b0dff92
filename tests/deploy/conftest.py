"""Fixtures for the deploy tests: release images, the single-VM target host, and cleanup.

The images are the stack's own (built once per session, like the stack tests'), tagged with this
run's release tags and saved as `docker save` archives -- the way `make deploy` ships them. A
missing Docker engine is an error, never a skip.

One target host serves the single-VM modules, in an operator's order (SINGLE_VM_MODULES): the
refusals while it is still fresh, the first deploy and releases, the runbook's operations, then a
switch to images built on the host. A fresh host's first converge (Docker's packages, the image
archive) took 217 to 225 s in CI, and each module paid one when it had a host of its own.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from tests.deploy.outsider import Outsider
from tests.deploy.target import Target
from tests.stack.compose import IMAGE_TAG, REPO, build_images, compose_env

HERE = Path(__file__).parent


# The modules that share the `target` host, in the order they run on it: test_vault's last test
# and test_deploy's first ones need a host nothing has touched yet, test_ops continues from
# test_deploy's deployed host, and test_build_on_target replaces its images last.
SINGLE_VM_MODULES = ("test_vault.py", "test_deploy.py", "test_ops.py", "test_build_on_target.py")
SSHD_PORT = 2222
API_PORT = 8000  # the role's pgstack_http_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/deploy/" in str(item.path):
            item.add_marker(pytest.mark.deploy)

    # The shared host's modules, in SINGLE_VM_MODULES order, at the end of this package's tests,
    # so that the host (package scope) is gone before the next package's tests start.
    def shares_the_host(item: pytest.Item) -> bool:
        return item.path.parent == HERE and item.path.name in SINGLE_VM_MODULES

    in_package = [n for n, item in enumerate(items) if HERE in item.path.parents]
    if not in_package:
        return
    end = in_package[-1] + 1
    shared = sorted(  # stable: file order within each module
        (item for item in items[:end] if shares_the_host(item)),
        key=lambda item: SINGLE_VM_MODULES.index(item.path.name),
    )
    items[:] = [item for item in items[:end] if not shares_the_host(item)] + shared + items[end:]


@dataclass(frozen=True)
class Release:
    """One release: a tag for every image the compose file names, saved in one archive."""

    tag: str
    refs: tuple[str, ...]
    archive: Path


def _compose_images(tag: str, secrets: Path) -> list[str]:
    env = compose_env("pgstack-deploy-images", secrets, 0)
    env["PGSTACK_IMAGE_TAG"] = tag
    result = subprocess.run(
        ["docker", "compose", "config", "--images"], cwd=REPO, env=env,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return sorted(set(result.stdout.split()))


@pytest.fixture(scope="session")
def deploy_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="session")
def releases(deploy_workdir: Path) -> Iterator[list[Release]]:
    """Two releases of the same build under different tags: deploying the second replaces every
    container (as a real release does), which is what the re-deploy tests need."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"the deploy tests need a running Docker engine ({exc}); see README 'Tests'")
    secrets = deploy_workdir / "build-secrets"
    subprocess.run(
        [str(REPO / "scripts/secrets.sh"), str(secrets)], check=True, capture_output=True
    )
    build_images(secrets)
    built = _compose_images(IMAGE_TAG, secrets)
    made: list[Release] = []
    try:
        for n in (1, 2):
            tag = f"pgstack-deploy-{os.getpid()}-r{n}"
            refs = tuple(ref.rsplit(":", 1)[0] + ":" + tag for ref in built)
            archive = deploy_workdir / f"images-{tag}.tar"
            made.append(Release(tag, refs, archive))
            for source, ref in zip(built, refs, strict=True):
                client.images.get(source).tag(ref)
            subprocess.run(["docker", "save", "--output", str(archive), *refs], check=True)
        yield made
    finally:
        for release in made:
            release.archive.unlink(missing_ok=True)
            for ref in release.refs:
                # Removes this run's tag; the image stays while other tags or containers use it
                # (force: another session may have moved the tag this image was built under).
                with contextlib.suppress(docker.errors.ImageNotFound):
                    client.images.remove(ref, force=True, noprune=True)


@pytest.fixture(scope="package")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The single-VM modules' host (SINGLE_VM_MODULES), removed with everything in it after
    them. Its sshd listens on 2222, not 22, so the firewall's "SSH stays open" is tested where
    it matters."""
    host = Target(workdir=tmp_path_factory.mktemp("target"), sshd_port=SSHD_PORT)
    try:
        host.create()
        yield host
    finally:
        host.destroy()


@pytest.fixture(scope="module")
def outsider(target: Target) -> Iterator[Outsider]:
    """Another host on the target's network, to ask what the target exposes."""
    host = Outsider.start(target.project, target.tls.ca)
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="module")
def api_only_release(releases: list[Release], deploy_workdir: Path) -> Iterator[Release]:
    """Release 2 again, with a rebuilt API image under the same tag: only api (and migrate)
    change, the way a moving tag ships a code change."""
    base = releases[1]
    api = next(ref for ref in base.refs if ref.startswith("pgstack-api:"))
    env = dict(
        os.environ,
        PGSTACK_DEPLOY_PROJECT=f"pgstack-deploy-{os.getpid()}",
        PGSTACK_DEPLOY_API_IMAGE=api,
        PGSTACK_DEPLOY_CHANGE=f"{os.getpid()}-{time.time_ns()}",
    )
    compose = Path(__file__).parent / "release" / "compose.yml"
    subprocess.run(
        [
            "docker",
            "compose",
            "--project-name",
            env["PGSTACK_DEPLOY_PROJECT"],
            "--file",
            str(compose),
            "build",
            "--quiet",
        ],
        env=env,
        check=True,
    )
    release = Release(base.tag, base.refs, deploy_workdir / f"images-{base.tag}-api.tar")
    try:
        subprocess.run(
            ["docker", "save", "--output", str(release.archive), *release.refs], check=True
        )
        yield release
    finally:
        release.archive.unlink(missing_ok=True)
