"""Backups and restores on a real stack: round trip row for row, a backup under order load
restores consistently, the API answers 503 (never half-restored data) during a restore, and
damaged backups are reported, refused and not counted."""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.backup.conftest import OFFSITE, BackupStack, events, last_event

TABLES = ("users", "products", "orders", "order_items")


def _rows(stack: BackupStack) -> dict[str, str]:
    return {t: stack.psql(f"SELECT * FROM {t} ORDER BY 1, 2") for t in TABLES}


def _seed(http: httpx.Client, products: int = 5, stock: int = 1000) -> tuple[list[int], list[int]]:
    users = [
        http.post(
            "/api/users", json={"email": f"{uuid.uuid4().hex}@example.test", "name": "B"}
        ).json()["id"]
        for _ in range(3)
    ]
    items = []
    for _ in range(products):
        response = http.post(
            "/api/products",
            json={"sku": f"BK-{uuid.uuid4().hex[:10]}", "name": "item", "price_cents": 100,
                  "stock": stock},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        items.append(response.json()["id"])
    return users, items


def _order(http: httpx.Client, users: list[int], products: list[int]) -> int:
    chosen = random.sample(products, k=random.randint(1, min(3, len(products))))
    return http.post(
        "/api/orders",
        json={"user_id": random.choice(users),
              "items": [{"product_id": p, "quantity": random.randint(1, 3)} for p in chosen]},
    ).status_code  # fmt: skip


class _Poller:
    """GETs a product every 100 ms in a thread, recording (status, body, headers)."""

    def __init__(self, stack: BackupStack, path: str) -> None:
        self.stack, self.path = stack, path
        self.seen: list[tuple[int, dict[str, object], dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.stack.http(timeout=20) as http:
            while not self._stop.is_set():
                response = http.get(self.path)
                body = response.json() if response.content else {}
                self.seen.append((response.status_code, body, dict(response.headers)))
                time.sleep(0.1)

    def __enter__(self) -> _Poller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_round_trip_restores_the_backup_row_for_row_and_the_api_sees_only_503_meanwhile(
    bstack: BackupStack,
) -> None:
    with bstack.http() as http:
        users, products = _seed(http)
        for _ in range(20):
            assert _order(http, users, products) == 201
    made = bstack.make("backup")
    assert made.returncode == 0, made.stdout + made.stderr
    name = last_event(made.stdout, "backup")["backup"]
    before = _rows(bstack)

    with bstack.http() as http:  # change everything the backup holds
        for _ in range(10):
            assert _order(http, users, products) == 201
    bstack.psql("UPDATE products SET name = 'changed'; DELETE FROM users WHERE id NOT IN "
                "(SELECT user_id FROM orders)")  # fmt: skip
    assert _rows(bstack) != before

    refused = bstack.make("restore", f"BACKUP={name}")
    assert refused.returncode != 0 and "CONFIRM=1" in refused.stderr

    with _Poller(bstack, f"/api/products/{products[0]}") as poller:
        restored = bstack.make("restore", f"BACKUP={name}", "CONFIRM=1", timeout=300)
        time.sleep(1)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert _rows(bstack) == before

    statuses = [s for s, _, _ in poller.seen]
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses, "the restore should lock the API out for its duration"
    assert statuses[-1] == 200
    assert "the API was unavailable for" in restored.stdout
    for status, body, headers in poller.seen:
        if status == 503:
            assert body["error"]["code"] == "database_unavailable"  # type: ignore[index]
            assert int(headers["retry-after"]) > 0
    summary = last_event(restored.stdout, "restore")
    assert summary["backup"] == name
    assert summary["safety_backup"].endswith("-pre-restore")
    assert summary["safety_backup"] in bstack.backups()
    # The replaced database is kept for a rollback, and nobody but its owner may connect to it.
    kept = bstack.psql("SELECT datname FROM pg_database WHERE datname LIKE 'pgstack_before_%'")
    assert summary["previous_database"] in kept.split()


def test_a_backup_under_concurrent_order_load_restores_consistently(bstack: BackupStack) -> None:
    with bstack.http() as http:
        users, products = _seed(http, products=4, stock=100_000)
    stop = threading.Event()
    placed: list[int] = []

    def load() -> None:
        with bstack.http(timeout=30) as http:
            while not stop.is_set():
                placed.append(_order(http, users, products))

    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(6):
            pool.submit(load)
        time.sleep(2)
        summary = bstack.backup()
        time.sleep(1)
        stop.set()
    assert placed.count(201) > 20
    orders_after_load = int(bstack.psql("SELECT count(*) FROM orders"))
    in_backup = int(summary["rows"])
    assert in_backup > 0

    restored = bstack.make("restore", f"BACKUP={summary['backup']}", "CONFIRM=1", timeout=300)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    orders_restored = int(bstack.psql("SELECT count(*) FROM orders"))
    assert 0 < orders_restored < orders_after_load, "the dump should fall in the middle of the load"
    ids = ",".join(map(str, products))
    checks = {
        "orders without items": "SELECT count(*) FROM orders o WHERE NOT EXISTS "
        "(SELECT 1 FROM order_items i WHERE i.order_id = o.id)",
        "items without order": "SELECT count(*) FROM order_items i LEFT JOIN orders o "
        "ON o.id = i.order_id WHERE o.id IS NULL",
        "negative stock": "SELECT count(*) FROM products WHERE stock < 0",
        "stock + sold != initial": "SELECT count(*) FROM products p WHERE p.id IN (" + ids + ") "
        "AND p.stock + (SELECT coalesce(sum(quantity), 0) FROM order_items i "
        "WHERE i.product_id = p.id) <> 100000",
        "foreign keys not validated": "SELECT count(*) FROM pg_constraint "
        "WHERE contype = 'f' AND NOT convalidated",
    }
    for what, query in checks.items():
        assert bstack.psql(query) == "0", what
    assert bstack.psql("SELECT count(*) FROM pg_constraint WHERE contype = 'f'") == "3"
    with bstack.http() as http:  # and the API takes orders again
        assert _order(http, users, products) == 201


def test_a_damaged_backup_is_reported_refused_and_not_kept_over_a_valid_one(
    bstack: BackupStack,
) -> None:
    bad = bstack.backup()["backup"]
    dump = f"/var/lib/pgstack-backup/dumps/{bad}/pgstack.dump"
    # Flip one bit in the middle of the archive.
    code, out = bstack.exec("backup", "python3", "-c",
        f"import os; f = open('{dump}', 'r+b'); n = os.path.getsize('{dump}'); f.seek(n // 2); "
        "b = f.read(1); f.seek(n // 2); f.write(bytes([b[0] ^ 0x01])); f.close()")  # fmt: skip
    assert code == 0, out

    verified = bstack.backup_cli("verify", bad)
    assert verified.returncode == 1
    assert "sha256 differs" in last_event(verified.stdout, "verify")["error"]
    listing = bstack.make("backup-list").stdout
    assert any(bad in line and "DAMAGED" in line for line in listing.splitlines()), listing

    before = bstack.psql("SELECT count(*) FROM orders")
    refused = bstack.make("restore", f"BACKUP={bad}", "CONFIRM=1")
    assert refused.returncode != 0
    assert "checksums" in last_event(refused.stdout, "refused")["error"]
    assert bstack.psql("SELECT count(*) FROM orders") == before
    with bstack.http() as http:
        assert http.get("/readyz").status_code == 200

    # The next verified backup's retention removes the damaged one: it never stands in for it.
    truncated = bstack.backup()["backup"]
    assert bad not in bstack.backups()
    path = f"/var/lib/pgstack-backup/dumps/{truncated}/pgstack.dump"
    code, out = bstack.exec("backup", "truncate", "--size=-100", path)
    assert code == 0, out
    verified = bstack.backup_cli("verify", truncated)
    assert verified.returncode == 1
    assert "size" in last_event(verified.stdout, "verify")["error"]
    assert bstack.make("restore", f"BACKUP={truncated}", "CONFIRM=1").returncode != 0

    newest = bstack.backup()["backup"]
    left = bstack.backups()
    assert newest in left and truncated not in left
    assert all(not n.startswith(".partial-") for n in left)


def test_health_is_green_after_a_verified_backup_and_the_list_shows_it(bstack: BackupStack) -> None:
    bstack.backup()
    health = bstack.backup_cli("health")
    assert health.returncode == 0, health.stdout
    bstack.wait_healthy("backup", timeout=30)
    listing = bstack.make("backup-list")
    assert listing.returncode == 0
    assert "verified 20" in listing.stdout
    assert all(e["event"] != "error" for e in events(listing.stdout))


def test_verified_backups_are_copied_off_site_encrypted_and_decrypt_to_the_same_bytes(
    bstack: BackupStack, age_identity: tuple[str, str]
) -> None:
    summary = bstack.backup()
    name = summary["backup"]
    assert name in summary["offsite"]["copied"] and summary["offsite"]["encrypted"] is True
    code, out = bstack.exec("backup", "ls", f"{OFFSITE}/{name}")
    assert code == 0 and set(out.split()) >= {
        "manifest.json",
        "pgstack.dump.age",
        "globals.sql.age",
    }
    # No plaintext dump leaves the host; with the identity (kept elsewhere) it decrypts exactly.
    key = "/tmp/offsite-test.key"  # noqa: S108 -- the container's private tmpfs; removed below
    script = (
        f"umask 077; printf '%s\\n' \"$AGE_KEY\" > {key}; "
        f"age --decrypt --identity {key} {OFFSITE}/{name}/pgstack.dump.age | sha256sum; rm -f {key}"
    )
    code, out = bstack.container("backup").exec_run(
        ["sh", "-c", script], user="postgres", environment={"AGE_KEY": age_identity[1]}
    )
    assert code == 0, out
    manifest = bstack.exec("backup", "cat", f"{OFFSITE}/{name}/manifest.json")[1]
    assert out.decode().split()[0] in manifest
    # Physical backups and WAL go to pgBackRest's repo2 on the same volume, encrypted: a
    # point-in-time recovery works from it alone (tests/backup/test_s3.py restores from one).
    assert summary["physical"]["repo2"]["label"]
    code, out = bstack.exec("backup", "pgbackrest", "--stanza=pgstack", "--repo=2", "info",
                            "--output=json", user="postgres")  # fmt: skip
    assert code == 0, out
    assert '"cipher":"aes-256-cbc"' in out and summary["physical"]["repo2"]["label"] in out
    code, out = bstack.exec("backup", "ls", f"{OFFSITE}/pgbackrest/archive/pgstack/17-1")
    assert code == 0 and out.strip(), "archived WAL reaches repo2 too"


_HOOK_RECEIVER = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        open("/tmp/hook.json", "ab").write(body + b"\\n")
        self.send_response(204)
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", 9999), H).handle_request()
"""


def test_the_webhook_receives_the_summary_of_a_run(bstack: BackupStack) -> None:
    container = bstack.container("backup")
    container.exec_run(["python3", "-c", _HOOK_RECEIVER], user="postgres", detach=True)
    time.sleep(1)
    code, out = container.exec_run(
        ["pgstack-backup", "run"], user="postgres",
        environment={"BACKUP_WEBHOOK_URL": "http://127.0.0.1:9999/hook"},
    )  # fmt: skip
    assert code == 0, out
    assert last_event(out.decode(), "webhook")["status"] == 204
    code, body = bstack.exec("backup", "cat", "/tmp/hook.json")  # noqa: S108 -- in the container
    assert code == 0, body
    summary = events(body)[-1]
    assert summary["event"] == "backup" and summary["status"] == "ok"
    assert summary["verified"]["status"] == "ok"
