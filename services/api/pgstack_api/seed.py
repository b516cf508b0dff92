"""Idempotent demo data: running it twice changes nothing (ON CONFLICT DO NOTHING)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pgstack_api.db import with_admin
from pgstack_api.settings import Settings
from pgstack_api.tables import insert_or_skip, products, users

USERS = [
    {"email": "ada@example.com", "name": "Ada Lovelace"},
    {"email": "grace@example.com", "name": "Grace Hopper"},
    {"email": "edsger@example.com", "name": "Edsger Dijkstra"},
]

_ITEMS = [
    "Mug",
    "T-shirt",
    "Sticker pack",
    "Notebook",
    "Hoodie",
    "Cap",
    "Tote bag",
    "Pen",
    "Water bottle",
    "Socks",
    "Poster",
    "Keychain",
    "Mouse pad",
    "Laptop sleeve",
    "Pin",
    "Beanie",
    "Lanyard",
    "Coaster set",
    "Umbrella",
    "Backpack",
]

PRODUCTS = [
    {
        "sku": f"DEMO-{n:03d}",
        "name": f"Elephant {name}",
        "price_cents": 500 + 250 * n,
        "stock": 10 * (n % 5 + 1),
    }
    for n, name in enumerate(_ITEMS, start=1)
]


async def seed(conn: AsyncConnection) -> dict[str, int]:
    """Insert the demo rows that are missing; returns how many of each were inserted."""
    inserted: dict[str, int] = {}
    for table, rows in ((users, USERS), (products, PRODUCTS)):
        stmt = insert_or_skip(conn.dialect.name, table).returning(table.c.id)
        # executemany with RETURNING is not portable across drivers; insert row by row instead,
        # which is fine for two dozen rows.
        count = 0
        for row in rows:
            if (await conn.execute(stmt.values(**row))).first() is not None:
                count += 1
        inserted[str(table.name)] = count
    return inserted


async def table_counts(conn: AsyncConnection) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in ("users", "products", "orders", "order_items"):
        out[name] = (await conn.execute(sa.text(f"SELECT count(*) FROM {name}"))).scalar_one()  # noqa: S608 -- fixed names
    return out


async def run_seed(settings: Settings) -> dict[str, Any]:
    async def work(conn: AsyncConnection) -> dict[str, Any]:
        inserted = await seed(conn)
        await conn.commit()
        return {"event": "seed", "inserted": inserted}

    return await with_admin(settings, work)
