"""The hook chart's expand and contract phases with the real helm, the real operator and real
PostgreSQL: install, an upgrade whose expand and contract both run (the contract after the
release's resources), a failing contract failing `helm upgrade` with where the database is, the
contract switched off, and the least rights of the waiter and of wait-for-schema.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from kubernetes import client

from tests.e2e.operator_fixtures import Migrations
from tests.e2e.test_chart_install import HOOK, run_helm
from tests.e2e.testbed.controlplane import ControlPlane
from tests.fixtures import runner_cli
from tests.fixtures.histories import Revision, write_history
from tests.fixtures.postgres import PgServer

pytestmark = pytest.mark.e2e

CREATE = Revision("r1", "patients", """
    op.create_table("p", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.Text), sa.Column("fax", sa.Text, nullable=False))
""", 'op.drop_table("p")')
EXPAND = Revision("e1", "fax optional, email", """
    op.alter_column("p", "fax", nullable=True, existing_type=sa.Text)
    op.add_column("p", sa.Column("email", sa.Text))
""", """
    op.drop_column("p", "email")
    op.alter_column("p", "fax", nullable=False, existing_type=sa.Text)
""")
CONTRACT = Revision("c1", "drop fax", 'op.drop_column("p", "fax")',
                    'op.add_column("p", sa.Column("fax", sa.Text))')
EXPAND_2 = Revision("e2", "phone", 'op.add_column("p", sa.Column("phone", sa.Text))',
                    'op.drop_column("p", "phone")')
FAILING_CONTRACT = Revision("c2", "drop name, then fail", """
    op.drop_column("p", "name")
    op.execute("SELECT 1/0")
