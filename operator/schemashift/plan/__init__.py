"""Revisions → stages, with lint, integrity pre-checks, the SQL preview and a plan hash."""

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
