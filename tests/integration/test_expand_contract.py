"""Expand/contract in the runner and `plan`, on histories written here (marked and unmarked):
which revisions each phase applies, what stays pending (read back from the database), the
refusals (exit 2, nothing changed) and the expand gate before (the plan) and after (the catalog).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.histories import Revision, write_history
from tests.fixtures.models import execute, invoke, query
from tests.fixtures.runner_cli import CliRun, columns, revision, run_apply

pytestmark = pytest.mark.integration

CREATE = Revision(
    "r1", "patients",
    'op.create_table("p", sa.Column("id", sa.Integer, primary_key=True), '
    'sa.Column("name", sa.Text), sa.Column("fax", sa.Text, nullable=False))',
    'op.drop_table("p")')
# What create-model-migration writes for a dropped NOT NULL column: the expand lets the new code
# leave it out, the contract drops it.
EXPAND = Revision(
    "e1", "fax optional",
    'op.alter_column("p", "fax", nullable=True, existing_type=sa.Text)\n'
    'op.add_column("p", sa.Column("email", sa.Text))',
    'op.drop_column("p", "email")\n'
    'op.alter_column("p", "fax", nullable=False, existing_type=sa.Text)')
CONTRACT = Revision("c1", "drop fax", 'op.drop_column("p", "fax")',
                    'op.add_column("p", sa.Column("fax", sa.Text))')
EXPAND_2 = Revision("e2", "phone", 'op.add_column("p", sa.Column("phone", sa.Text))',
                    'op.drop_column("p", "phone")')
CONTRACT_2 = Revision("c2", "drop name", 'op.drop_column("p", "name")',
                      'op.add_column("p", sa.Column("name", sa.Text))')
PHASES = {"e1": "expand", "e2": "expand", "c1": "contract", "c2": "contract"}
OLD_INSERT = "INSERT INTO p (name, fax) VALUES ('old code', '555-0100')"


def history(tmp_path: Path, revisions: list[Revision], marked: bool = True) -> Path:
    """The revisions, each marked with its phase (`schemashift = {"phase": ...}`) if asked."""
    directory = write_history(tmp_path, revisions)
    for index, written in enumerate(revisions):
        phase = PHASES.get(written.id)
        if marked and phase:
            path = directory / "versions" / f"{index:04d}_{written.id}.py"
            path.write_text(path.read_text() + f'\nschemashift = {{"phase": "{phase}"}}\n')
    return directory


def apply(url: str, migrations: Path, *args: str) -> CliRun:
    return run_apply(url, migrations, "--lint", "warn", *args)


def applied(run: CliRun) -> list[str]:
    return [s["revision"] for s in run.result["stages"] if s["state"] == "Succeeded"]


def at(url: str, migrations: Path, target: str) -> None:
    run = apply(url, migrations, "--target", target)
    assert run.exit_code == 0, run


def test_expand_stops_before_the_contract_and_old_code_still_works(
        database_url: str, tmp_path: Path) -> None:
    migrations = history(tmp_path, [CREATE, EXPAND, CONTRACT])
    at(database_url, migrations, "r1")
    execute(database_url, OLD_INSERT)

    run = apply(database_url, migrations, "--phase", "expand")

    assert run.exit_code == 0, run
    assert applied(run) == ["e1"]
    assert run.result["pendingContract"] == ["c1"]
    assert revision(database_url) == "e1"
    assert "contract revision(s) pending: c1" in run.result["message"]
    assert columns(database_url, "p") == ["id", "name", "fax", "email"]
    execute(database_url, OLD_INSERT, "INSERT INTO p (name) VALUES ('new code')")
    assert query(database_url, "SELECT name, fax FROM p ORDER BY id") == [
        ("old code", "555-0100"), ("old code", "555-0100"), ("new code", None)]
    plan_event = run.of("plan")[0]["plan"]
    assert [r["phase"] for r in plan_event["phase"]["revisions"]] == ["expand", "contract"]

    contract = apply(database_url, migrations, "--phase", "contract")

    assert contract.exit_code == 0, contract
    assert applied(contract) == ["c1"]
    assert contract.result["pendingContract"] == []
    assert columns(database_url, "p") == ["id", "name", "email"]


def test_expand_with_nothing_to_expand_reports_the_pending_contract(
        database_url: str, tmp_path: Path) -> None:
    migrations = history(tmp_path, [CREATE, EXPAND, CONTRACT])
    at(database_url, migrations, "e1")

    run = apply(database_url, migrations, "--phase", "expand")

    assert run.exit_code == 0, run
    assert run.result["reason"] == "AlreadyAtTarget"
    assert run.result["pendingContract"] == ["c1"]
    assert revision(database_url) == "e1"


def test_contract_is_refused_before_its_expand(database_url: str, tmp_path: Path) -> None:
    migrations = history(tmp_path, [CREATE, EXPAND, CONTRACT])
    at(database_url, migrations, "r1")

    run = apply(database_url, migrations, "--phase", "contract")

    assert run.exit_code == 2, run
    assert run.result["reason"] == "ContractBeforeExpand"
    assert "contract refused before its expand" in run.result["message"]
    assert "e1" in run.result["message"] and "Nothing was changed" in run.result["message"]
    assert run.result["pendingContract"] == ["c1"]
    assert revision(database_url) == "r1"


def test_expand_over_an_earlier_release_contract_is_refused(
        database_url: str, tmp_path: Path) -> None:
    migrations = history(tmp_path, [CREATE, EXPAND, CONTRACT, EXPAND_2, CONTRACT_2])
    at(database_url, migrations, "e1")  # the earlier release's contract (c1) never ran

    run = apply(database_url, migrations, "--phase", "expand")

    assert run.exit_code == 2, run
    assert run.result["reason"] == "ExpandSkipsContract"
    assert "jump over the unapplied contract revision c1" in run.result["message"]
    assert "e2" in run.result["message"]
    assert run.result["pendingContract"] == ["c1", "c2"]
    assert revision(database_url) == "e1"

    contract = apply(database_url, migrations, "--phase", "contract")  # the way out

    assert contract.exit_code == 0, contract
    assert applied(contract) == ["c1"]
    assert contract.result["pendingContract"] == ["c2"]
    expand = apply(database_url, migrations, "--phase", "expand")
    assert (expand.exit_code, applied(expand)) == (0, ["e2"]), expand


def test_expand_that_breaks_old_code_is_refused_before_any_change(
        database_url: str, tmp_path: Path) -> None:
    wrongly_marked = Revision("e1", "drop fax, marked expand", 'op.drop_column("p", "fax")',
                              'op.add_column("p", sa.Column("fax", sa.Text))')
    migrations = history(tmp_path, [CREATE, wrongly_marked])
    at(database_url, migrations, "r1")

    run = apply(database_url, migrations, "--phase", "expand")

    assert run.exit_code == 2, run
    assert run.result["reason"] == "IncompatibleExpand"
    assert "[e1] drops column p.fax" in run.result["message"]
    assert "Nothing was changed" in run.result["message"]
    assert revision(database_url) == "r1"
    assert columns(database_url, "p") == ["id", "name", "fax"]
    assert apply(database_url, migrations, "--phase", "all").exit_code == 0  # the old way


def test_expand_that_breaks_old_code_unseen_by_the_plan_is_rolled_back(
        database_url: str, tmp_path: Path) -> None:
    hidden = Revision(
        "e1", "a drop the plan cannot read",
        "op.execute(\"DO $$ BEGIN EXECUTE 'ALTER TABLE p ' || 'DROP COLUMN fax'; END $$\")",
        'op.add_column("p", sa.Column("fax", sa.Text, nullable=False))')
    migrations = history(tmp_path, [CREATE, hidden])
    at(database_url, migrations, "r1")

    run = apply(database_url, migrations, "--phase", "expand")

    assert run.exit_code == 1, run
    assert (run.result["outcome"], run.result["reason"]) == ("RolledBack", "IncompatibleExpand")
    assert "column public.p.fax is gone" in run.result["message"]
    assert revision(database_url) == "r1"
    assert columns(database_url, "p") == ["id", "name", "fax"]


FAX_DEFAULT = Revision(
    "d1", "fax defaults to none",
    'op.alter_column("p", "fax", server_default="none", existing_type=sa.Text, '
    'existing_nullable=False)',
    'op.alter_column("p", "fax", server_default=None, existing_type=sa.Text, '
    'existing_nullable=False)')


def test_dropping_the_default_of_a_not_null_column_is_contract_work(
        database_url: str, tmp_path: Path) -> None:
    no_default = Revision("e1", "no fax default", FAX_DEFAULT.downgrade_src,
                          FAX_DEFAULT.upgrade_src)
    migrations = history(tmp_path, [CREATE, FAX_DEFAULT, no_default], marked=False)
    at(database_url, migrations, "d1")

    expand = apply(database_url, migrations, "--phase", "expand")
    plan = invoke("plan", "--database-url", database_url, "--migrations", str(migrations),
                  "--phase", "all", "--json")

    assert (expand.exit_code, applied(expand)) == (0, []), expand
    assert expand.result["pendingContract"] == ["e1"]
    phases = {r["revision"]: (r["phase"], r["why"])
              for r in json.loads(plan.out)["phase"]["revisions"]}
    assert phases["e1"] == ("contract", "drops the default of p.fax, which is NOT NULL")
    execute(database_url, "INSERT INTO p (name) VALUES ('old code')")  # nothing was changed
    assert apply(database_url, migrations, "--phase", "contract").exit_code == 0


def test_an_expand_that_drops_a_default_old_code_needs_is_rolled_back(
        database_url: str, tmp_path: Path) -> None:
    hidden = Revision(
        "e1", "a drop of the default the plan cannot read",
        "op.execute(\"DO $$ BEGIN EXECUTE 'ALTER TABLE p ALTER fax ' || 'DROP DEFAULT'; END $$\")",
        'op.alter_column("p", "fax", server_default="none")')
    migrations = history(tmp_path, [CREATE, FAX_DEFAULT, hidden])
    at(database_url, migrations, "d1")

    run = apply(database_url, migrations, "--phase", "expand")

    assert run.exit_code == 1, run
    assert (run.result["outcome"], run.result["reason"]) == ("RolledBack", "IncompatibleExpand")
    assert "column public.p.fax lost its default but is NOT NULL" in run.result["message"]
    assert revision(database_url) == "d1"
    execute(database_url, "INSERT INTO p (name) VALUES ('old code')")


def test_unmarked_revisions_classify_by_what_they_do(database_url: str, tmp_path: Path) -> None:
    migrations = history(tmp_path, [CREATE, EXPAND, CONTRACT, EXPAND_2], marked=False)
    at(database_url, migrations, "r1")

    plan = invoke("plan", "--database-url", database_url, "--migrations", str(migrations),
                  "--phase", "expand", "--json")

    assert plan.code == 2, plan
    document = json.loads(plan.out)
    phases = {r["revision"]: (r["phase"], r["marked"]) for r in document["phase"]["revisions"]}
    assert phases == {"e1": ("expand", False), "c1": ("contract", False),
                      "e2": ("expand", False)}
    why = {r["revision"]: r["why"] for r in document["phase"]["revisions"]}
    assert why["c1"] == "drops column p.fax"
    assert "expand would jump over the unapplied contract revision c1" in plan.err


def test_plan_shows_what_each_phase_applies(database_url: str, tmp_path: Path) -> None:
    migrations = history(tmp_path, [CREATE, EXPAND, CONTRACT])
    at(database_url, migrations, "r1")
    base = ("plan", "--database-url", database_url, "--migrations", str(migrations))

    expand = invoke(*base, "--phase", "expand")
    every = invoke(*base)
    contract = invoke(*base, "--phase", "contract")

    assert expand.code == 0, expand
    assert "Target:      e1" in expand.out
    assert "Phase:       expand (applies 1 of 2 pending revision(s))" in expand.out
    assert "  c1  contract  marked  [not in this run]" in expand.out
    assert "Revisions to apply (1):" in expand.out
    assert every.code == 0 and "Target:      c1" in every.out and "Revisions to apply (2):" in \
        every.out, every
    assert contract.code == 2, contract
    assert "Refused (ContractBeforeExpand)" in contract.out
    assert "contract refused before its expand" in contract.err
