# ruff: noqa  -- a third party's revision file, kept as its authors wrote it
"""Order totals view

Revision ID: 1b9f7c3e5d12
Revises: 0a8e6b2d4c11
Create Date: 2023-09-27 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '1b9f7c3e5d12'
down_revision: Union[str, None] = '0a8e6b2d4c11'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute(
        "CREATE VIEW order_totals AS "
        "SELECT c.id AS customer_id, c.email_address, count(o.id) AS orders, "
        "coalesce(sum(o.amount), 0) AS total "
        "FROM customers c LEFT JOIN orders o ON o.customer_id = c.id GROUP BY c.id"
    )


def downgrade() -> None:
    op.execute("DROP VIEW order_totals")
