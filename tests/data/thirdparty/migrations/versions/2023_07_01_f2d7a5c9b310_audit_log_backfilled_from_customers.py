# ruff: noqa  -- a third party's revision file, kept as its authors wrote it
"""Audit log, backfilled from customers

Revision ID: f2d7a5c9b310
Revises: e6c1f3b8a209
Create Date: 2023-07-01 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = 'f2d7a5c9b310'
down_revision: Union[str, None] = 'e6c1f3b8a209'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("entity", sa.String(40), nullable=False),
        sa.Column("entity_id", sa.Integer, nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
    )
    op.execute(
        "INSERT INTO audit_log (entity, entity_id, action) "
        "SELECT 'customer', id, 'imported' FROM customers ORDER BY id"
    )


def downgrade() -> None:
    op.drop_table("audit_log")
