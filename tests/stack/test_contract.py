"""The published contract is what the server does: schemathesis (every check, the stateful phase
included) against the real stack, and the details a fuzzer cannot judge by itself."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.stack.compose import REPO, Stack

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Bounded: examples per operation and phase. The seed makes a failure reproducible.
EXAMPLES = int(os.environ.get("PGSTACK_FUZZ_EXAMPLES", "40"))


def test_schemathesis_finds_no_failure_with_every_check_and_the_stateful_phase(
    stack: Stack, tmp_path: Path
) -> None:
    before = {table: int(stack.psql(f"SELECT coalesce(max(id), 0) FROM {table}"))
              for table in ("orders", "users", "products")}  # fmt: skip
    result = subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(REPO / "tests/stack/schemathesis.toml"),
         "run", f"{stack.base_url}/openapi.json",
         "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
         "--max-examples", str(EXAMPLES), "--seed", "20261127",
         "--request-timeout", "30", "--report", "junit", "--report-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
    # The links let the fuzzer place real orders: an order of a user or a product the fuzzer
    # itself created in this run (ids a random guess rarely hits; no other test runs meanwhile).
    placed = int(stack.psql(
        f"SELECT count(*) FROM orders o WHERE o.id > {before['orders']} AND ("
        f"o.user_id > {before['users']} OR EXISTS (SELECT 1 FROM order_items i "
        f"WHERE i.order_id = o.id AND i.product_id > {before['products']}))"
    ))  # fmt: skip
    assert placed > 0, output[-3000:]


def test_text_with_nul_is_422_naming_the_field(stack: Stack) -> None:
    with stack.http() as http:
        response = http.post(
            "/api/users", json={"email": f"{uuid.uuid4().hex}@example.test", "name": "a\u0000b"}
        )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["message"].startswith("name: ") and "NUL" in error["message"]
    assert [d["field"] for d in error["details"]] == ["name"]


def test_options_and_405_list_exactly_the_methods_of_the_path(stack: Stack) -> None:
    expected = {
        "/api/products": "GET, HEAD, OPTIONS, POST",
        "/api/products/1": "GET, HEAD, OPTIONS",
        "/api/orders": "OPTIONS, POST",
        "/api/users": "OPTIONS, POST",
        "/livez": "GET, HEAD, OPTIONS",
    }
    with stack.http() as http:
        for path, allow in expected.items():
            options = http.options(path)
            assert (options.status_code, options.headers["allow"]) == (204, allow), path
            refused = http.request("PATCH", path)
            assert refused.status_code == 405, path
            assert refused.headers["allow"] == allow, path
            assert refused.json()["error"]["code"] == "method_not_allowed"


def test_the_document_is_generated_from_the_models(stack: Stack) -> None:
    with stack.http() as http:
        schema = http.get("/openapi.json").json()
    after = next(
        p for p in schema["paths"]["/api/products"]["get"]["parameters"] if p["name"] == "after"
    )
    assert after["schema"]["maximum"] == 2**63 - 1  # the model's bound, not a hand-kept copy
    order = schema["paths"]["/api/orders"]["post"]
    assert {"201", "400", "404", "409", "413", "422", "503"} <= order["responses"].keys()
    assert "Idempotency-Key" in [p["name"] for p in order["parameters"]]
    assert order["responses"]["201"]["links"]["GetOrder"]["operationId"] == "getOrder"
    assert "Retry-After" in order["responses"]["503"]["headers"]
