"""A revision's own `schemashift = {"allow": [...]}`: validated when rendered, its findings kept
as notices that never block (offline: no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemashift import errors, reasons, scripts
from schemashift.plan import RULES, Plan, lint, override, render
from schemashift.plan.model import NOTICE
from tests.fixtures.histories import Revision, write_history
from tests.fixtures.lint_cases import BASE

DROPS = 'op.drop_column("users", "name")\nop.drop_table("orders")'


def rendered_with(tmp_path: Path, module_source: str | None,
                  upgrade_src: str = DROPS) -> list[render.RenderedRevision]:
    directory = write_history(tmp_path, [BASE, Revision("r1", "drops", upgrade_src)])
    path = directory / "versions" / "0001_r1.py"
    if module_source is not None:
        path.write_text(path.read_text() + "\n" + module_source + "\n")
    config = scripts.alembic_config(directory)
    script = scripts.script_directory(config)
    revision = script.get_revision("r1")
    assert revision is not None
    return render.render_revisions(config, script, [revision], "base0")


def plan_of(rendered: list[render.RenderedRevision]) -> Plan:
    findings = override.apply_overrides(lint.lint(rendered),
                                        {r.revision: r.override for r in rendered})
    return Plan(None, "r1", [], [], findings, [], "h")


def test_an_allowed_rule_is_kept_as_a_notice_and_no_longer_blocks(tmp_path: Path) -> None:
    plan = plan_of(rendered_with(tmp_path, 'schemashift = {"allow": ["drop-column"]}'))
    by_rule = {f.rule: f for f in plan.lint}
    assert set(by_rule) == {"drop-column", "drop-table"}
    assert by_rule["drop-column"].severity == NOTICE
    assert by_rule["drop-column"].message.startswith(
        "allowed by the revision's `schemashift` override: dropping users.name")
    assert by_rule["drop-table"].severity == RULES["drop-table"]
    assert [f.rule for f in plan.blocking("block", [])] == ["drop-table"]


def test_without_an_override_every_finding_blocks(tmp_path: Path) -> None:
    plan = plan_of(rendered_with(tmp_path, None))
    assert sorted(f.rule for f in plan.blocking("block", [])) == ["drop-column", "drop-table"]


def test_the_override_applies_only_to_its_own_revision(tmp_path: Path) -> None:
    directory = write_history(tmp_path, [BASE, Revision("r1", "one", DROPS),
                                         Revision("r2", "two", 'op.drop_column("users", "age")')])
    first = directory / "versions" / "0001_r1.py"
    first.write_text(first.read_text() + '\nschemashift = {"allow": ["drop-column"]}\n')
    config = scripts.alembic_config(directory)
    script = scripts.script_directory(config)
    revisions = [script.get_revision("r1"), script.get_revision("r2")]
    rendered = render.render_revisions(config, script, revisions, "base0")  # type: ignore[arg-type]
    blocking = plan_of(rendered).blocking("block", [])
    assert sorted((f.rule, f.revision) for f in blocking) == [
        ("drop-column", "r2"), ("drop-table", "r1")]


@pytest.mark.parametrize(("source", "expected"), [
    ('schemashift = {"allow": ["drop-colum"]}',
     "names 'drop-colum', which is not a lint rule (did you mean 'drop-column'?)"),
    ('schemashift = {"allow": ["no-such-thing"]}', "names 'no-such-thing', which is not a lint"),
    ('schemashift = {"allow": "drop-column"}', 'must be a list of lint rule names'),
    ('schemashift = {"allow": [1]}', 'must be a list of lint rule names'),
    ('schemashift = ["drop-column"]', "`schemashift` must be a dict, not list"),
    ('schemashift = {"allow": [], "lock_timeout": "60s"}',
     "unknown key(s) 'lock_timeout' (the keys are 'allow', 'phase'); the lock timeout is set per "
     "run (--lock-timeout, spec.safety.lockTimeout)"),
    ('schemashift = {"alow": ["drop-column"]}', "unknown key(s) 'alow'"),
])
def test_a_wrong_override_is_a_clear_error_naming_the_valid_rules(
    tmp_path: Path, source: str, expected: str
) -> None:
    with pytest.raises(errors.UsageError) as caught:
        rendered_with(tmp_path, source)
    error = caught.value
    message = str(error)
    assert expected in message, message
    assert "0001_r1.py" in message
    assert error.exit_code == errors.EXIT_USAGE and error.reason == reasons.INVALID_INPUT
    assert error.hint is not None and 'schemashift = {"allow": ["drop-column"]}' in error.hint
    assert all(rule in error.hint for rule in RULES)


@pytest.mark.parametrize(("source", "expected"), [
    ('schemashift = {"phase": "all"}', "`schemashift[\"phase\"]` is 'all', which is what a run "
                                       "applies, not what a revision is"),
    ('schemashift = {"phase": "expnad"}', "must be 'expand' or 'contract', not 'expnad'"),
    ('schemashift = {"phase": ["expand"]}', "must be 'expand' or 'contract', not ['expand']"),
])
def test_a_wrong_phase_marker_is_a_clear_error(tmp_path: Path, source: str,
                                               expected: str) -> None:
    with pytest.raises(errors.UsageError) as caught:
        rendered_with(tmp_path, source)
    assert expected in str(caught.value), caught.value
    assert caught.value.hint == ('write schemashift = {"phase": "expand"} or '
                                 '{"phase": "contract"}')


@pytest.mark.parametrize("phase", ["expand", "contract"])
def test_a_phase_marker_is_read_beside_an_allow_list(tmp_path: Path, phase: str) -> None:
    [revision] = rendered_with(
        tmp_path, f'schemashift = {{"phase": "{phase}", "allow": ["drop-column"]}}')
    assert revision.override == override.Override(allow=frozenset({"drop-column"}), phase=phase)


def test_an_empty_allow_list_is_accepted(tmp_path: Path) -> None:
    [revision] = rendered_with(tmp_path, 'schemashift = {"allow": []}')
    assert revision.override == override.NO_OVERRIDE
