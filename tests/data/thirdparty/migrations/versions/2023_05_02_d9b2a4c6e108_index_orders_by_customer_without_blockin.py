# ruff: noqa  -- a third party's revision file, kept as its authors wrote it
"""Index orders by customer without blocking writes

Revision ID: d9b2a4c6e108
Revises: c3e8f1a7b907
Create Date: 2023-05-02 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = 'd9b2a4c6e108'
down_revision: Union[str, None] = 'c3e8f1a7b907'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_orders_customer_id", "orders", ["customer_id"],
            postgresql_concurrently=True, if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_orders_customer_id", table_name="orders",
            postgresql_concurrently=True, if_exists=True,
        )
