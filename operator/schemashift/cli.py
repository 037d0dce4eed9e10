"""The `schemashift` command line: one function per command, argument handling only."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from schemashift import errors, project, redact
from schemashift.runner import options_table as table

F = TypeVar("F", bound=Callable[..., Any])


def _common_options(func: F) -> F:
    options = [
        click.option("--database-url", envvar="SCHEMASHIFT_DATABASE_URL", show_envvar=True,
                     help="PostgreSQL URL (postgresql://user:pass@host/db)."),
        click.option("--metadata", "metadata_ref", envvar="SCHEMASHIFT_METADATA",
                     show_envvar=True, help="Models: MODULE:ATTR naming a MetaData or a Base."),
        click.option("--migrations", type=click.Path(path_type=Path),
                     envvar="SCHEMASHIFT_MIGRATIONS", show_envvar=True,
                     help="Alembic script directory."),
        click.option(table.ENVIRONMENT.flag, "environment", default=table.ENVIRONMENT.default,
                     show_default=True, type=click.Choice(table.ENVIRONMENT.choices),
                     envvar=table.ENVIRONMENT.env, show_envvar=True,
                     help=table.ENVIRONMENT.help),
        click.option("--json", "as_json", is_flag=True,
                     help="Machine-readable output."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _project(kwargs: dict[str, Any]) -> project.Project:
    return project.Project(
        database_url=kwargs.pop("database_url"),
        metadata_ref=kwargs.pop("metadata_ref"),
        migrations_dir=kwargs.pop("migrations"),
        environment=project.parse_environment(kwargs.pop("environment")),
        compare_server_defaults=kwargs.pop("compare_server_defaults", True),
    )


def _compare_option(func: F) -> F:
    """Commands that compare the models with the database (detect, check, generate, verify)."""
    return click.option(
        "--compare-server-defaults/--no-compare-server-defaults", default=True,
        show_default=True, envvar="SCHEMASHIFT_COMPARE_SERVER_DEFAULTS", show_envvar=True,
        help="Compare DEFAULT expressions (as PostgreSQL renders them) between the models and "
             "the database; identity and generated columns are compared either way.",
    )(func)


def _module(name: str) -> Any:
    # Imported on use: the operator's and Kubernetes client's imports cost a second at start-up.
    return importlib.import_module(f"schemashift.{name}")


def _emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _run_options(**kwargs: Any) -> Any:
    return _module("runner.pipeline").RunOptions(**kwargs)


def _table_option(row: table.Option, **overrides: Any) -> Callable[[F], F]:
    """click's option for a row of the run options table (runner/options_table.py)."""
    attrs: dict[str, Any] = {"envvar": row.env or None, "show_envvar": bool(row.env),
                             "help": row.help}
    if isinstance(row, table.Flag):
        attrs["is_flag"] = True
    elif isinstance(row, table.RuleNames):
        attrs["multiple"] = True
    else:
        attrs.update(default=row.default, show_default=row.default is not None)
    if isinstance(row, table.Choice):
        attrs["type"] = click.Choice(row.choices)
    elif isinstance(row, table.Count):
        attrs["type"] = int  # the range is checked by RunOptions, with the hint the table gives
    attrs.update(overrides)
    return click.option(row.flag, row.name, **attrs)


def _runner_options(func: F) -> F:
    for row in reversed(table.RUN_OPTIONS):
        func = _table_option(row)(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="schemashift")
def cli() -> None:
    """Safe PostgreSQL schema changes for SQLAlchemy models: detect, generate, plan, apply."""


@cli.command("detect-schema-changes")
@_common_options
@_compare_option
def detect_schema_changes(as_json: bool, **kwargs: Any) -> None:
    """Show how the database differs from the models (exit 0 either way)."""
    report = _module("diff").detect(_project(kwargs))
    _emit(as_json, report.to_dict(), report.to_text())


cli.add_command(detect_schema_changes, "detect")


