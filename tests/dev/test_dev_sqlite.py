"""`make dev` on SQLite serves the same order flow as the stack: the real make target (its own
venv from the hashed lock, `pgstack-db dev` with reload) on 127.0.0.1, migrated and seeded,
driven over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
API_DIR = REPO / "services" / "api"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("dev")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGSTACK_")}
    env.update(PGSTACK_ALEMBIC_INI=str(API_DIR / "alembic.ini"), PGSTACK_LOG_FORMAT="json")
    database = workdir / "var" / "dev.db"
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(REPO), "dev", f"PORT={port}",
         f"DEV_DATABASE_URL=sqlite+aiosqlite:///{database}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # uvicorn's reloader has children: stop the whole group
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # the first run builds the venv from the lock
        while True:
            if proc.poll() is not None:
                output = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"make dev exited {proc.returncode}:\n{output}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("make dev did not become ready in 180 s")
            time.sleep(0.2)
        assert database.is_file()
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_dev_server_is_migrated_seeded_and_healthy(dev_server: str) -> None:
    health = httpx.get(f"{dev_server}/api/health", timeout=5)
    assert health.status_code == 200, health.text
    assert health.json()["migration"]["at_head"] is True
    products = httpx.get(f"{dev_server}/api/products?limit=100", timeout=5).json()["items"]
    assert len(products) >= 20  # the seed


def test_dev_server_serves_the_order_flow(dev_server: str) -> None:
    with httpx.Client(base_url=dev_server, timeout=10) as client:
        user = client.post("/api/users", json={"email": "dev@example.com", "name": "Dev"})
        assert user.status_code == 201, user.text
        product = client.post(
            "/api/products", json={"sku": "DEV-1", "name": "Widget", "price_cents": 250, "stock": 3}
        )
        assert product.status_code == 201, product.text
        pid, uid = product.json()["id"], user.json()["id"]

        order = client.post(
            "/api/orders", json={"user_id": uid, "items": [{"product_id": pid, "quantity": 2}]}
        )
        assert order.status_code == 201, order.text
        assert order.json()["total_cents"] == 500
        assert client.get(f"/api/orders/{order.json()['id']}").json()["items"][0]["quantity"] == 2

        short = client.post(
            "/api/orders", json={"user_id": uid, "items": [{"product_id": pid, "quantity": 2}]}
        )
        assert short.status_code == 409
        assert short.json()["error"]["code"] == "out_of_stock"
        assert client.get(f"/api/products/{pid}").json()["stock"] == 1

        dup = client.post(
            "/api/products", json={"sku": "DEV-1", "name": "Again", "price_cents": 1, "stock": 1}
        )
        assert dup.status_code == 409
        assert client.get("/api/orders/999999").status_code == 404
