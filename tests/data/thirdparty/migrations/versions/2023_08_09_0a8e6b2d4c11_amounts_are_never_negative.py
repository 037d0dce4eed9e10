# ruff: noqa  -- a third party's revision file, kept as its authors wrote it
"""Amounts are never negative

Revision ID: 0a8e6b2d4c11
Revises: f2d7a5c9b310
Create Date: 2023-08-09 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0a8e6b2d4c11'
down_revision: Union[str, None] = 'f2d7a5c9b310'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_check_constraint(
        "ck_orders_amount_not_negative", "orders", "amount >= 0", postgresql_not_valid=True
    )
    op.execute("ALTER TABLE orders VALIDATE CONSTRAINT ck_orders_amount_not_negative")


def downgrade() -> None:
    op.drop_constraint("ck_orders_amount_not_negative", "orders", type_="check")
