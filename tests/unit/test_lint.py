"""Lint rules over offline-rendered revisions (no server: lint never touches the database).

Each case is a risky revision that must raise the rule and, where a one-revision alternative
exists, the safe version the rule's message recommends, which must not raise it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from schemashift import scripts
from schemashift.plan import RULES, LintFinding, lint, render
from tests.fixtures.histories import Revision, write_history

BASE = Revision("base0", "users and orders", """
    op.create_table("users", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("email", sa.String(50)), sa.Column("name", sa.String(50)),
                    sa.Column("age", sa.Integer))
    op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("user_id", sa.Integer), sa.Column("note", sa.Text))
""", 'op.drop_table("orders")\nop.drop_table("users")')

CONCURRENT_INDEX = """
with op.get_context().autocommit_block():
    op.create_index("ix_users_email", "users", ["email"], postgresql_concurrently=True)
"""


@dataclass
class Case:
    rule: str
    risky: str
    safe: str | None  # None: no one-revision alternative (the message says what to do)


CASES = [
    Case("add-not-null-column-without-default",
         'op.add_column("users", sa.Column("plan", sa.String(10), nullable=False))',
         'op.add_column("users", sa.Column("plan", sa.String(10), nullable=False, '
         'server_default="free"))'),
    Case("add-column-volatile-default",
         'op.add_column("users", sa.Column("token", sa.Uuid, '
         'server_default=sa.text("gen_random_uuid()")))',
         # now() is STABLE: PostgreSQL 11+ evaluates it once and stores it, no rewrite
         'op.add_column("users", sa.Column("seen", sa.DateTime, server_default=sa.func.now()))'),
    Case("add-column-volatile-default",
         'op.add_column("orders", sa.Column("seq", sa.BigInteger, sa.Identity()))', None),
    Case("change-column-type",
         'op.alter_column("users", "age", type_=sa.BigInteger, existing_type=sa.Integer)',
         'op.alter_column("users", "email", type_=sa.String(100), '
         'existing_type=sa.String(50))'),
    Case("change-column-type",
         'op.execute("ALTER TABLE users ALTER COLUMN age TYPE bigint")', None),
    Case("create-index-not-concurrently",
         'op.create_index("ix_users_email", "users", ["email"])', CONCURRENT_INDEX),
    Case("create-index-not-concurrently",
         'op.execute("CREATE INDEX ix_users_email ON users (email)")',
         'with op.get_context().autocommit_block():\n'
         '    op.execute("CREATE INDEX CONCURRENTLY ix_users_email ON users (email)")'),
    Case("concurrently-outside-autocommit-block",
         'op.create_index("ix_users_email", "users", ["email"], postgresql_concurrently=True)',
         CONCURRENT_INDEX),
    Case("add-foreign-key-validated",
         'op.create_foreign_key("fk_orders_user", "orders", "users", ["user_id"], ["id"])',
         'op.create_foreign_key("fk_orders_user", "orders", "users", ["user_id"], ["id"], '
         'postgresql_not_valid=True)'),
    Case("add-foreign-key-validated",
         'op.execute("ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) '
         'REFERENCES users (id)")',
         'op.execute("ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) '
         'REFERENCES users (id) NOT VALID")'),
    Case("add-unique-constraint",
         'op.create_unique_constraint("uq_users_email", "users", ["email"])',
         CONCURRENT_INDEX.replace('["email"],', '["email"], unique=True,')
         + 'op.execute("ALTER TABLE users ADD CONSTRAINT uq_users_email '
         'UNIQUE USING INDEX ix_users_email")'),
    Case("add-check-constraint",
         'op.create_check_constraint("ck_users_age", "users", "age >= 0")',
         'op.create_check_constraint("ck_users_age", "users", "age >= 0", '
         'postgresql_not_valid=True)'),
    Case("drop-table", 'op.drop_table("orders")',
         'op.create_table("scratch", sa.Column("id", sa.Integer))\nop.drop_table("scratch")'),
    Case("drop-table", 'op.execute("DROP TABLE orders")', None),
    Case("drop-column", 'op.drop_column("users", "name")',
         'op.add_column("users", sa.Column("tmp", sa.Integer))\n'
         'op.drop_column("users", "tmp")'),
    Case("drop-column",
         'with op.batch_alter_table("users") as batch:\n    batch.drop_column("name")', None),
    Case("drop-column", 'op.execute("ALTER TABLE users DROP COLUMN name")',
         'op.execute("ALTER TABLE users ALTER COLUMN name DROP DEFAULT")'),
    Case("rename-table", 'op.rename_table("orders", "purchases")', None),
    Case("rename-column", 'op.alter_column("users", "name", new_column_name="full_name")',
         None),
    Case("rename-column", 'op.execute("ALTER TABLE users RENAME COLUMN name TO full_name")',
         'op.execute("ALTER TABLE users RENAME CONSTRAINT users_pkey TO users_pk")'),
    Case("set-not-null",
         'op.alter_column("users", "email", nullable=False, existing_type=sa.String(50))',
         'op.add_column("users", sa.Column("score", sa.Integer, server_default="0"))\n'
         'op.alter_column("users", "score", nullable=False)'),
    Case("unrenderable-revision",
         'rows = op.get_bind().execute(sa.text("SELECT id FROM users")).fetchall()',
         'op.get_bind().execute(sa.text("UPDATE users SET age = :age WHERE age IS NULL"), '
         '{"age": 0})'),
]


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
