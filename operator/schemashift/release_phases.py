"""Expand/contract: the phase names, declared once, and the phase a revision file records.

A run applies `expand`, `contract` or `all` (the run option, runner/options_table.PHASE); a
revision is `expand` or `contract`, written in the revision file itself as
`schemashift = {"phase": "contract"}` (plan/override.py reads it). A revision without the key is
classified from what it does (plan/phases.py). A leaf module: the CLI's option table, the planner
and the generator all import it.
"""

from __future__ import annotations

from alembic.operations import ops

EXPAND = "expand"
CONTRACT = "contract"
ALL = "all"
CHOICES: tuple[str, ...] = (EXPAND, CONTRACT, ALL)  # what a run applies
MARKS: tuple[str, ...] = (EXPAND, CONTRACT)  # what a revision is
KEY = "phase"  # the key of the revision's `schemashift` dict


def marker_problem(value: object) -> str | None:
    """What is wrong with a revision's `phase` value (None when it is one of MARKS)."""
    if isinstance(value, str) and value in MARKS:
        return None
    if value == ALL:
        return (f"is {ALL!r}, which is what a run applies, not what a revision is: leave the "
                "key out (the revision is then classified from what it does)")
    return f"must be {' or '.join(map(repr, MARKS))}, not {value!r}"


def drops_default_of_not_null(op: ops.AlterColumnOp) -> bool:
    """DROP DEFAULT (Alembic's `server_default=None`) on a column the revision states NOT NULL
    and does not make nullable: the old release's INSERTs that leave the column out fail, so
    it is contract work (the generator's split, generate/phases.py, and the plan's
    classification, plan/compat.py)."""
    return (op.modify_server_default is None and op.existing_nullable is False
            and op.modify_nullable is not True)


__all__ = ["ALL", "CHOICES", "CONTRACT", "EXPAND", "KEY", "MARKS", "drops_default_of_not_null",
           "marker_problem"]
