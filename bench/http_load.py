"""HTTP load with wrk, always on 127.0.0.1, and its parsing.

wrk runs in a container either on the host network (the published port, through Docker's
userland proxy: the stack as an operator reaches it) or inside the network namespace of the
container under test (its own loopback: the server alone, without the proxy's copy of every
byte, which costs about as much CPU per request as a bare Starlette app does).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import docker

from tests.stack.compose import IMAGE_TAG

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass(frozen=True)
class LoadResult:
    name: str
    connections: int
    seconds: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors (connect/read/write/timeout) + non-2xx/3xx responses

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _ms(value: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", value.strip())
    if not match:
        raise ValueError(f"unparsable wrk duration {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(name: str, connections: int, seconds: int, output: str) -> LoadResult:
    """Turn `wrk --latency` output into numbers; raises if wrk printed no summary."""
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if not (rps and total and p50 and p99):
        raise RuntimeError(f"wrk printed no summary:\n{output}")
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return LoadResult(
        name=name,
        connections=connections,
        seconds=seconds,
        requests_per_s=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        requests=int(total.group(1)),
        errors=errors,
    )


def post_script(path: str, body: str) -> str:
    """A wrk Lua script that POSTs `body` as JSON to `path`."""
    return (
        'wrk.method = "POST"\n'
        f"wrk.path = {json.dumps(path)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )


def wrk(
    name: str,
    url: str,
    *,
    connections: int = 64,
    seconds: int = 15,
    threads: int = 2,
    script: str | None = None,
    inside: str | None = None,
) -> LoadResult:
    """Run wrk from the loadgen image against a URL on 127.0.0.1: the host's, or with `inside`
    (a container's name) that container's own loopback."""
    client = docker.from_env()
    args = ["--latency", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s"]
    with tempfile.TemporaryDirectory(prefix="pgstack-wrk-") as scripts:
        volumes = {}
        if script is not None:
            Path(scripts, "request.lua").write_text(script)
            os.chmod(scripts, 0o755)  # noqa: S103 -- read by the loadgen's non-root user
            volumes = {scripts: {"bind": "/scripts", "mode": "ro"}}
            args += ["-s", "/scripts/request.lua"]
        output = client.containers.run(
            f"pgstack-loadgen:{IMAGE_TAG}",
            [*args, url],
            network_mode="host" if inside is None else f"container:{inside}",
            volumes=volumes,
            remove=True,
            stderr=True,
        ).decode()
    return parse_wrk(name, connections, seconds, output)


def median(samples: list[LoadResult]) -> LoadResult:
    """The round with the median request rate (its latencies and errors come with it), with
    errors summed over all rounds so that none is hidden."""
    ordered = sorted(samples, key=lambda r: r.requests_per_s)
    middle = ordered[len(ordered) // 2]
    return replace(middle, errors=sum(r.errors for r in samples),
                   requests=sum(r.requests for r in samples))  # fmt: skip
