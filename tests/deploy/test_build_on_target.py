"""`pgstack_images_source: build`: the host builds the images itself from shipped sources.

The target has no registry either, so the base image travels as a `docker save` archive, and the
CA bundle that lets pip through this machine's TLS-intercepting proxy travels with the sources.
It runs last on the host the single-VM modules share (conftest.py): the deployed stack's loaded
images are replaced by images the host builds, as when an operator switches a running host over.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.target import Target

BASE_IMAGE = os.environ.get("BASE_IMAGE", "debian:trixie-slim")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture(scope="module")
def build_vars(target: Target) -> Iterator[list[str]]:
    base = target.workdir / "base-image.tar"
    sources = target.workdir / "sources.tar"
    subprocess.run(["docker", "save", "--output", str(base), BASE_IMAGE], check=True)
    extra = {
        "pgstack_images_source": "build",
        "pgstack_image_tag": f"pgstack-deploy-{os.getpid()}-built",
        "pgstack_base_image": BASE_IMAGE,
        "pgstack_base_image_archive": str(base),
        "pgstack_build_context_archive": str(sources),
        "pgstack_build_ca_bundle": str(CA_BUNDLE) if CA_BUNDLE.is_file() else "",
    }
    yield [arg for name, value in extra.items() for arg in ("--extra-vars", f"{name}={value}")]
    base.unlink(missing_ok=True)
    sources.unlink(missing_ok=True)


@pytest.mark.timeout(900)
def test_the_host_builds_the_images_and_the_stack_comes_up(
    target: Target, build_vars: list[str]
) -> None:
    started = time.monotonic()
    recap = target.playbook("site.yml", *build_vars)
    print(f"build-on-target converge: {time.monotonic() - started:.0f} s")
    assert recap.failed == 0 and recap.changed > 0
    for name, row in target.services().items():
        expected = ("exited", 0) if name == "migrate" else ("running", "healthy")
        assert (row["State"], row["ExitCode"] if name == "migrate" else row["Health"]) == expected
    target.wait_ready(timeout=30)


@pytest.mark.timeout(300)
def test_a_second_build_run_changes_nothing(target: Target, build_vars: list[str]) -> None:
    recap = target.playbook("site.yml", *build_vars)
    assert recap.changed == 0, f"changed on the second run: {recap.changed_tasks()}"
