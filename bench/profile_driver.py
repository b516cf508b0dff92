"""Inside the profiling container: the cost of one request in the server process, counted.

Starts one uvicorn process (the API or bench/bare_app.py, the image's server settings, one
worker) under callgrind or cProfile, warms it up, then sends a fixed number of requests per
endpoint from a client outside the measured process and reads the server's cost for exactly
those requests: callgrind's instruction count (deterministic: other work on the machine does not
change it), or a cProfile table of where the time went. Prints one JSON object on stdout.

Run by bench/instructions.py (`python -m bench.instructions`); by hand, in that container:
    python3 profile_driver.py callgrind api /livez /api/products/1
    python3 profile_driver.py cprofile api /livez
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import pstats
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PORT = 8000
CONNECTIONS = 16
OUT = Path(os.environ.get("PROFILE_OUT", "/tmp/profile"))  # noqa: S108 -- the container's tmpfs
# The image's server settings (services/api/Dockerfile), with one worker: the measured process.
SERVER = ["--workers", "1", "--host", "127.0.0.1", "--port", str(PORT), "--loop", "uvloop",
          "--http", "httptools", "--no-access-log", "--no-server-header"]  # fmt: skip
APPS = {
    "api": ["pgstack_api.app:create_app", "--factory"],
    "bare": ["bare_app:app", "--app-dir", str(Path(__file__).parent)],
}


def _request(spec: str) -> bytes:
    """'GET /path' or 'POST /path {json}' -> the raw HTTP/1.1 request (keep-alive)."""
    method, _, rest = spec.partition(" ") if " " in spec else ("GET", "", spec)
    path, _, body = rest.partition(" ")
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: pgstack-profile\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n" + body).encode()


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def _load(spec: str, total: int) -> dict[int, int]:
    """`total` requests over CONNECTIONS keep-alive connections; counts by status."""
    request = _request(spec)
    statuses: dict[int, int] = {}
    remaining = [total]

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        while remaining[0] > 0:
            remaining[0] -= 1
            writer.write(request)
            status = await _read_response(reader)
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    await asyncio.gather(*(one_connection() for _ in range(CONNECTIONS)))
    return statuses


def _wait_up(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/livez", timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _callgrind_total(pid: int, label: str) -> int:
    """Dump callgrind's counters since the last zeroing; the instruction total."""
    before = set(glob.glob(str(OUT / f"callgrind.out.{pid}*")))
    subprocess.run(["callgrind_control", "--dump=" + label, str(pid)], check=True,
                   capture_output=True)  # fmt: skip
    for _ in range(100):
        new = set(glob.glob(str(OUT / f"callgrind.out.{pid}*"))) - before
        if new:
            path = new.pop()
            time.sleep(0.2)  # let the dump finish writing
            for line in Path(path).read_text().splitlines():
                if line.startswith(("totals:", "summary:")):
                    return int(line.split()[1])
        time.sleep(0.1)
    raise RuntimeError(f"callgrind wrote no dump for {label}")


def run(mode: str, app: str, specs: list[str], requests: int, warmup: int) -> dict[str, object]:
    OUT.mkdir(parents=True, exist_ok=True)
    server = [sys.executable, "-m", "uvicorn", *APPS[app], *SERVER]
    env = dict(os.environ)
    if mode == "callgrind":
        server = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={OUT}/callgrind.out.%p",
                  "--dump-instr=no", *server]  # fmt: skip
    else:
        env["PROFILE_CPROFILE_DIR"] = str(OUT)
        server = [sys.executable, str(Path(__file__).parent / "profile_cprofile.py"), *server[3:]]
    # The access log goes where a container's stdout goes: a pipe someone reads.
    proc = subprocess.Popen(server, env=env, stdout=subprocess.PIPE, stderr=sys.stderr)
    assert proc.stdout is not None
    drain = subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
    results: dict[str, object] = {}
    try:
        _wait_up(300 if mode == "callgrind" else 60)
        for spec in specs:
            statuses = asyncio.run(_load(spec, warmup))
            if mode == "callgrind":
                subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True,
                               capture_output=True)  # fmt: skip
                statuses = asyncio.run(_load(spec, requests))
                total = _callgrind_total(proc.pid, spec)
                results[spec] = {"instructions_per_request": total / requests,
                                 "statuses": statuses}  # fmt: skip
            else:
                os.kill(proc.pid, signal.SIGUSR1)
                time.sleep(0.2)
                statuses = asyncio.run(_load(spec, requests))
                os.kill(proc.pid, signal.SIGUSR2)
                stats = OUT / "cprofile.out"
                for _ in range(100):
                    if stats.exists():
                        break
                    time.sleep(0.1)
                time.sleep(0.3)
                table = _table(stats, requests)
                stats.unlink()
                results[spec] = {"statuses": statuses, "top": table}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        drain.wait(timeout=10)
    return results


def _table(path: Path, requests: int) -> list[str]:
    """The functions with the most own time, per request, as lines a person reads."""
    stats = pstats.Stats(str(path))
    rows = []
    for (file, line, name), (_cc, calls, own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((own, cumulative, calls, f"{Path(file).name}:{line}({name})"))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    lines = [f"own us/request total {total / requests * 1e6:.1f}"]
    lines += [f"{own / requests * 1e6:8.2f} own {cum / requests * 1e6:8.2f} cum "
              f"{calls / requests:6.2f} calls  {where}"
              for own, cum, calls, where in rows[:40]]  # fmt: skip
    return lines


def main() -> int:
    mode, app, *specs = sys.argv[1:]
    requests = int(os.environ.get("PROFILE_REQUESTS", "2000"))
    warmup = int(os.environ.get("PROFILE_WARMUP", "300"))
    print(json.dumps(run(mode, app, specs, requests, warmup)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
