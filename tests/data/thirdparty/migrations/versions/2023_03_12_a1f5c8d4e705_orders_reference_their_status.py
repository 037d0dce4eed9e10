# ruff: noqa  -- a third party's revision file, kept as its authors wrote it
"""Orders reference their status

Revision ID: a1f5c8d4e705
Revises: 5e4b7f3a6c04
Create Date: 2023-03-12 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = 'a1f5c8d4e705'
down_revision: Union[str, None] = '5e4b7f3a6c04'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("status_id", sa.SmallInteger, nullable=True))
    op.create_foreign_key(
        "fk_orders_status_id", "orders", "order_status", ["status_id"], ["id"],
        postgresql_not_valid=True,
    )


def downgrade() -> None:
    op.drop_constraint("fk_orders_status_id", "orders", type_="foreignkey")
    op.drop_column("orders", "status_id")
