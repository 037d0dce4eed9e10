"""Expand/contract on real third-party histories from the PyPI wheels (optuna 5.0.0,
mlflow-skinny 3.17.2), whose revisions carry no phase marker: how they classify, what each phase
applies, and the catalog check after an expand on their real revisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.corpus import (
    MLFLOW,
    OPTUNA,
    Cli,
    copy_scripts,
    schemashift,
    start_and_upgrade,
    start_only,
)
from tests.fixtures.postgres import PgServer
from tests.fixtures.runner_cli import parse_events, revision
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.integration

# Where mlflow's history breaks the code that ran before it (everything else is additive).
MLFLOW_CONTRACT = {
    "181f10493468": "sets metrics.value NOT NULL",
    "cfd24bdc0731": "changes the type of runs.status from VARCHAR(20) to VARCHAR(9)",
    "cc1f77228345": "sets params.value NOT NULL",
}


def run(database_url: str, scripts: Path, command: str, *args: str,
        pg_server: PgServer | None = None, s3_server: S3Server | None = None) -> Cli:
    return schemashift(command, "--database-url", database_url, "--migrations", str(scripts),
                       "--json", *args, pg_bin_dir=pg_server.bin_dir if pg_server else None,
                       env=s3_server.env() if s3_server else None)


def result(cli: Cli) -> dict[str, Any]:
    [found] = [e for e in parse_events(cli.stdout) if e["event"] == "result"]
    return found


def test_optuna_expand_is_checked_in_the_catalog_and_restored(
        database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server) -> None:
    """Optuna's v3.0.0.a-d read rows (no offline preview), so they count as expand; the catalog
    after them shows two columns added NOT NULL without a default, which the previous release's
    INSERTs leave out. Their downgrades do not restore the schema exactly (v3.0.0.c's does not
    run at all with optuna 5's models), so the verified backup is what puts it back."""
    start_and_upgrade(OPTUNA, database_url, OPTUNA.rollback_from)  # v2.4.0.a
    scripts = copy_scripts(OPTUNA, tmp_path)
    bucket = s3_server.create_bucket()
    before = revision(database_url)

    plan = run(database_url, scripts, "plan", "--phase", "expand")
    safe_part = run(database_url, scripts, "apply", "--phase", "expand", "--lint", "warn",
                    "--target", "v2.6.0.a")
    caught = run(database_url, scripts, "apply", "--phase", "expand", "--lint", "warn",
                 "--backup-url", f"s3://{bucket}/optuna/", "--rollback-policy", "restore",
                 pg_server=pg_server, s3_server=s3_server)

    assert plan.exit_code == 0, plan
    phases = {r["revision"]: r for r in json.loads(plan.stdout)["phase"]["revisions"]}
    assert {r["phase"] for r in phases.values()} == {"expand"} and len(phases) == 6
    assert "could not be previewed offline" in phases["v3.0.0.c"]["why"]
    assert safe_part.exit_code == 0, result(safe_part)["message"]
    assert (before, revision(database_url)) == ("v2.4.0.a", "v2.6.0.a")
    assert caught.exit_code == 1, caught
    ended = result(caught)
    assert (ended["outcome"], ended["reason"]) == ("RolledBack", "IncompatibleExpand"), ended
    message = ended["message"]
    assert message.startswith("the run failed: the expand broke what the running release "
                              "relies on, as the catalog reads after it: column public."), message
    assert ("column public.trial_values.value_type was added NOT NULL without a default: the "
            "previous release's code's INSERTs leave it out" in message), message
    assert "Restored the backup. The database is at revision v2.6.0.a" in message, message
    assert ended["pendingContract"] == []
    assert revision(database_url) == "v2.6.0.a"
    s3_server.empty_and_delete_bucket(bucket)


def test_mlflow_history_classifies_its_breaking_revisions_as_contract(
        database_url: str, tmp_path: Path) -> None:
    start_only(MLFLOW, database_url)
    scripts = copy_scripts(MLFLOW, tmp_path)

    plan = run(database_url, scripts, "plan", "--phase", "expand")
    refused = run(database_url, scripts, "apply", "--phase", "expand", "--lint", "warn")

    assert plan.exit_code == 2, plan
    phases = json.loads(plan.stdout)["phase"]["revisions"]
    assert len(phases) == MLFLOW.revision_count
    assert {r["revision"]: r["why"] for r in phases if r["phase"] == "contract"} == \
        MLFLOW_CONTRACT
    assert not any(r["marked"] for r in phases)
    assert refused.exit_code == 2, refused
    assert result(refused)["reason"] == "ExpandSkipsContract"
    assert "jump over the unapplied contract revision 181f10493468" in result(refused)["message"]
    assert result(refused)["pendingContract"] == list(MLFLOW_CONTRACT)
    assert revision(database_url) is None

    # Release by release: the expand up to its contract, then that contract.
    expand = run(database_url, scripts, "apply", "--phase", "expand", "--lint", "warn",
                 "--target", "181f10493468")
    assert expand.exit_code == 0, expand
    assert revision(database_url) == "90e64c465722"
    assert result(expand)["pendingContract"] == ["181f10493468"]
    contract = run(database_url, scripts, "apply", "--phase", "contract", "--lint", "warn",
                   "--target", "181f10493468")
    assert contract.exit_code == 0, contract
    assert revision(database_url) == "181f10493468"
    assert result(contract)["pendingContract"] == []
