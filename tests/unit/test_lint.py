"""Lint rules over offline-rendered revisions (no server: lint never touches the database).

Each case is a risky revision that must raise the rule and, where a one-revision alternative
exists, the safe version the rule's message recommends, which must not raise it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from schemashift import scripts
from schemashift.plan import RULES, LintFinding, lint, render
from tests.fixtures.histories import Revision, write_history
from tests.fixtures.lint_cases import BASE, CASES, CONCURRENT_INDEX, Case


def lint_revision(tmp_path: Path, upgrade_src: str) -> list[LintFinding]:
    directory = write_history(tmp_path, [BASE, Revision("r1", "change", upgrade_src)])
    config = scripts.alembic_config(directory)
    script = scripts.script_directory(config)
    revision = script.get_revision("r1")
    assert revision is not None
    return lint.lint(render.render_revisions(config, script, [revision], "base0"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.rule}:{c.risky[:30]}")
def test_risky_revision_raises_the_rule_and_its_safe_alternative(
    tmp_path: Path, case: Case
) -> None:
    findings = lint_revision(tmp_path / "risky", case.risky)
    hits = [f for f in findings if f.rule == case.rule]
    assert hits, f"{case.rule} not raised; got {[f.rule for f in findings]}"
    assert all(f.revision == "r1" and f.severity == RULES[case.rule] for f in hits)
    assert all("safe alternative:" in f.message for f in hits)
    if case.safe is not None:
        assert lint_revision(tmp_path / "safe", case.safe) == []


def test_operations_on_tables_created_in_the_same_plan_are_not_linted(tmp_path: Path) -> None:
    findings = lint_revision(tmp_path, """
        op.create_table("audit", sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("who", sa.String(20)), sa.Column("user_id", sa.Integer))
        op.create_index("ix_audit_who", "audit", ["who"])
        op.create_unique_constraint("uq_audit_who", "audit", ["who"])
        op.create_foreign_key("fk_audit_user", "audit", "users", ["user_id"], ["id"])
        op.add_column("audit", sa.Column("at", sa.DateTime, nullable=False))
        op.alter_column("audit", "who", nullable=False, type_=sa.Text)
        op.execute("CREATE INDEX ix_audit_at ON audit (at)")
    """)
    assert findings == []


def test_every_rule_has_a_severity_and_a_safe_alternative() -> None:
    assert set(RULES) == set(lint.SAFE)
    assert set(RULES.values()) == {"error", "warning"}
    covered = {case.rule for case in CASES}
    assert covered == set(RULES) - {"integrity-check-incomplete"}  # that one needs a server


def test_autocommit_block_is_detected_and_rendered_outside_the_transaction(
    tmp_path: Path,
) -> None:
    directory = write_history(tmp_path, [BASE, Revision("r1", "index", CONCURRENT_INDEX)])
    config = scripts.alembic_config(directory)
    script = scripts.script_directory(config)
    revisions = [script.get_revision("base0"), script.get_revision("r1")]
    base, index = render.render_revisions(config, script, revisions, None)  # type: ignore[arg-type]
    assert (base.autocommit, index.autocommit) == (False, True)
    assert "CREATE TABLE alembic_version" in base.sql
    assert "INSERT INTO alembic_version" in base.sql
    create_index = "CREATE INDEX CONCURRENTLY ix_users_email ON users (email);"
    commit, create, begin = (
        index.sql.index(s) for s in ("COMMIT;", create_index, "BEGIN;\n\nUPDATE"))
    assert commit < create < begin
    assert [r.autocommit for r in index.ops] == [True]