""", 'op.add_column("p", sa.Column("name", sa.Text))')
PHASES = {"e1": "expand", "e2": "expand", "c1": "contract", "c2": "contract"}



def history(base: Path, revisions: list[Revision]) -> Path:
    """A script directory whose revisions carry their phase marker."""
    directory = write_history(base, revisions)
    for index, written in enumerate(revisions):
        if phase := PHASES.get(written.id):
            path = directory / "versions" / f"{index:04d}_{written.id}.py"
            path.write_text(path.read_text() + f'\nschemashift = {{"phase": "{phase}"}}\n')
    return directory


def release(plane: ControlPlane, helm: str, command: str, ns: str, scripts: Path,
            *more: str) -> subprocess.CompletedProcess[str]:
    return run_helm(plane, helm, command, "hms", str(HOOK), "-n", ns, *release_values(scripts),
                    *more, "--wait", "--timeout", "5m")


def release_values(scripts: Path) -> list[str]:
    values = {
        "migration.spec.database.urlSecretRef.name": "app-db",
        "migration.spec.migrations.image": "ghcr.io/schemashift/hms-migrations:0.1.0",
        "migration.spec.migrations.scriptLocation": str(scripts),
        "migration.spec.environment": "development",
        "migration.spec.backup.enabled": "false",
        "migration.spec.safety.lint": "warn",
        "migration.spec.deadlineSeconds": "300",
        "waiter.timeout": "4m",
    }
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def smigs(migrations: Migrations) -> dict[str, dict[str, Any]]:
    found = migrations.custom.list_namespaced_custom_object(
        "schemashift.io", "v1alpha1", migrations.namespace, "schemamigrations")["items"]
    return {o["metadata"]["name"]: o for o in found}


def of_phase(found: dict[str, dict[str, Any]], phase: str, exclude: set[str]) -> dict[str, Any]:
    names = [n for n, o in found.items() if o["spec"]["phase"] == phase and n not in exclude]
    assert len(names) == 1, (phase, sorted(found))
    return found[names[0]]


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


def test_install_then_an_upgrade_runs_expand_before_and_contract_after_the_release(
    control_plane: ControlPlane, helm: str, migrations: Migrations, database_url: str,
    tmp_path: Path,
) -> None:
    ns = migrations.namespace
    v1 = history(tmp_path / "v1", [CREATE])
    installed = release(control_plane, helm, "install", ns, v1)
    assert installed.returncode == 0, installed.stderr
    first = smigs(migrations)
    assert {o["spec"]["phase"] for o in first.values()} == {"expand", "contract"}
    assert all(o["status"]["phase"] == "Succeeded" for o in first.values())
    assert runner_cli.revision(database_url) == "r1"
    with psycopg.connect(database_url) as conn:  # the running release writes rows
        conn.execute("INSERT INTO p (name, fax) VALUES ('old code', '555-0100')")

    v2 = history(tmp_path / "v2", [CREATE, EXPAND, CONTRACT])
    upgraded = release(control_plane, helm, "upgrade", ns, v2)
    assert upgraded.returncode == 0, upgraded.stderr
    found = smigs(migrations)
    expand = of_phase(found, "expand", set(first))
    contract = of_phase(found, "contract", set(first))
    assert set(first) <= set(found), "the first release's records stay (new content, new names)"
    assert expand["status"]["phase"] == "Succeeded"
    assert (expand["status"]["fromRevision"], expand["status"]["currentRevision"]) == ("r1", "e1")
    pending = condition(expand, "ContractPending")
    assert pending["status"] == "True" and "c1" in pending["message"]
    assert condition(expand, "Ready")["status"] == "True"
    assert contract["status"]["phase"] == "Succeeded"
    assert contract["status"]["currentRevision"] == "c1"
    assert condition(contract, "ContractPending")["status"] == "False"
    # The contract ran after the release's resources: its hook started after the expand ended.
    assert contract["metadata"]["creationTimestamp"] >= expand["status"]["finishedAt"]
    assert runner_cli.revision(database_url) == "c1"
    assert runner_cli.columns(database_url, "p") == ["id", "name", "email"]
    assert runner_cli.scalar(database_url, "SELECT name FROM p") == "old code"
    waiters = [j["name"] for j in migrations.jobs() if j["name"].endswith("-wait")]
    assert waiters == [], "hook-succeeded removed both waiters"
    listed = control_plane.kubectl("-n", ns, "get", "smig", expand["metadata"]["name"]).stdout
    header, row = listed.splitlines()[:2]
    assert row.split()[header.split().index("CONTRACTPENDING")] == "True", listed

    # The same content again: the same names, replaced, nothing left to do.
    again = release(control_plane, helm, "upgrade", ns, v2)
    assert again.returncode == 0, again.stderr
    assert set(smigs(migrations)) == set(found)
    assert runner_cli.revision(database_url) == "c1"


def test_a_failing_contract_fails_the_upgrade_and_says_where_the_database_is(
    control_plane: ControlPlane, helm: str, migrations: Migrations, database_url: str,
    tmp_path: Path,
) -> None:
    ns = migrations.namespace
    v2 = history(tmp_path / "v2", [CREATE, EXPAND, CONTRACT])
    assert release(control_plane, helm, "install", ns, v2).returncode == 0
    before = set(smigs(migrations))
    v3 = history(tmp_path / "v3", [CREATE, EXPAND, CONTRACT, EXPAND_2, FAILING_CONTRACT])
    upgraded = release(control_plane, helm, "upgrade", ns, v3)
    assert upgraded.returncode != 0
    assert "post-upgrade hooks failed" in upgraded.stderr, upgraded.stderr
    # Helm printed the waiter's log: the migration's outcome and where the database is.
    assert "RolledBack" in upgraded.stderr and "The database is at revision e2" in (
        upgraded.stderr), upgraded.stderr
    found = smigs(migrations)
    expand = of_phase(found, "expand", before)
    contract = of_phase(found, "contract", before)
    assert expand["status"]["phase"] == "Succeeded"
    assert condition(expand, "ContractPending")["message"].count("c2") == 1
    assert contract["status"]["phase"] == "RolledBack", contract["status"]
    assert runner_cli.revision(database_url) == "e2"
    assert runner_cli.columns(database_url, "p") == ["id", "name", "email", "phone"]
    history_json = run_helm(control_plane, helm, "history", "hms", "-n", ns, "-o", "json")
    assert [r["status"] for r in json.loads(history_json.stdout)] == ["deployed", "failed"]


def test_with_contract_off_only_the_expand_runs_and_the_contract_waits(
    control_plane: ControlPlane, helm: str, migrations: Migrations, database_url: str,
    tmp_path: Path,
) -> None:
    ns = migrations.namespace
    v1 = history(tmp_path / "v1", [CREATE])
    assert release(control_plane, helm, "install", ns, v1,
                   "--set", "contract.enabled=false").returncode == 0
    assert {o["spec"]["phase"] for o in smigs(migrations).values()} == {"expand"}
    v2 = history(tmp_path / "v2", [CREATE, EXPAND, CONTRACT])
    upgraded = release(control_plane, helm, "upgrade", ns, v2, "--set", "contract.enabled=false")
    assert upgraded.returncode == 0, upgraded.stderr
    expand = [o for o in smigs(migrations).values() if o["status"].get("fromRevision") == "r1"]
    assert len(expand) == 1 and condition(expand[0], "ContractPending")["status"] == "True"
    assert runner_cli.revision(database_url) == "e1"
    assert "fax" in runner_cli.columns(database_url, "p")


def test_a_rerun_waits_for_the_same_migration_still_running_instead_of_replacing_it(
    control_plane: ControlPlane, helm: str, migrations: Migrations, database_url: str,
    tmp_path: Path,
) -> None:
    """As after an upgrade whose --timeout ran out: the same content's expand still runs."""
    ns = migrations.namespace
    gated = Revision("e1", "email once the gate opens", """
        op.add_column("p", sa.Column("email", sa.Text))
        op.execute("DO $$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM gate) LOOP "
                   "PERFORM pg_sleep(0.1); END LOOP; END $$")
    """, 'op.drop_column("p", "email")')
    scripts = history(tmp_path, [CREATE, gated])
    assert runner_cli.run_apply(database_url, scripts, "--target", "r1").exit_code == 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE gate (opened boolean)")
    rendered = run_helm(control_plane, helm, "template", "hms", str(HOOK), "-n", ns,
                        *release_values(scripts))
    expand = next(o for o in yaml.safe_load_all(rendered.stdout)
                  if o and o["kind"] == "SchemaMigration" and o["spec"]["phase"] == "expand")
    name = expand["metadata"]["name"]
    # What the earlier, timed-out attempt left: its runner ServiceAccount and its expand.
    control_plane.kubectl("-n", ns, "create", "serviceaccount", "hms-schemashift-runner")
    control_plane.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(expand))
    running = migrations.wait(name, lambda s: s.get("phase") == "Migrating", 90, "Migrating")
    uid = migrations.get(name)["metadata"]["uid"]
    with subprocess.Popen([helm, "install", "hms", str(HOOK), "-n", ns,
                           *release_values(scripts), "--wait", "--timeout", "5m"],
                          env=control_plane.env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as rerun:
        migrations.wait(f"{name}", lambda s: any(
            j["name"] == f"{name}-wait" for j in migrations.jobs()), 90, "its waiter started")
        assert migrations.get(name)["metadata"]["uid"] == uid, "not replaced mid-run"
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO gate VALUES (true)")
        _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    done = migrations.get(name)
    assert done["metadata"]["uid"] == uid and done["status"]["phase"] == "Succeeded"
    assert done["status"]["fromRevision"] == running["fromRevision"] == "r1"
    assert runner_cli.revision(database_url) == "e1"


def test_argo_cd_mode_is_refused_by_helm_install(
    control_plane: ControlPlane, helm: str, migrations: Migrations, tmp_path: Path,
) -> None:
    done = release(control_plane, helm, "install", migrations.namespace,
                   history(tmp_path, [CREATE]), "--set", "argocd.enabled=true")
    assert done.returncode != 0
    assert "argocd.enabled is for Argo CD" in done.stderr, done.stderr
    assert smigs(migrations) == {}


def can(plane: ControlPlane, account: str, verb: str, what: str, ns: str) -> bool:
    done = plane.kubectl("auth", "can-i", verb, what, "-n", ns, "--as", account, check=False)
    return done.stdout.strip() == "yes"


def test_each_waiter_may_read_its_own_migration_and_nothing_else(
    control_plane: ControlPlane, helm: str, migrations: Migrations, tmp_path: Path,
) -> None:
    """The waiters' RBAC as the chart renders it, on the real authorizer."""
    ns = migrations.namespace
    rendered = run_helm(control_plane, helm, "template", "hms", str(HOOK), "-n", ns,
                        "--set", "migration.spec.database.urlSecretRef.name=app-db",
                        "--set", "migration.spec.migrations.image=img:1",
                        "--set", "migration.spec.backup.enabled=false")
    assert rendered.returncode == 0, rendered.stderr
    rbac = [o for o in yaml.safe_load_all(rendered.stdout)
            if o and o["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    control_plane.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(rbac))
    migrated = sorted(o["metadata"]["name"] for o in yaml.safe_load_all(rendered.stdout)
                      if o and o["kind"] == "SchemaMigration")
    assert len(migrated) == 2
    for name in migrated:
        account = f"system:serviceaccount:{ns}:{name}-wait"
        other = next(n for n in migrated if n != name)
        for verb in ("get", "watch", "list"):
            assert can(control_plane, account, verb, f"schemamigrations/{name}", ns), verb
        assert not can(control_plane, account, "get", f"schemamigrations/{other}", ns)
        for verb, what in (("create", "schemamigrations"), ("patch", f"schemamigrations/{name}"),
                           ("get", "secrets"), ("list", "pods"), ("create", "jobs")):
            assert not can(control_plane, account, verb, what, ns), (verb, what)
        assert not can(control_plane, account, "get", f"schemamigrations/{name}", "default")
    runner = f"system:serviceaccount:{ns}:hms-schemashift-runner"
    assert not can(control_plane, runner, "get", "schemamigrations", ns)


def test_wait_for_schema_runs_in_a_pod_with_no_kubernetes_rights(
    control_plane: ControlPlane, migrations: Migrations, database_url: str, tmp_path: Path,
    pg_server: PgServer,
) -> None:
    """As an initContainer runs it: no ServiceAccount token, a Secret holding a URL of a role
    that may only read alembic_version."""
    ns = migrations.namespace
    scripts = history(tmp_path, [CREATE, EXPAND])
    assert runner_cli.run_apply(database_url, scripts, "--lint", "warn").exit_code == 0
    role = f"reader_{ns.replace('-', '_')}"[:60]
    database = database_url.rsplit("/", 1)[1]
    with pg_server.admin() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'r3ad-only'")
        conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
    with pg_server.admin(database) as conn:
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        conn.execute(f"GRANT SELECT ON alembic_version TO {role}")
    host = database_url.split("@")[1]
    migrations.secret("schema-reader", {"url": f"postgresql://{role}:r3ad-only@{host}"})
    control_plane.kubectl("-n", ns, "create", "serviceaccount", "app")
    account = f"system:serviceaccount:{ns}:app"
    for verb, what in (("get", "schemamigrations"), ("get", "secrets"), ("list", "pods")):
        assert not can(control_plane, account, verb, what, ns)
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "app-wait-for-schema", "namespace": ns},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "serviceAccountName": "app",
            "automountServiceAccountToken": False,
            "containers": [{
                "name": "wait-for-schema", "image": "ghcr.io/example/hms:1",
                "command": ["schemashift", "wait-for-schema", "--timeout", "60s"],
                "env": [{"name": "SCHEMASHIFT_MIGRATIONS", "value": str(scripts)},
                        {"name": "SCHEMASHIFT_DATABASE_URL", "valueFrom": {
                            "secretKeyRef": {"name": "schema-reader", "key": "url"}}}]}]}}}}
    client.BatchV1Api(control_plane.admin_api()).create_namespaced_job(ns, job)
    done = migrations.plane.kubectl("-n", ns, "wait", "--for=condition=Complete",
                                    "job/app-wait-for-schema", "--timeout=90s", check=False,
                                    timeout=120)
    log = migrations.pod_log("app-wait-for-schema")
    assert done.returncode == 0, log + str(migrations.jobs())
    assert "schema ready: the database is at e1, at or after e1" in log
