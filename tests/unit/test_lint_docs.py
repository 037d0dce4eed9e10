"""docs/lint.md shows what the code prints: its example steps are the real ones."""

from __future__ import annotations

import re
from pathlib import Path

from schemashift import scripts
from schemashift.plan import locks, render
from schemashift.plan.rules import RULES
from tests.fixtures.histories import write_history
from tests.fixtures.lint_cases import BASE
from tests.fixtures.safe_forms import SAFE_FORMS

ROOT = Path(__file__).resolve().parents[2]


def test_the_documented_steps_are_what_plan_shows_for_the_not_null_form(tmp_path: Path) -> None:
    directory = write_history(tmp_path, [BASE, SAFE_FORMS["not-null"]])
    config = scripts.alembic_config(directory)
    script = scripts.script_directory(config)
    revision = script.get_revision("s1")
    assert revision is not None
    rendered = render.render_revisions(config, script, [revision], "base0")
    steps = locks.steps_by_revision(rendered)["s1"]
    [block] = re.findall(r"```text\n(.*?)```", (ROOT / "docs" / "lint.md").read_text(), re.S)
    assert [line.strip() for line in block.splitlines()[2:]] == steps


def test_the_override_example_names_real_rules() -> None:
    text = (ROOT / "docs" / "lint.md").read_text()
    named = re.findall(r'"allow": \["([a-z-]+)"\]', text)
    assert named and set(named) <= set(RULES)
