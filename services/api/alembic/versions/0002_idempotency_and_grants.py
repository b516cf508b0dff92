"""Idempotency keys; the app role gets exactly the privileges the API uses.

Tables created by app_owner used to give the app role SELECT, INSERT, UPDATE and DELETE by
default privileges, alembic_version included. The API never deletes an order, a user or a
product and never writes alembic_version, so this revision grants, table by table, what the code
does (tests/stack/test_privileges.py checks the matrix). New tables get SELECT only by default
(services/postgres/initdb/roles.sql); the migration that creates a table grants its writes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# What the API does to each table (the app role's whole write access).
APP_PRIVILEGES = {
    "users": "SELECT, INSERT",
    "products": "SELECT, INSERT, UPDATE",  # UPDATE: stock taken by orders
    "orders": "SELECT, INSERT",
    "order_items": "SELECT, INSERT",
    # DELETE: expired keys are purged as new ones arrive (idempotency.py).
    "idempotency_keys": "SELECT, INSERT, UPDATE, DELETE",
    "alembic_version": "SELECT",  # /api/health compares it with the code's head
}


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("operation", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("location", sa.String(255), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])
    if op.get_context().dialect.name != "postgresql":
        return  # SQLite (make dev) has no roles
    for table, privileges in APP_PRIVILEGES.items():
        op.execute(f"REVOKE ALL ON {table} FROM app")
        op.execute(f"GRANT {privileges} ON {table} TO app")


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_expires_at", "idempotency_keys")
    op.drop_table("idempotency_keys")
    if op.get_context().dialect.name != "postgresql":
        return
    for table in ("users", "products", "orders", "order_items", "alembic_version"):
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO app")