@cli.command("check")
@_common_options
@_compare_option
def check(as_json: bool, **kwargs: Any) -> None:
    """CI gate: exit 1 when the models and the database differ."""
    report = _module("diff").detect(_project(kwargs))
    _emit(as_json, report.to_dict(), report.to_text())
    if report.has_changes:
        sys.exit(errors.EXIT_FAILED)


@cli.command("create-model-migration")
@_common_options
@_compare_option
@click.option("-m", "--message", required=True, help="What the revision does.")
@click.option("--rename", "renames", multiple=True, metavar="OLD:NEW",
              help="Treat a dropped+added table or column (table.old:table.new) as a rename.")
@click.option("--apply", "apply_now", is_flag=True, help="Upgrade the database right after.")
@click.option("--backfill", "backfills", multiple=True, metavar="TABLE.COLUMN=SQL_EXPR",
              help="Fill a new NOT NULL column of a table with rows: added nullable, filled "
                   "with SQL_EXPR in batches, then set NOT NULL.")
@click.option("--unsafe", is_flag=True,
              help="Alembic's plain operations, also on existing tables (default: lock-safe).")
@click.option("--split/--no-split", default=True, show_default=True,
              help="Write an expand revision (safe while the old release runs) and a contract "
                   "revision (after the rollout), each marked with its phase; --no-split (and "
                   "--unsafe) write one unmarked revision.")
def create_model_migration(
    as_json: bool, message: str, renames: tuple[str, ...], apply_now: bool,
    backfills: tuple[str, ...], unsafe: bool, split: bool, **kwargs: Any
) -> None:
    """Write Alembic revisions (upgrade and downgrade) from the model changes."""
    paths = _module("generate").create_model_migration(
        _project(kwargs), message=message, renames=list(renames), apply=apply_now,
        unsafe=unsafe, backfills=list(backfills), split=split,
        note=lambda text: click.echo(text, err=True),
    )
    _emit(as_json, {"path": str(paths[-1]), "paths": [str(p) for p in paths]},
          "\n".join(f"Created migration file: {path}" for path in paths))


@cli.command("sync-models-to-db")
@_common_options
def sync_models_to_db(as_json: bool, **kwargs: Any) -> None:
    """Development only: create missing tables and columns; never drops or alters."""
    _module("generate").sync_models_to_db(_project(kwargs), echo=click.echo)


@cli.command("plan")
@_common_options
@_table_option(table.TARGET, envvar=None, show_envvar=False)
@_table_option(table.PHASE, envvar=None, show_envvar=False)
def plan_command(as_json: bool, target: str, phase: str, **kwargs: Any) -> None:
    """Revisions to apply, their stages, lint and integrity findings, and the SQL."""
    result = _module("plan").build_plan(_project(kwargs), target=target, phase=phase)
    _emit(as_json, result.to_dict(), result.to_text())
    refused = result.refusal()  # the plan is shown, then why this phase cannot run (exit 2)
    if refused is not None:
        raise refused


@cli.command("apply")
@_common_options
@_compare_option
@_runner_options
def apply(as_json: bool, **kwargs: Any) -> None:
    """Local mode: the same pipeline the Job runs (lock, backup, stages, verify, rollback)."""
    pipeline = _module("runner.pipeline")
    proj = _project(kwargs)
    result = pipeline.apply(proj, _run_options(**kwargs), pipeline.local_reporter(as_json))
    sys.exit(result.exitCode)


@cli.command("run-job")
@_common_options
@_compare_option
@_runner_options
@click.option("--resource", envvar="SCHEMASHIFT_RESOURCE", metavar="NAMESPACE/NAME",
              help="The SchemaMigration this Job runs for; the operator reads live progress from "
                   "this pod's log (the pod has no API rights).")
@click.option("--termination-log", type=click.Path(path_type=Path),
              envvar="SCHEMASHIFT_TERMINATION_LOG", default="/dev/termination-log",
              show_default=True, help="Where the final result is written for the operator.")
