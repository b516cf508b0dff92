"""Session-wide housekeeping for the Docker-backed suites.

Every stack a test run starts is a compose project named after the pytest process
(`pgstack-t<pid>-...`, `pgstack-bk-<pid>-...`, `pgstack-deploy-<pid>...`, `pgstack-ha-t<pid>-...`)
and is removed when the run ends. A run that was killed cannot remove its own: its stacks keep
restarting with the engine, hold networks from Docker's default address pools (about 30, two per
stack) and load the CPU. They are removed before the first stack of the next run starts.

At the end, the time each test module took (setup, calls and teardown summed, module fixtures
included): what to look at when the suite grows towards CI's limit.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import defaultdict

import pytest

STALE = re.compile(r"^pgstack-(?:t|bk-|deploy-|ha-t)(\d+)(?:-|$)")
_module_seconds: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _module_seconds[report.nodeid.split("::", 1)[0]] += report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    slow = sorted(_module_seconds.items(), key=lambda item: -item[1])
    if not slow or slow[0][1] < 60:
        return
    terminalreporter.section("time per test module")
    for module, seconds in slow[:20]:
        terminalreporter.write_line(f"{seconds / 60:6.1f} min  {module}")


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


@pytest.fixture(scope="session", autouse=True)
def stale_test_stacks(request: pytest.FixtureRequest) -> None:
    engine_needed = ("stack", "deploy", "ha")
    if not any(item.get_closest_marker(m) for item in request.session.items for m in engine_needed):
        return  # unit tests only: no engine needed
    listed = subprocess.run(
        ["docker", "ps", "--all", "--format", '{{.Label "com.docker.compose.project"}}'],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    projects = {
        name
        for name in listed.stdout.split()
        if (match := STALE.match(name)) and not _alive(int(match.group(1)))
    }
    for project in sorted(projects):
        print(f"removing {project}, left by a test run that was killed")
        _remove(project)


def _remove(project: str) -> None:
    """By label, not `compose down`: that needs the project's files, which the run took away."""
    label = f"label=com.docker.compose.project={project}"
    listings = {
        "container": ["docker", "container", "ls", "--all", "--quiet", "--filter", label],
        "network": ["docker", "network", "ls", "--quiet", "--filter", label],
        "volume": ["docker", "volume", "ls", "--quiet", "--filter", label],
    }
    removals = {"container": ["rm", "--force"], "network": ["rm"], "volume": ["rm", "--force"]}
    for kind, listing in listings.items():
        ids = subprocess.run(listing, capture_output=True, text=True, check=False).stdout.split()
        if ids:
            subprocess.run(["docker", kind, *removals[kind], *ids], capture_output=True)
