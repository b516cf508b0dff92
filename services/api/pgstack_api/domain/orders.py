"""Placing an order: check and take stock, then record the order, all in one transaction.

Never oversells: each product's stock is decremented by a conditional UPDATE (`stock >= q`),
which under READ COMMITTED re-checks the condition on the latest row version after waiting for
a concurrent writer's lock. Rows are locked in product-id order, so two orders can never wait on
each other in a cycle (no deadlocks to begin with; 40P01 is still retried if one happens).
"""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pgstack_api.db import Database, Query
from pgstack_api.domain.errors import NotFound, OutOfStock
from pgstack_api.schemas import Order, OrderIn, OrderItem
from pgstack_api.tables import order_items, orders, products, users

# An order and its lines in one statement (one round trip): a LEFT JOIN, one row per line.
_ORDER_BY_ID = Query(
    sa.select(
        orders.c.id,
        orders.c.user_id,
        orders.c.status,
        orders.c.total_cents,
        orders.c.created_at,
        order_items.c.product_id,
        order_items.c.quantity,
        order_items.c.unit_price_cents,
    )
    .select_from(orders.outerjoin(order_items, order_items.c.order_id == orders.c.id))
    .where(orders.c.id == sa.bindparam("id"))
    .order_by(order_items.c.product_id)
)


def merged_quantities(order: OrderIn) -> list[tuple[int, int]]:
    """(product_id, quantity) with repeated products summed, in product-id (lock) order."""
    totals: Counter[int] = Counter()
    for item in order.items:
        totals[item.product_id] += item.quantity
    return sorted(totals.items())


async def create_order(conn: AsyncConnection, order: OrderIn) -> Order:
    user = await conn.execute(sa.select(users.c.id).where(users.c.id == order.user_id))
    if user.first() is None:
        raise NotFound("user", order.user_id)

    lines: list[dict[str, int]] = []
    for product_id, quantity in merged_quantities(order):
        take = (
            sa.update(products)
            .where(products.c.id == product_id, products.c.stock >= quantity)
            .values(stock=products.c.stock - quantity)
            .returning(products.c.price_cents)
        )
        price = (await conn.execute(take)).scalar_one_or_none()
        if price is None:
            # Either it does not exist or there is too little; the caller's rollback undoes
            # any stock already taken for earlier lines.
            exists = await conn.execute(sa.select(products.c.id).where(products.c.id == product_id))
            if exists.first() is None:
                raise NotFound("product", product_id)
            raise OutOfStock(product_id)
        lines.append({"product_id": product_id, "quantity": quantity, "unit_price_cents": price})

    total = sum(line["quantity"] * line["unit_price_cents"] for line in lines)
    created = (
        await conn.execute(
            sa.insert(orders)
            .values(user_id=order.user_id, status="placed", total_cents=total)
            .returning(orders.c.id, orders.c.status, orders.c.created_at)
        )
    ).one()
    await conn.execute(sa.insert(order_items), [{"order_id": created.id, **line} for line in lines])
    return Order(
        id=created.id,
        user_id=order.user_id,
        status=created.status,
        total_cents=total,
        created_at=created.created_at,
        items=[OrderItem.model_validate(line) for line in lines],
    )


async def get_order(db: Database, order_id: int) -> Order:
    rows = await db.fetch(_ORDER_BY_ID, id=order_id)
    if not rows:
        raise NotFound("order", order_id)
    head = rows[0]
    return Order(
        id=head["id"],
        user_id=head["user_id"],
        status=head["status"],
        total_cents=head["total_cents"],
        created_at=head["created_at"],
        items=[OrderItem.model_validate(row) for row in rows if row["product_id"] is not None],
    )
