# ruff: noqa  -- a third party's revision file, kept as its authors wrote it
"""Customers get a phone, names required

Revision ID: c3e8f1a7b907
Revises: b7a9d2e5f806
Create Date: 2023-04-20 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = 'c3e8f1a7b907'
down_revision: Union[str, None] = 'b7a9d2e5f806'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute("UPDATE customers SET name = email WHERE name IS NULL")
    with op.batch_alter_table("customers") as batch_op:
        batch_op.add_column(sa.Column("phone", sa.String(40), nullable=True))
        batch_op.alter_column("name", existing_type=sa.String(120), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch_op:
        batch_op.alter_column("name", existing_type=sa.String(120), nullable=True)
        batch_op.drop_column("phone")
