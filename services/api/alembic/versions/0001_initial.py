"""Initial schema: users, products (with stock), orders, order_items.

Runs as app_owner, which then owns the tables. The app role's DML grants come from
ALTER DEFAULT PRIVILEGES set by the postgres image's init, so no GRANT here.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# BIGINT identity on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", BigId, sa.Identity(), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("email", name="users_email_key"),
    )
    op.create_table(
        "products",
        sa.Column("id", BigId, sa.Identity(), primary_key=True),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("price_cents", sa.BigInteger, nullable=False),
        sa.Column("stock", sa.Integer, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("sku", name="products_sku_key"),
        sa.CheckConstraint("price_cents >= 0", name="products_price_cents_check"),
        sa.CheckConstraint("stock >= 0", name="products_stock_check"),
    )
    op.create_table(
        "orders",
        sa.Column("id", BigId, sa.Identity(), primary_key=True),
        sa.Column(
            "user_id", BigId, sa.ForeignKey("users.id", name="orders_user_id_fkey"), nullable=False
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
    op.create_index("ix_orders_user_id", "orders", ["user_id"])
    op.create_table(
        "order_items",
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
        ),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price_cents", sa.BigInteger, nullable=False),
        sa.CheckConstraint("quantity > 0", name="order_items_quantity_check"),
        sa.CheckConstraint("unit_price_cents >= 0", name="order_items_unit_price_cents_check"),
    )
    # Foreign keys are not indexed by PostgreSQL itself; order lookups by product need one.
    op.create_index("ix_order_items_product_id", "order_items", ["product_id"])


def downgrade() -> None:
    op.drop_table("order_items")
    op.drop_table("orders")
    op.drop_table("products")
    op.drop_table("users")
