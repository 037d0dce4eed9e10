"""Revisions → stages, with lint, integrity pre-checks, the SQL preview and a plan hash.

- render: each revision's upgrade() runs offline (as_sql, PostgreSQL dialect) in a context we
  configure — the project's env.py is never run — recording the typed Alembic operations.
- lint: rules over those operations (and patterns in raw SQL); in `block` mode every finding
  whose rule is not allowed stops a run, errors and warnings alike.
- integrity: read-only counts against the live data (NULLs, duplicates, orphans), with timeouts.
- hash: sha256 of the database's revision, the target and every stage's revisions and SQL.
"""

from schemashift.plan.build import build_plan, build_plan_for, revisions_between
from schemashift.plan.lint import RULES
from schemashift.plan.model import IntegrityFinding, LintFinding, Plan, RevisionInfo, Stage

__all__ = [
    "RULES",
    "IntegrityFinding",
    "LintFinding",
    "Plan",
    "RevisionInfo",
    "Stage",
    "build_plan",
    "build_plan_for",
    "revisions_between",
]
