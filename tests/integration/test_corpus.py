"""Real third-party histories and models (tests/fixtures/corpus.py: optuna, mlflow), through the
CLI as their users would run it, on PostgreSQL 18 and SeaweedFS: apply from the project's own
start with a backup under the default lint; detection equal to plain Alembic apart from named,
real drift; a failing revision after head rolled back under every policy back to the exact
schema; backup → restore into a fresh database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.corpus import (
    CORPUS,
    FAILING_REVISION,
    FAILING_TABLE,
    MLFLOW,
    CorpusProject,
    DiffKey,
    add_failing_revision,
    alembic_diffs,
    copy_scripts,
    detected_diffs,
    dump_difference,
    schema_dump,
    schemashift,
    start_and_upgrade,
    start_only,
    without_parts_of_whole_tables,
)
from tests.fixtures.postgres import PgServer
from tests.fixtures.runner_cli import CliRun, parse_events, revision, tables
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.integration

# What plain Alembic finds between each project's models and its own history at head. Each is
# a real difference between the wheel's models and its migrations, not a comparison artefact.
REAL_DRIFT: dict[str, set[DiffKey]] = {
    "optuna": {
        # The models declare trial_heartbeats; no revision creates it (optuna's storage calls
        # metadata.create_all on start-up, which adds it outside Alembic).
        ("add_table", "trial_heartbeats", None),
        # v1.3.0.a left trial_values.trial_id nullable; the model says nullable=False.
        ("modify_nullable", "trial_values", "trial_id"),
        # v3.2.0.a names its index trials_study_id_key; the model's index=True names it
        # ix_trials_study_id: same column, two names.
        ("remove_index", "trials", "trials_study_id_key"),
        ("add_index", "trials", "ix_trials_study_id"),
    },
    "mlflow": {
        # Widened in the models, never by a revision: VARCHAR(20) -> 50, VARCHAR(9) -> 20.
        ("modify_type", "assessments", "assessment_type"),
        ("modify_type", "runs", "status"),
        # Revisions add server defaults the models do not declare.
        ("modify_default", "endpoint_model_mappings", "linkage_type"),
        ("modify_default", "endpoints", "usage_tracking"),
        ("modify_default", "metrics", "step"),
        ("modify_default", "metrics", "is_nan"),
        ("modify_default", "webhooks", "status"),
        # The workspace revision (1b5f0d9ad7c1) creates these indexes; no model declares them.
        ("remove_index", "experiments", "idx_experiments_workspace"),
        ("remove_index", "experiments", "idx_experiments_workspace_creation_time"),
        ("remove_index", "model_version_tags", "idx_model_version_tags_workspace_name_version"),
        ("remove_index", "registered_model_tags", "idx_registered_model_tags_workspace_name"),
        ("remove_index", "registered_models", "idx_registered_models_workspace"),
        # The model declares an FK input_tags.input_uuid -> inputs that no revision creates
        # (unnamed, so the key has no name).
        ("add_fk", "input_tags", None),
        # The model declares index_issues_created_by; no revision creates it.
        ("add_index", "issues", "index_issues_created_by"),
        # The models declare Index("index_<table>_request_id") with no column at all; the
        # database has it on request_id: Alembic sees a changed index (drop and re-add).
        ("remove_index", "trace_request_metadata", "index_trace_request_metadata_request_id"),
        ("add_index", "trace_request_metadata", "index_trace_request_metadata_request_id"),
        ("remove_index", "trace_tags", "index_trace_tags_request_id"),
        ("add_index", "trace_tags", "index_trace_tags_request_id"),
    },
}
# Real drift plain Alembic cannot see (it never compares enum values) and schemashift reports.
BEYOND_ALEMBIC: dict[str, set[DiffKey]] = {
    # v1.2.0.a "adds" WAITING by altering trials.state to an Enum of the same name: on
    # PostgreSQL that leaves the type as it was, so the database's trialstate lacks WAITING
    # (an INSERT of a waiting trial fails there).
    "optuna": {("enum_values_added", None, "trialstate")},
    "mlflow": set(),
}
POLICIES = ["downgrade", "restore", "none"]


@pytest.fixture(scope="module", params=CORPUS, ids=[p.name for p in CORPUS])
def project(request: pytest.FixtureRequest) -> CorpusProject:
    chosen: CorpusProject = request.param
    assert chosen.installed_version() == chosen.version, (
        f"{chosen.distribution} {chosen.installed_version()} is installed; the corpus pins "
        f"{chosen.version} (pyproject.toml, test extra): reinstall with pip install -e '.[dev]'")
    return chosen


@pytest.fixture(scope="module")
def at_head(project: CorpusProject, pg_server: PgServer) -> Iterator[str]:
    """A database the project's own way brought to head (plain Alembic): read-only for tests."""
    name = pg_server.create_database()
    url = pg_server.app_url(name)
    try:
        start_and_upgrade(project, url)
        assert revision(url) == project.head
        yield url
    finally:
        pg_server.drop_database(name)


