# ruff: noqa  -- a third party's revision file, kept as its authors wrote it
"""Seed demo customers and orders

Revision ID: 0d3a6e2f4b03
Revises: 8c2f5d1e3a02
Create Date: 2023-02-02 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0d3a6e2f4b03'
down_revision: Union[str, None] = '8c2f5d1e3a02'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    customers = sa.table(
        "customers",
        sa.column("id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("email", sa.String),
    )
    orders = sa.table(
        "orders",
        sa.column("id", sa.Integer),
        sa.column("customer_id", sa.Integer),
        sa.column("amount", sa.Numeric),
    )
    op.bulk_insert(customers, [
        {"id": 1, "name": "Ada Lovelace", "email": "ada@example.org"},
        {"id": 2, "name": "Grace Hopper", "email": "grace@example.org"},
        {"id": 3, "name": None, "email": "anon@example.org"},
    ])
    op.bulk_insert(orders, [
        {"id": 1, "customer_id": 1, "amount": 10},
        {"id": 2, "customer_id": 1, "amount": 25.5},
        {"id": 3, "customer_id": 2, "amount": 7},
        {"id": 4, "customer_id": 3, "amount": 99.99},
    ])


def downgrade() -> None:
    op.execute("DELETE FROM orders WHERE id IN (1, 2, 3, 4)")
    op.execute("DELETE FROM customers WHERE id IN (1, 2, 3)")
