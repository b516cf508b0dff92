"""The schema as SQLAlchemy Core tables, for queries. The migrations in alembic/versions are
written by hand and are the source of truth; tests/unit checks that the two agree."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

# BIGINT identity on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", BigId, sa.Identity(), primary_key=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

products = sa.Table(
    "products",
    metadata,
    sa.Column("id", BigId, sa.Identity(), primary_key=True),
    sa.Column("sku", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("price_cents", sa.BigInteger, nullable=False),
    sa.Column("stock", sa.Integer, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.CheckConstraint("price_cents >= 0", name="products_price_cents_check"),
    sa.CheckConstraint("stock >= 0", name="products_stock_check"),
)

ORDER_STATUSES = ("placed", "paid", "shipped", "cancelled")

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", BigId, sa.Identity(), primary_key=True),
    sa.Column(
        "user_id",
        BigId,
        sa.ForeignKey("users.id", name="orders_user_id_fkey"),
        nullable=False,
        index=True,
    ),
    sa.Column("status", sa.String(16), nullable=False, server_default="placed"),
    sa.Column("total_cents", sa.BigInteger, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.CheckConstraint(
        "status IN ('placed', 'paid', 'shipped', 'cancelled')", name="orders_status_check"
    ),
    sa.CheckConstraint("total_cents >= 0", name="orders_total_cents_check"),
)

order_items = sa.Table(
    "order_items",
    metadata,
    sa.Column(
        "order_id",
        BigId,
        sa.ForeignKey("orders.id", name="order_items_order_id_fkey", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column(
        "product_id",
        BigId,
        sa.ForeignKey("products.id", name="order_items_product_id_fkey"),
        primary_key=True,
        index=True,
    ),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price_cents", sa.BigInteger, nullable=False),
    sa.CheckConstraint("quantity > 0", name="order_items_quantity_check"),
    sa.CheckConstraint("unit_price_cents >= 0", name="order_items_unit_price_cents_check"),
)

# The first response of each POST that carried an Idempotency-Key (idempotency.py), written
# in the same transaction as the POST's own effect.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("operation", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("location", sa.String(255), nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)


def insert_or_skip(dialect: str, table: sa.Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING in the dialect's spelling (PostgreSQL and SQLite)."""
    module: Any = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing()
