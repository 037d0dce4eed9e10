# ruff: noqa  -- a third party's revision file, kept as its authors wrote it
"""Backfill order status

Revision ID: b7a9d2e5f806
Revises: a1f5c8d4e705
Create Date: 2023-03-12 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = 'b7a9d2e5f806'
down_revision: Union[str, None] = 'a1f5c8d4e705'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    conn = op.get_bind()
    new_id = conn.execute(sa.text("SELECT id FROM order_status WHERE code = 'new'")).scalar_one()
    conn.execute(
        sa.text("UPDATE orders SET status_id = :status WHERE status_id IS NULL"),
        {"status": new_id},
    )
    op.execute("ALTER TABLE orders VALIDATE CONSTRAINT fk_orders_status_id")


def downgrade() -> None:
    op.execute("UPDATE orders SET status_id = NULL")
