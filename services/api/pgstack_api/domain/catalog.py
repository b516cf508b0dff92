"""Users and products: plain inserts and lookups."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pgstack_api.errors import ApiError, not_found
from pgstack_api.schemas import PageParams, ProductIn, UserIn
from pgstack_api.tables import insert_or_skip, products, users

_PRODUCT_COLUMNS = (
    products.c.id,
    products.c.sku,
    products.c.name,
    products.c.price_cents,
    products.c.stock,
    products.c.created_at,
)
_USER_COLUMNS = (users.c.id, users.c.email, users.c.name, users.c.created_at)


def _row(row: Any) -> dict[str, Any]:
    out = dict(row._mapping)
    if out.get("created_at") is not None:
        out["created_at"] = out["created_at"].isoformat()
    return out


async def create_user(conn: AsyncConnection, data: UserIn) -> dict[str, Any]:
    # ON CONFLICT DO NOTHING + no row back = duplicate, without an aborted transaction.
    stmt = insert_or_skip(conn.dialect.name, users).values(email=data.email, name=data.name)
    row = (await conn.execute(stmt.returning(*_USER_COLUMNS))).first()
    if row is None:
        raise ApiError(409, "duplicate", f"a user with email {data.email!r} exists")
    return _row(row)


async def get_user(conn: AsyncConnection, user_id: int) -> dict[str, Any]:
    row = (await conn.execute(sa.select(*_USER_COLUMNS).where(users.c.id == user_id))).first()
    if row is None:
        raise not_found("user", user_id)
    return _row(row)


async def create_product(conn: AsyncConnection, data: ProductIn) -> dict[str, Any]:
    stmt = insert_or_skip(conn.dialect.name, products).values(
        sku=data.sku, name=data.name, price_cents=data.price_cents, stock=data.stock
    )
    row = (await conn.execute(stmt.returning(*_PRODUCT_COLUMNS))).first()
    if row is None:
        raise ApiError(409, "duplicate", f"a product with sku {data.sku!r} exists")
    return _row(row)


async def get_product(conn: AsyncConnection, product_id: int) -> dict[str, Any]:
    query = sa.select(*_PRODUCT_COLUMNS).where(products.c.id == product_id)
    row = (await conn.execute(query)).first()
    if row is None:
        raise not_found("product", product_id)
    return _row(row)


async def list_products(conn: AsyncConnection, page: PageParams) -> dict[str, Any]:
    # Fetch one extra row to know whether a next page exists without a COUNT(*).
    query = (
        sa.select(*_PRODUCT_COLUMNS)
        .where(products.c.id > page.after)
        .order_by(products.c.id)
        .limit(page.limit + 1)
    )
    rows = (await conn.execute(query)).all()
    items = [_row(r) for r in rows[: page.limit]]
    next_after = items[-1]["id"] if len(rows) > page.limit else None
    return {"items": items, "next_after": next_after}
