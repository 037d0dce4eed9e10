# ruff: noqa  -- a third party's revision file, kept as its authors wrote it
"""Order status lookup

Revision ID: 5e4b7f3a6c04
Revises: 0d3a6e2f4b03
Create Date: 2023-03-11 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '5e4b7f3a6c04'
down_revision: Union[str, None] = '0d3a6e2f4b03'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    status = op.create_table(
        "order_status",
        sa.Column("id", sa.SmallInteger, primary_key=True),
        sa.Column("code", sa.String(20), nullable=False, unique=True),
    )
    op.bulk_insert(status, [
        {"id": 1, "code": "new"},
        {"id": 2, "code": "paid"},
        {"id": 3, "code": "shipped"},
    ])


def downgrade() -> None:
    op.drop_table("order_status")