def run_job(as_json: bool, resource: str | None, termination_log: Path, **kwargs: Any) -> None:
    """The Kubernetes Job's entrypoint (options come from the environment the operator sets)."""
    pipeline = _module("runner.pipeline")
    proj = _project(kwargs)
    result = pipeline.apply(proj, _run_options(**kwargs), pipeline.local_reporter(True))
    pipeline.write_termination_message(result, termination_log)
    sys.exit(result.exitCode)


@cli.command("backup")
@_common_options
@_table_option(table.BACKUP_URL, required=True, help="s3://bucket/prefix/")
def backup(as_json: bool, backup_url: str, **kwargs: Any) -> None:
    """Take a verified pg_dump into object storage."""
    status = _module("runner.backup").backup(
        _project(kwargs), backup_url, _module("runner.pipeline").local_reporter(as_json)
    )
    _emit(as_json, status.__dict__, f"Backup verified: {status.url} ({status.sizeBytes} bytes, "
          f"sha256 {status.sha256})")


@cli.command("restore")
@_common_options
@click.argument("url")
@click.option("--clean", is_flag=True, help="Drop existing objects before restoring.")
@click.option("--jobs", "-j", default=1, show_default=True, type=int,
              help="Parallel restore (downloads the archive to a file first).")
def restore(as_json: bool, url: str, clean: bool, jobs: int, **kwargs: Any) -> None:
    """Restore a backup taken by schemashift into the database."""
    _module("runner.backup").restore(
        _project(kwargs), url, clean=clean, jobs=jobs,
        reporter=_module("runner.pipeline").local_reporter(as_json),
    )
    _emit(as_json, {"restored": url}, f"Restored {url}")


@cli.group("backups")
def backups() -> None:
    """List the backups under a prefix, and prune them by retention (keep, max age)."""