@pytest.fixture(scope="module")
def head_dump(at_head: str, pg_server: PgServer) -> list[str]:
    return schema_dump(pg_server, at_head)


@pytest.fixture
def bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh bucket (s3_bucket's twin) for tests whose other fixtures are module-scoped."""
    name = s3_server.create_bucket()
    try:
        yield name
    finally:
        s3_server.empty_and_delete_bucket(name)


def apply(database_url: str, migrations: str | Path, *args: str, pg_server: PgServer,
          s3_server: S3Server) -> CliRun:
    done = schemashift("apply", "--json", "--database-url", database_url,
                       "--migrations", str(migrations), *args,
                       pg_bin_dir=pg_server.bin_dir, env=s3_server.env())
    return CliRun(done.exit_code, parse_events(done.stdout), done.stdout, done.stderr)


def test_apply_from_the_projects_own_start_to_head_with_a_backup(
    project: CorpusProject, database_url: str, pg_server: PgServer, s3_server: S3Server,
    bucket: str, head_dump: list[str],
) -> None:
    start_only(project, database_url)

    run = apply(database_url, project.migrations_ref, "--backup-url", f"s3://{bucket}/corpus/",
                pg_server=pg_server, s3_server=s3_server)

    assert run.exit_code == 0, run
    assert (run.result["outcome"], run.result["reason"]) == ("Succeeded", "Succeeded"), run
    assert run.result["backup"]["verified"] is True
    stages = run.result["stages"]
    assert len(stages) == project.revision_count
    assert {s["state"] for s in stages} == {"Succeeded"}
    assert revision(database_url) == project.head
    # The same schema plain `alembic upgrade head` builds: the history's semantics are kept.
    after = schema_dump(pg_server, database_url)
    assert after == head_dump, dump_difference(head_dump, after)


def test_detect_equals_plain_alembic_apart_from_named_real_drift(
    project: CorpusProject, at_head: str
) -> None:
    plain = alembic_diffs(project, at_head)
    assert plain == REAL_DRIFT[project.name], (
        "plain Alembic's diffs changed: re-derive REAL_DRIFT",
        sorted(plain - REAL_DRIFT[project.name], key=str),
        sorted(REAL_DRIFT[project.name] - plain, key=str))

    done = schemashift("detect-schema-changes", "--json", "--database-url", at_head,
                       "--metadata", project.metadata, "--migrations", project.migrations_ref)

    assert done.exit_code == 0, done
    detected = detected_diffs(done.json_document())
    expected = without_parts_of_whole_tables(plain) | BEYOND_ALEMBIC[project.name]
    assert detected == expected, (
        sorted(detected - expected, key=str), sorted(expected - detected, key=str))


# What a reviewer allows for the rollback runs below. mlflow's 75868b020152 reads rows (it cannot be
# previewed), so `jobs`, empty before the plan, may hold rows when dc11669786a5 indexes it.
REVIEWED = {
    "optuna": ("unrenderable-revision",),
    "mlflow": ("unrenderable-revision", "create-index-not-concurrently"),
}


def test_lint_says_which_unpreviewable_revision_keeps_an_empty_table_from_being_exempt(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, bucket: str,
) -> None:
    start_and_upgrade(MLFLOW, database_url, MLFLOW.rollback_from)
    before = schema_dump(pg_server, database_url)

    run = apply(database_url, MLFLOW.migrations_ref, "--backup-url", f"s3://{bucket}/corpus/",
                "--allow", "unrenderable-revision", pg_server=pg_server, s3_server=s3_server)

    assert (run.exit_code, run.result["reason"]) == (2, "LintBlocked"), run
    lint = run.of("plan")[0]["plan"]["lint"]
    finding = next(f for f in lint if f["rule"] == "create-index-not-concurrently")
    assert finding["revision"] == "dc11669786a5", finding
    assert ("it held no row before the plan, but revision 75868b020152 could not be previewed"
            in finding["message"]), finding
    assert revision(database_url) == MLFLOW.rollback_from
    assert schema_dump(pg_server, database_url) == before


@pytest.mark.parametrize("policy", POLICIES)
def test_failing_revision_after_head_leaves_the_schema_as_it_was(
    project: CorpusProject, policy: str, database_url: str, tmp_path: Path,
    pg_server: PgServer, s3_server: S3Server, bucket: str, head_dump: list[str],
) -> None:
    start_and_upgrade(project, database_url, project.rollback_from)
    before = schema_dump(pg_server, database_url)
    scripts = copy_scripts(project, tmp_path)
    add_failing_revision(scripts, project.head)

    # The database holds rows here (mlflow's default workspace), so the lint rightly asks for a
    # review of what it cannot preview offline; this is the reviewed run.
    run = apply(database_url, scripts, "--backup-url", f"s3://{bucket}/corpus/",
                "--rollback-policy", policy, "--allow", ",".join(REVIEWED[project.name]),
                pg_server=pg_server, s3_server=s3_server)

    assert run.exit_code == 1, run
    result = run.result
    assert [s["revision"] for s in result["stages"] if s["state"] == "Failed"] == [
        FAILING_REVISION], run
    assert "division by zero" in result["message"], result["message"]
    assert FAILING_TABLE not in tables(database_url)
    after = schema_dump(pg_server, database_url)
    if policy == "none":
        # Left as it is, and said so: every real revision applied, the failing one undone by
        # its own transaction.
        assert (result["outcome"], result["reason"]) == ("Failed", "FailedWithoutRollback")
        assert result["currentRevision"] == project.head
        assert revision(database_url) == project.head
        assert after == head_dump, dump_difference(head_dump, after)
        return
    assert result["outcome"] == "RolledBack", result
    if policy == "restore":
        assert result["reason"] == "RolledBackByRestore"
    assert result["currentRevision"] == project.rollback_from
    assert revision(database_url) == project.rollback_from
    assert after == before, dump_difference(before, after)


def test_backup_restores_into_a_fresh_database_with_the_same_schema(
    project: CorpusProject, at_head: str, head_dump: list[str], pg_server: PgServer,
    s3_server: S3Server, bucket: str,
) -> None:
    backup = schemashift("backup", "--json", "--database-url", at_head,
                         "--backup-url", f"s3://{bucket}/corpus/",
                         pg_bin_dir=pg_server.bin_dir, env=s3_server.env())
    assert backup.exit_code == 0, backup
    status = backup.json_document()
    assert status["verified"] is True

    target = pg_server.create_database()
    try:
        url = pg_server.app_url(target)
        restore = schemashift("restore", status["url"], "--database-url", url,
                              pg_bin_dir=pg_server.bin_dir, env=s3_server.env())
        assert restore.exit_code == 0, restore
        restored = schema_dump(pg_server, url)
        assert restored == head_dump, dump_difference(head_dump, restored)
        assert revision(url) == project.head
    finally:
        pg_server.drop_database(target)
