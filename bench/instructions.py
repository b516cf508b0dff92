"""What one request costs the API's server process: counted, not timed.

callgrind counts the instructions a uvicorn worker executes for a fixed number of requests
(bench/profile_driver.py, in the API image plus valgrind): the same figure on a busy machine as
on an idle one, where requests per second on a shared 2-core host drift by half between runs.
The API's /livez is set beside a bare Starlette app's, under the same server settings, and a
read by id shows the database path. Writes docs/benchmarks.profile.json, which
docs/benchmarks.md explains. Run: .venv-test/bin/python -m bench.instructions (the PGSTACK_*
knobs as for make bench). Not bench/profile.py: that name would hide the standard library's
`profile`, which cProfile imports, from the driver in the same folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import docker

from bench.__main__ import _seed_product
from tests.stack.compose import IMAGE_TAG, REPO, Stack, build_images

IMAGE = f"pgstack-profile:{IMAGE_TAG}"
# Requests counted per endpoint (valgrind runs Python ~50x slower), after a warm-up.
REQUESTS = {"/livez": 1000, "product": 300}
WARMUP = 200


def _log(message: str) -> None:
    print(f"[profile] {message}", flush=True)


def _driver(stack: Stack, app: str, spec: str, requests: int) -> dict[str, object]:
    """Run the driver for one endpoint in a container beside the stack's api."""
    output = docker.from_env().containers.run(
        IMAGE,
        ["python3", "/bench/profile_driver.py", "callgrind", app, spec],
        environment={
            "PGSTACK_ENV": "production",
            "PGSTACK_DATABASE_URL": "postgresql+psycopg://app@/pgstack?host=/run/pgbouncer&port=6432",
            "PGSTACK_OPS_TOKEN_FILE": "/run/secrets/ops_token",
            "PGSTACK_LOG_FORMAT": "json",
            "PROFILE_REQUESTS": str(requests),
            "PROFILE_WARMUP": str(WARMUP),
        },
        volumes={str(stack.secrets_dir): {"bind": "/run/secrets", "mode": "ro"},
                 f"{stack.project}_pgbouncer-run": {"bind": "/run/pgbouncer", "mode": "rw"},
                 str(REPO / "bench"): {"bind": "/bench", "mode": "ro"}},
        tmpfs={"/run/pgstack-secrets": "", "/tmp": ""},  # noqa: S108 -- the container's tmpfs
        network=f"{stack.project}_backend",
        mem_limit="2g",
        remove=True,
        stderr=False,
    ).decode()  # fmt: skip
    result: dict[str, object] = json.loads(output.strip().splitlines()[-1])[spec]
    return result


def main() -> int:
    secrets_dir = Path(tempfile.mkdtemp(prefix="pgstack-profile-secrets-"))
    subprocess.run(
        [str(REPO / "scripts/secrets.sh"), str(secrets_dir)], check=True, capture_output=True
    )
    _log("building images")
    build_images(secrets_dir)
    docker.from_env().images.build(
        path=str(REPO / "bench/profiler"), tag=IMAGE,
        buildargs={"API_IMAGE": f"pgstack-api:{IMAGE_TAG}"}, rm=True,
    )  # fmt: skip
    stack = Stack(
        project=f"{os.environ.get('COMPOSE_PROJECT_NAME', 'pgstack')}-profile",
        secrets_dir=secrets_dir,
    )
    stack.down()
    stack.up()
    try:
        product = _seed_product(stack.base_url)
        runs = [
            ("bare", "/livez", REQUESTS["/livez"]),
            ("api", "/livez", REQUESTS["/livez"]),
            ("api", f"/api/products/{product}", REQUESTS["product"]),
        ]
        results = []
        for app, spec, requests in runs:
            _log(f"{app} {spec}: {requests} requests under callgrind")
            measured = _driver(stack, app, spec, requests)
            results.append({"app": app, "request": spec, "requests": requests, **measured})
            _log(f"  {measured['instructions_per_request']:,.0f} instructions per request")
    finally:
        stack.down()
    (REPO / "docs/benchmarks.profile.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
