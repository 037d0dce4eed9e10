"""Write a revision on top of a history's head whose upgrade() fails half-way (to show a rollback).

Usage: python examples/hms/add_failing_revision.py MIGRATIONS_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

REVISION = "badc0ffee000"
TEMPLATE = '''"""add a ward code that the data cannot satisfy

Revision ID: {rev}
Revises: {down}
"""
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("hospital_settings", sa.Column("ward_code", sa.String(8), nullable=True))
    raise RuntimeError("ward codes must come from the admissions system")


def downgrade() -> None:
    op.drop_column("hospital_settings", "ward_code")
'''


def main(migrations: Path) -> None:
    config = Config()
    config.set_main_option("script_location", str(migrations))
    head = ScriptDirectory.from_config(config).get_current_head()
    target = migrations / "versions" / f"29991231000000_{REVISION[:8]}_ward_code.py"
    target.write_text(TEMPLATE.format(rev=REVISION, down=head))
    print(f"Wrote {target} (revises {head})")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
