"""Users and products: plain inserts and lookups."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pgstack_api.db import Database, Query
from pgstack_api.domain.errors import Duplicate, NotFound
from pgstack_api.schemas import PageParams, Product, ProductIn, ProductPage, User, UserIn
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

_USER_BY_ID = Query(sa.select(*_USER_COLUMNS).where(users.c.id == sa.bindparam("id")))
_PRODUCT_BY_ID = Query(sa.select(*_PRODUCT_COLUMNS).where(products.c.id == sa.bindparam("id")))
# One row more than the page, to know whether a next page exists without a COUNT(*).
_PRODUCT_PAGE = Query(
    sa.select(*_PRODUCT_COLUMNS)
    .where(products.c.id > sa.bindparam("after"))
    .order_by(products.c.id)
    .limit(sa.bindparam("limit_plus_one"))
)


async def create_user(conn: AsyncConnection, data: UserIn) -> User:
    # ON CONFLICT DO NOTHING + no row back = duplicate, without an aborted transaction.
    stmt = insert_or_skip(conn.dialect.name, users).values(email=data.email, name=data.name)
    row = (await conn.execute(stmt.returning(*_USER_COLUMNS))).first()
    if row is None:
        raise Duplicate("user", "email", data.email)
    return User.model_validate(row._mapping)


async def get_user(db: Database, user_id: int) -> User:
    rows = await db.fetch(_USER_BY_ID, id=user_id)
    if not rows:
        raise NotFound("user", user_id)
    return User.model_validate(rows[0])


async def create_product(conn: AsyncConnection, data: ProductIn) -> Product:
    stmt = insert_or_skip(conn.dialect.name, products).values(
        sku=data.sku, name=data.name, price_cents=data.price_cents, stock=data.stock
    )
    row = (await conn.execute(stmt.returning(*_PRODUCT_COLUMNS))).first()
    if row is None:
        raise Duplicate("product", "sku", data.sku)
    return Product.model_validate(row._mapping)


async def get_product(db: Database, product_id: int) -> Product:
    rows = await db.fetch(_PRODUCT_BY_ID, id=product_id)
    if not rows:
        raise NotFound("product", product_id)
    return Product.model_validate(rows[0])


async def list_products(db: Database, page: PageParams) -> ProductPage:
    rows = await db.fetch(_PRODUCT_PAGE, after=page.after, limit_plus_one=page.limit + 1)
    items = [Product.model_validate(row) for row in rows[: page.limit]]
    next_after = items[-1].id if len(rows) > page.limit else None
    return ProductPage(items=items, next_after=next_after)
