"""Expand/contract: the phase names, declared once, and the phase a revision file records.

A run applies `expand`, `contract` or `all` (the run option, runner/options_table.PHASE); a
revision is `expand` or `contract`, written in the revision file itself as
`schemashift = {"phase": "contract"}` (plan/override.py reads it). A revision without the key is
classified from what it does (plan/phases.py). A leaf module: the CLI's option table, the planner
and the generator all import it.
"""

from __future__ import annotations

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


__all__ = ["ALL", "CHOICES", "CONTRACT", "EXPAND", "KEY", "MARKS", "marker_problem"]
