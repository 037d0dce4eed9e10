# ruff: noqa  -- a third party's revision file, kept as its authors wrote it
"""Rename email to email_address

Revision ID: e6c1f3b8a209
Revises: d9b2a4c6e108
Create Date: 2023-06-14 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = 'e6c1f3b8a209'
down_revision: Union[str, None] = 'd9b2a4c6e108'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch_op:
        batch_op.alter_column("email", new_column_name="email_address",
                              existing_type=sa.String(255), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch_op:
        batch_op.alter_column("email_address", new_column_name="email",
                              existing_type=sa.String(255), existing_nullable=False)
