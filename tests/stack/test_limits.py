"""Memory and process limits: every service has them, and an API worker that pushes the API
container past its memory limit is killed by the kernel and replaced by uvicorn's supervisor
while the other workers keep serving."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.stack.compose import Stack

# Small enough that a few dozen held request bodies (1 MiB each, the body limit) exceed it.
API_MEMORY = "300m"
MAX_HELD = 400  # bodies; bounded whatever happens
CATCH_UP_S = 30  # seconds for the workers to read what was sent
SERVICES = ("postgres", "pgbouncer", "migrate", "api", "backup")


def test_every_service_has_a_memory_and_a_pid_limit(stack: Stack) -> None:
    for service in SERVICES:
        found = stack.client.containers.list(
            all=True, filters={"label": [f"com.docker.compose.project={stack.project}",
                                         f"com.docker.compose.service={service}"]},
        )  # fmt: skip
        assert found, service
        host = found[0].attrs["HostConfig"]
        assert host["Memory"] > 0, service
        assert host["PidsLimit"] and host["PidsLimit"] > 0, service


@pytest.fixture(scope="module")
def small_stack(stack_factory: Callable[[str], Stack]) -> Iterator[Stack]:
    stack = stack_factory("limits")
    stack.overrides["PGSTACK_API_MEMORY"] = API_MEMORY
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def _workers(stack: Stack) -> set[int]:
    top = stack.container("api").top(ps_args="-o pid,args")
    return {int(row[0]) for row in top["Processes"] if "spawn_main" in row[1]}


def _memory_cgroup(stack: Stack) -> Path:
    cid = stack.container("api").id
    for path in (
        Path(f"/sys/fs/cgroup/memory/docker/{cid}"),  # cgroup v1, cgroupfs
        Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope"),  # v2, systemd
        Path(f"/sys/fs/cgroup/docker/{cid}"),  # v2, cgroupfs
    ):
        if path.is_dir():
            return path
    raise AssertionError("no memory cgroup for the api container")


def _oom_kills(stack: Stack) -> int:
    cgroup = _memory_cgroup(stack)
    events = cgroup / "memory.oom_control"  # v1
    if not events.exists():
        events = cgroup / "memory.events"  # v2
    for line in events.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill":
            return int(value)
    raise AssertionError(f"no oom_kill count in {events}")


def _memory_used(stack: Stack) -> str:
    cgroup = _memory_cgroup(stack)
    for name in ("memory.usage_in_bytes", "memory.current"):  # v1, v2
        if (cgroup / name).exists():
            return f"{int((cgroup / name).read_text()) // 2**20} MiB"
    return "unknown"


def _hold_body(port: int) -> socket.socket:
    """A POST whose 1 MiB body is sent but for its last bytes: the worker holds it in memory
    once it has read it. sendall() returns as soon as the kernel's buffers have the bytes, so
    the worker may read them a while later."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    size = 1024 * 1024
    sock.sendall(
        b"POST /api/products HTTP/1.1\r\nHost: pgstack\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {size}\r\n\r\n".encode()
        + b" " * (size - 16)
    )
    return sock


@pytest.mark.chaos
def test_a_worker_over_the_memory_limit_is_replaced_while_the_others_keep_serving(
    small_stack: Stack,
) -> None:
    stack = small_stack
    before, kills_before = _workers(stack), _oom_kills(stack)
    assert len(before) == 3, before
    started_at = stack.container("api").attrs["State"]["StartedAt"]

    served: list[tuple[float, bool]] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=stack.base_url, timeout=5) as http:
            while not stop.is_set():
                try:
                    ok = http.get("/livez").status_code == 200
                except httpx.HTTPError:
                    ok = False
                served.append((time.monotonic(), ok))
                time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    held: list[socket.socket] = []
    killed_at = None
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            while len(held) < MAX_HELD and killed_at is None:
                held += pool.map(lambda _: _hold_body(stack.http_port), range(8))
                if _oom_kills(stack) > kills_before:
                    killed_at = time.monotonic()
        # On a busy machine the test can send faster than the workers read: the bodies wait in
        # socket buffers, outside the container's memory, and the kill comes once they catch up.
        caught_up_by = time.monotonic() + CATCH_UP_S
        while killed_at is None and time.monotonic() < caught_up_by:
            time.sleep(0.1)
            if _oom_kills(stack) > kills_before:
                killed_at = time.monotonic()
        assert killed_at is not None, (
            f"no OOM kill {CATCH_UP_S} s after {len(held)} held bodies; the API container "
            f"uses {_memory_used(stack)} of {API_MEMORY}"
        )
    finally:
        for sock in held:
            sock.close()
        time.sleep(3)
        stop.set()
        prober.join()

    deadline = time.monotonic() + 60
    while len(after := _workers(stack)) != 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(after) == 3, after
    assert after - before, "no new worker replaced the killed one"
    assert len(before & after) >= 1, "the surviving workers were replaced too"
    stack.container("api").reload()
    assert stack.container("api").attrs["State"]["StartedAt"] == started_at, "container restarted"
    assert stack.container("api").attrs["State"]["Running"]
    # The others kept serving: answers within a second of the kill, and hardly any failure.
    assert any(ok and abs(t - killed_at) < 1.0 for t, ok in served), served[-20:]
    assert sum(not ok for _, ok in served) <= 3, [s for s in served if not s[1]]
    with stack.http() as http:
        assert http.get("/readyz").status_code == 200
