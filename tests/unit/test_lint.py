"""Lint rules over offline-rendered revisions (no server: lint never touches the database).

Each case is a risky revision that must raise the rule and, where a one-revision alternative
exists, the safe version the rule's message recommends, which must not raise it.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from schemashift import scripts
from schemashift.plan import RULES, LintFinding, lint, render
from tests.fixtures.histories import Revision, write_history
from tests.fixtures.lint_cases import BASE, CASES, CONCURRENT_INDEX, Case
from tests.fixtures.safe_forms import SAFE_FORMS


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


@pytest.mark.parametrize("form", SAFE_FORMS)
def test_the_lock_safe_forms_pass_lint_on_tables_with_rows(tmp_path: Path, form: str) -> None:
    assert lint_revision(tmp_path, SAFE_FORMS[form].upgrade_src) == []


_AUTOCOMMIT_VALIDATE = (r"with op.get_context\(\).autocommit_block\(\):\n"
                        r"    (op.execute\(.*VALIDATE)")


@pytest.mark.parametrize(("form", "pattern", "replacement", "rule"), [
    ("not-null", _AUTOCOMMIT_VALIDATE + r".*\n", "", "set-not-null"),  # SET NOT NULL scans
    # VALIDATE in the ADD's transaction: the ADD's lock is held for the whole scan
    ("not-null", _AUTOCOMMIT_VALIDATE, r"\1", "add-check-constraint"),
    ("check", _AUTOCOMMIT_VALIDATE, r"\1", "add-check-constraint"),
    ("foreign-key", _AUTOCOMMIT_VALIDATE, r"\1", "add-foreign-key-validated"),
    ("foreign-key", r",\s*postgresql_not_valid=True", "", "add-foreign-key-validated"),
    ("index", r",\s*postgresql_concurrently=True", "", "create-index-not-concurrently"),
    ("unique", r'UNIQUE USING INDEX "\s*"uq_users_email', "UNIQUE (email)",
     "add-unique-constraint"),
    ("primary-key", r'PRIMARY KEY USING INDEX "\s*"pk_visits', "PRIMARY KEY (id)",
     "add-primary-key"),
])
def test_each_safe_form_without_its_safe_step_is_flagged(
    tmp_path: Path, form: str, pattern: str, replacement: str, rule: str
) -> None:
    source = textwrap.dedent(SAFE_FORMS[form].upgrade_src)
    unsafe = re.sub(pattern, replacement, source, count=1)
    assert unsafe != source
    findings = lint_revision(tmp_path, unsafe)
    assert rule in {f.rule for f in findings}, findings


def test_a_not_null_check_on_another_column_does_not_make_set_not_null_safe(
    tmp_path: Path,
) -> None:
    source = textwrap.dedent(SAFE_FORMS["not-null"].upgrade_src).replace(
        '"email IS NOT NULL"', '"name IS NOT NULL"')
    assert [f.rule for f in lint_revision(tmp_path, source)] == ["set-not-null"]


def test_a_dropped_helper_check_no_longer_counts_for_a_later_set_not_null(
    tmp_path: Path,
) -> None:
    source = textwrap.dedent(SAFE_FORMS["not-null"].upgrade_src) + (
        'op.alter_column("users", "email", nullable=True)\n'
        'op.alter_column("users", "email", nullable=False)\n')
    assert [f.rule for f in lint_revision(tmp_path, source)] == ["set-not-null"]
