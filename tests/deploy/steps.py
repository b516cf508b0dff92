"""What an operator and a client do against the single-VM target, shared by the modules that
work on it (test_deploy, test_ops, test_build_on_target): deploy a release, place an order
through the edge and read it back, try the example vault."""

from __future__ import annotations

import uuid

from tests.deploy.conftest import Release
from tests.deploy.target import Recap, Target


def release_vars(release: Release) -> list[str]:
    """The ansible-playbook arguments that ship `release`: its archive and its tag."""
    return [
        "--extra-vars", f"pgstack_images_archive={release.archive}",
        "--extra-vars", f"pgstack_image_tag={release.tag}",
    ]  # fmt: skip


def deploy(target: Target, release: Release, *args: str) -> Recap:
    """site.yml with `release`, and any further ansible-playbook arguments."""
    return target.playbook("site.yml", *release_vars(release), *args)


def order(target: Target) -> int:
    """A new user, a product at 300 cents and an order of two of it (600 cents): the order's id."""
    with target.http() as http:
        user = http.post(
            "/api/users", json={"email": f"{uuid.uuid4().hex}@example.test", "name": "Deploy"}
        )
        assert user.status_code == 201, user.text
        product = http.post(
            "/api/products",
            json={
                "sku": f"D-{uuid.uuid4().hex[:12]}",
                "name": "Deploy item",
                "price_cents": 300,
                "stock": 4,
            },
        )
        assert product.status_code == 201, product.text
        placed = http.post(
            "/api/orders",
            json={
                "user_id": user.json()["id"],
                "items": [{"product_id": product.json()["id"], "quantity": 2}],
            },
        )
        assert placed.status_code == 201, placed.text
        return int(placed.json()["id"])


def order_total(target: Target, order_id: int) -> int:
    with target.http() as http:
        response = http.get(f"/api/orders/{order_id}")
    assert response.status_code == 200, response.text
    return int(response.json()["total_cents"])


def refused_with_the_example_vault(target: Target, release: Release, *args: str) -> str:
    """site.yml with the example inventory's public vault: refused, naming the secret and the
    fix, with nothing changed. Returns the output, whitespace folded."""
    inventory, password = target.example_inventory()
    result = target.run_playbook(
        "site.yml", *release_vars(release), *args,
        inventory=inventory, vault_password=password, timeout=300,
    )  # fmt: skip
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output[-3000:]
    assert "Refusing to deploy public secrets" in output, output[-3000:]
    assert "app_password" in output and "make vault INVENTORY=" in output
    assert "ok=" in output and "changed=0" in output, "nothing may change before the refusal"
    return output