@backups.command("list")
@_table_option(table.BACKUP_URL, required=True, help="s3://bucket/prefix/")
@click.option("--database", default=None, help="Only this database's backups.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backups_list(backup_url: str, database: str | None, as_json: bool) -> None:
    """Every backup under the prefix, newest first: URL, database, from-revision, time, size,
    verified."""
    module = _module("runner.retention")
    rows = module.list_stored(backup_url, database)
    _emit(as_json, {"backups": [row.__dict__ for row in rows]}, module.format_table(rows))


@backups.command("prune")
@_table_option(table.BACKUP_URL, required=True, help="s3://bucket/prefix/")
@_table_option(table.BACKUP_KEEP)
@_table_option(table.BACKUP_MAX_AGE)
@_table_option(table.STALE_AFTER)
@click.option("--database", default=None, help="Only this database's backups.")
@click.option("--dry-run", is_flag=True, help="Delete nothing: print what would be deleted.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backups_prune(backup_url: str, backup_keep: int, backup_max_age: str, stale_after: str,
                  database: str | None, dry_run: bool, as_json: bool) -> None:
    """Delete the verified backups outside the retention limits (never a database's newest),
    and what interrupted runs left behind."""
    module = _module("runner.retention")
    report = module.prune_command(backup_url, backup_keep, backup_max_age, dry_run=dry_run,
                                  stale_after=stale_after, database=database)
    _emit(as_json, report.to_dict(), module.format_report(report))


@cli.command("operator")
@click.option("--namespace", "-n", "namespaces", multiple=True,
              help="Watch only these namespaces (default: all).")
@click.option("--liveness", default="http://0.0.0.0:8080/healthz", show_default=True,
              envvar="SCHEMASHIFT_LIVENESS")
@click.option("--metrics-port", default=9090, show_default=True, type=int,
              envvar="SCHEMASHIFT_METRICS_PORT")
@click.option("--job-image", envvar="SCHEMASHIFT_JOB_IMAGE",
              help="Image for Jobs when a resource names none (default: spec.migrations.image).")
@click.option("--leader-elect/--no-leader-elect", default=True, show_default=True,
              envvar="SCHEMASHIFT_LEADER_ELECT",
              help="Run only while holding a coordination.k8s.io Lease, so replicas never act "
                   "at once (off: this process must be the only operator).")
@click.option("--lease-name", default="schemashift-operator", show_default=True,
              envvar="SCHEMASHIFT_LEASE_NAME", help="The leader election Lease.")
@click.option("--lease-namespace", envvar="POD_NAMESPACE",
              help="The Lease's namespace (default: the pod's, else the kubeconfig's).")
def operator(namespaces: tuple[str, ...], liveness: str, metrics_port: int,
             job_image: str | None, leader_elect: bool, lease_name: str,
             lease_namespace: str | None) -> None:
    """Run the Kubernetes operator (kopf)."""
    module = _module("operator")
    leader = module.LeaderElection(lease_name, lease_namespace) if leader_elect else None
    module.run(namespaces=list(namespaces), liveness=liveness, metrics_port=metrics_port,
               job_image=job_image, leader=leader)


@cli.command("approve")
@click.argument("name")
@click.option("--namespace", "-n", envvar="SCHEMASHIFT_NAMESPACE", default=None,
              help="Default: the pod's namespace, else the kubeconfig's.")
@click.option("--plan-hash", default=None,
              help="The hash you reviewed (status.plan.hash); refused if the plan changed since.")
def approve(name: str, namespace: str | None, plan_hash: str | None) -> None:
    """Approve the plan a SchemaMigration awaits, under your own user name."""
    done = _module("kube.approve").approve(name, namespace, plan_hash)
    click.echo(f"SchemaMigration {done.namespace}/{done.name}: plan {done.plan_hash} approved "
               f"by {done.approver}")


@cli.command("wait")
@click.argument("name")
@click.option("--namespace", "-n", envvar="SCHEMASHIFT_NAMESPACE", default=None,
              help="Default: the pod's namespace, else the kubeconfig's.")
@_table_option(table.WAIT_TIMEOUT)
def wait(name: str, namespace: str | None, timeout: str) -> None:
    """Block until a SchemaMigration is Succeeded; exit 1 on Failed/RolledBack (Helm hooks)."""
    wait_for = _module("kube.wait").wait_for
    sys.exit(wait_for(name, namespace=namespace, timeout=timeout, echo=click.echo))


@cli.command("wait-for-schema")
@click.option("--database-url", envvar="SCHEMASHIFT_DATABASE_URL", show_envvar=True,
              required=True, help="PostgreSQL URL; a role that may SELECT alembic_version.")
@click.option("--migrations", type=click.Path(path_type=Path), envvar="SCHEMASHIFT_MIGRATIONS",
              show_envvar=True, required=True,
              help="The image's Alembic script directory (its head is the revision waited for).")
@click.option("--revision", envvar="SCHEMASHIFT_REVISION", show_envvar=True, default=None,
              help="Wait for this revision instead of the history's head.")
@_table_option(table.SCHEMA_WAIT_TIMEOUT)
@_table_option(table.SCHEMA_WAIT_INTERVAL)
def wait_for_schema(database_url: str, migrations: Path, revision: str | None, timeout: str,
                    interval: str) -> None:
    """Block until the database is at the image's revision or after it (app initContainers)."""
    wait = _module("runner.schema_wait").wait_for_schema
    sys.exit(wait(database_url, migrations, revision, timeout, interval, echo=click.echo))


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(errors.EXIT_USAGE)
    except errors.SchemashiftError as exc:
        click.echo(f"error: {redact.redact(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:
        if os.environ.get("SCHEMASHIFT_DEBUG"):
            raise
        command = sys.argv[1] if sys.argv[1:] and sys.argv[1] in cli.commands else None
        where = f" in {command}" if command else ""
        click.echo(f"error: unexpected {type(exc).__name__}{where}: {redact.redact(str(exc))}\n"
                   "  hint: rerun with SCHEMASHIFT_DEBUG=1 for a traceback, and report it",
                   err=True)
        sys.exit(errors.EXIT_INTERNAL)


if __name__ == "__main__":
    main()
