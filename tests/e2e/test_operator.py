"""The operator end to end: a real API server, a real operator process under its own RBAC, Job
pods run by the process kubelet against real PostgreSQL (and SeaweedFS S3 for backups)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kubernetes import client

from schemashift import reasons
from tests.e2e.operator_fixtures import Migrations, OperatorProcess
from tests.fixtures import runner_cli
from tests.fixtures.histories import Revision, write_history

pytestmark = pytest.mark.e2e

CREATE = Revision("a1", "create patients", """
    op.create_table("patients", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.Text, nullable=False))
""", 'op.drop_table("patients")')
ADD = Revision("b2", "add email", 'op.add_column("patients", sa.Column("email", sa.Text))',
               'op.drop_column("patients", "email")')
FAILING = Revision("b2", "add email then fail", """
    op.add_column("patients", sa.Column("email", sa.Text))
    op.execute("SELECT 1/0")
""", 'op.drop_column("patients", "email")')
FAILING_C3 = Revision("c3", "fails", 'op.execute("SELECT 1/0")')


def slow(seconds: int) -> Revision:
    return Revision("b2", "slow add email", f"""
        op.add_column("patients", sa.Column("email", sa.Text))
        op.execute("SELECT pg_sleep({seconds})")
    """, 'op.drop_column("patients", "email")')


def spec(history: Path, **more: Any) -> dict[str, Any]:
    return {"database": {"urlSecretRef": {"name": "app-db", "key": "url"}},
            "migrations": {"image": "schemashift:e2e", "scriptLocation": str(history)},
            **more}


def at_a1(database_url: str, tmp_path: Path, revisions: list[Revision]) -> Path:
    """A history whose first revision is already applied, with a row: a live database."""
    history = write_history(tmp_path, revisions)
    done = runner_cli.run_apply(database_url, history, "--target", "a1")
    assert done.exit_code == 0, done
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO patients (name) VALUES ('Ada')")
    return history


def backup_spec(migrations: Migrations, s3_server: Any, bucket: str) -> dict[str, Any]:
    migrations.secret("backup-s3", {"AWS_ACCESS_KEY_ID": s3_server.access_key,
                                    "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
                                    "AWS_DEFAULT_REGION": s3_server.region})
    return {"enabled": True, "url": f"s3://{bucket}/app/", "endpoint": s3_server.endpoint,
            "credentialsSecretRef": {"name": "backup-s3"}}


def reasons_of(migrations: Migrations, name: str) -> list[str]:
    return [reason for _, reason, _ in migrations.events(name)]


def test_happy_path_with_backup(
    migrations: Migrations, operator_process: OperatorProcess, database_url: str,
    tmp_path: Path, s3_server: Any, s3_bucket: str,
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, ADD])
    migrations.apply("app", spec(history, environment="production",
                                 backup=backup_spec(migrations, s3_server, s3_bucket)))
    status = migrations.wait_phase("app", "Succeeded", "Failed", "RolledBack")
    assert status["phase"] == "Succeeded", status
    assert (status["fromRevision"], status["targetRevision"], status["currentRevision"]) == (
        "a1", "b2", "b2")
    assert runner_cli.revision(database_url) == "b2"
    assert runner_cli.columns(database_url, "patients") == ["id", "name", "email"]
    assert [s["state"] for s in status["stages"]] == ["Succeeded"] * len(status["stages"])
    backup = status["backup"]
    assert backup["verified"] is True and backup["summary"].endswith("verified")
    key = backup["url"].removeprefix(f"s3://{s3_bucket}/")
    stored = s3_server.client().get_object(Bucket=s3_bucket, Key=key)
    body = stored["Body"].read()  # a -Fc archive, or a -Fd backup's manifest (its digest)
    assert stored["Metadata"]["schemashift-size"] == str(backup["sizeBytes"])
    assert hashlib.sha256(body).hexdigest() == backup["sha256"]
    for type_, expected in (("Ready", "True"), ("Migrated", "True"), ("BackupCompleted", "True"),
                            ("Reconciling", "False"), ("Stalled", "False")):
        assert migrations.condition("app", type_)["status"] == expected, type_
    assert migrations.condition("app", "Ready")["observedGeneration"] == 1
    seen = reasons_of(migrations, "app")
    assert seen[0] == reasons.JOB_CREATED and seen[-1] == reasons.SUCCEEDED
    assert "BackingUp" in seen and "Migrating" in seen
    password = database_url.split(":")[2].split("@")[0]
    job_json = migrations.plane.kubectl("get", "jobs", "-n", migrations.namespace,
                                        "-o", "json").stdout
    for text in (str(migrations.get("app")), str(migrations.events("app")), job_json,
                 operator_process.logs(10_000)):
        assert password not in text and s3_server.secret_key not in text
    assert '"secretKeyRef"' in job_json and '"backup-s3"' in job_json
    assert len(migrations.jobs()) == 1
    metrics = operator_process.metrics()
    assert 'schemashift_migrations_total{outcome="Succeeded"}' in metrics
    assert "schemashift_backup_bytes_total" in metrics
    assert "schemashift_migration_duration_seconds_bucket" in metrics


@pytest.mark.parametrize("policy,phase,reason,left_at,columns", [
    ("downgrade", "RolledBack", reasons.ROLLED_BACK_DOWNGRADE, "a1", ["id", "name"]),
    ("restore", "RolledBack", reasons.ROLLED_BACK_RESTORE, "a1", ["id", "name"]),
    ("none", "Failed", reasons.NOT_ROLLED_BACK, "b2", ["id", "name", "email"]),
])
def test_failing_revision_is_rolled_back(
    migrations: Migrations, database_url: str, tmp_path: Path, s3_server: Any, s3_bucket: str,
    policy: str, phase: str, reason: str, left_at: str, columns: list[str],
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, ADD, FAILING_C3])
    migrations.apply("app", spec(history, rollback={"policy": policy},
                                 backup=backup_spec(migrations, s3_server, s3_bucket)))
    status = migrations.wait_phase("app", "Succeeded", "Failed", "RolledBack")
    assert (status["phase"], status["currentRevision"]) == (phase, left_at), status
    assert runner_cli.revision(database_url) == left_at
    assert runner_cli.columns(database_url, "patients") == columns
    assert runner_cli.scalar(database_url, "SELECT name FROM patients") == "Ada"
    ready = migrations.condition("app", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert migrations.condition("app", "Stalled")["status"] == "True"
    assert migrations.condition("app", "Migrated")["status"] == "False"
    if phase == "RolledBack":
        assert migrations.condition("app", "RolledBack")["status"] == "True"
        assert status["undone"] == ["b2"]
    last = migrations.events("app")[-1]
    assert last[:2] == ("Warning", reason)
    assert "division by zero" in status["message"] or "c3" in status["message"]


def test_dry_run_plans_and_changes_nothing(
    migrations: Migrations, database_url: str, tmp_path: Path
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, ADD])
    migrations.apply("plan", spec(history, dryRun=True))
    status = migrations.wait_phase("plan", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    plan = status["plan"]
    assert len(plan["hash"]) == 64
    assert [r["revision"] for r in plan["revisions"]] == ["b2"]
    assert migrations.condition("plan", "Planned")["reason"] == reasons.DRY_RUN
    assert migrations.condition("plan", "Ready")["reason"] == reasons.DRY_RUN
    assert runner_cli.revision(database_url) == "a1"
    assert runner_cli.columns(database_url, "patients") == ["id", "name"]
    assert reasons_of(migrations, "plan")[-1] == reasons.DRY_RUN
    assert [j["labels"]["schemashift.io/purpose"] for j in migrations.jobs()] == ["plan"]


def test_approval_wrong_hash_refused_right_hash_proceeds(
    migrations: Migrations, database_url: str, tmp_path: Path
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, ADD])
    migrations.apply("app", spec(history, approval={"required": True}))
    status = migrations.wait_phase("app", "AwaitingApproval", "Failed")
    assert status["phase"] == "AwaitingApproval", status
    plan_hash = status["plan"]["hash"]
    assert f"schemashift.io/approved={plan_hash}" in status["message"]
    assert runner_cli.revision(database_url) == "a1"
    stale = "0" * 64
    migrations.plane.kubectl("annotate", "smig", "app", "-n", migrations.namespace,
                             f"schemashift.io/approved={stale}")
    migrations.wait("app", lambda s: any(c["reason"] == reasons.APPROVAL_HASH_MISMATCH
                                         for c in s.get("conditions", [])), 30, "refused")
    assert migrations.status("app")["phase"] == "AwaitingApproval"
    assert runner_cli.revision(database_url) == "a1"
    assert ("Warning", reasons.APPROVAL_HASH_MISMATCH) in [
        e[:2] for e in migrations.events("app")]
    migrations.plane.kubectl("annotate", "smig", "app", "-n", migrations.namespace,
                             "--overwrite", f"schemashift.io/approved={plan_hash}")
    status = migrations.wait_phase("app", "Succeeded", "Failed", "RolledBack")
    assert status["phase"] == "Succeeded", status
    assert migrations.condition("app", "Approved")["status"] == "True"
    assert runner_cli.revision(database_url) == "b2"
    purposes = sorted(j["labels"]["schemashift.io/purpose"] for j in migrations.jobs())
    assert purposes == ["apply", "plan", "replan"]


def test_approval_of_a_moved_database_replans(
    migrations: Migrations, database_url: str, tmp_path: Path
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, ADD, Revision(
        "c3", "add phone", 'op.add_column("patients", sa.Column("phone", sa.Text))',
        'op.drop_column("patients", "phone")')])
    migrations.apply("app", spec(history, approval={"required": True}))
    plan_hash = migrations.wait_phase("app", "AwaitingApproval")["plan"]["hash"]
    assert runner_cli.run_apply(database_url, history, "--target", "b2").exit_code == 0
    migrations.plane.kubectl("annotate", "smig", "app", "-n", migrations.namespace,
                             f"schemashift.io/approved={plan_hash}")
    status = migrations.wait("app", lambda s: s.get("plan", {}).get("hash") not in (
        None, plan_hash) and s.get("step") == "awaiting-approval", 90, "re-planned")
    assert migrations.condition("app", "Approved")["reason"] == reasons.PLAN_STALE
    assert runner_cli.revision(database_url) == "b2"  # the approved plan was never applied
    assert [r["revision"] for r in status["plan"]["revisions"]] == ["c3"]


def test_two_migrations_of_one_database_are_serialised(
    migrations: Migrations, database_url: str, tmp_path: Path
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, slow(6)])
    migrations.apply("first", spec(history))
    migrations.wait("first", lambda s: s.get("step") == "apply", 30, "running")
    migrations.apply("second", spec(history))
    waiting = migrations.wait("second", lambda s: s.get("phase") == "Pending", 30, "Pending")
    assert any(c["reason"] == reasons.WAITING_FOR_DATABASE for c in waiting["conditions"])
    assert "first" in waiting["message"]
    assert migrations.status("first")["step"] == "apply"
    first = migrations.wait_phase("first", "Succeeded", "Failed", "RolledBack")
    second = migrations.wait_phase("second", "Succeeded", "Failed", "RolledBack")
    assert (first["phase"], second["phase"]) == ("Succeeded", "Succeeded")
    assert migrations.condition("second", "Migrated")["reason"] == reasons.UP_TO_DATE
    assert reasons_of(migrations, "second")[0] == reasons.WAITING_FOR_DATABASE
    assert runner_cli.revision(database_url) == "b2"
    assert len(migrations.jobs()) == 2


def test_missing_secret_fails_without_a_job(
    migrations: Migrations, database_url: str, tmp_path: Path
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, ADD])
    broken = spec(history)
    broken["database"] = {"urlSecretRef": {"name": "no-such-secret"}}
    migrations.apply("app", broken)
    status = migrations.wait_phase("app", "Failed")
    assert "no-such-secret" in status["message"]
    assert migrations.condition("app", "Ready")["reason"] == reasons.SECRET_NOT_FOUND
    assert migrations.condition("app", "Stalled")["status"] == "True"
    assert migrations.events("app")[-1][:2] == ("Warning", reasons.SECRET_NOT_FOUND)
    assert migrations.jobs() == []
    assert runner_cli.revision(database_url) == "a1"
    assert "checked again" in status["message"]
    # The Secret created afterwards (e.g. by a later Helm hook): picked up, no spec change needed.
    migrations.secret("no-such-secret", {"url": database_url})
    status = migrations.wait("app", lambda s: s.get("step") == "done", 90, "done")
    assert status["phase"] == "Succeeded", status
    assert runner_cli.revision(database_url) == "b2"
    assert len(migrations.jobs()) == 1


def test_where_the_operator_may_not_read_secrets_the_pod_reports_a_missing_one(
    migrations: Migrations, database_url: str, tmp_path: Path
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, ADD])
    rbac = client.RbacAuthorizationV1Api(migrations.plane.admin_api())
    rbac.delete_namespaced_role_binding("schemashift-operator-secret-keys", migrations.namespace)
    broken = spec(history)
    broken["database"] = {"urlSecretRef": {"name": "no-such-secret", "key": "url"}}
    migrations.apply("app", broken)
    status = migrations.wait_phase("app", "Failed", timeout=60)
    assert migrations.condition("app", "Ready")["reason"] == reasons.CONTAINER_CONFIG_ERROR
    assert 'secret "no-such-secret" not found' in status["message"], status["message"]
    migrations.wait("app", lambda s: migrations.jobs() == [], 30, "its Job deleted")
    assert runner_cli.revision(database_url) == "a1"


def test_missing_service_account_fails_without_a_job(
    migrations: Migrations, database_url: str, tmp_path: Path
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, ADD])
    migrations.core.delete_namespaced_service_account("schemashift-migration",
                                                      migrations.namespace)
    migrations.apply("app", spec(history))
    status = migrations.wait_phase("app", "Failed")
    assert migrations.condition("app", "Ready")["reason"] == reasons.SERVICE_ACCOUNT_NOT_FOUND
    assert "schemashift-migration does not exist" in status["message"]
    assert migrations.jobs() == []
    assert runner_cli.revision(database_url) == "a1"


def test_a_job_the_api_server_refuses_fails_at_once_with_its_message(
    migrations: Migrations, database_url: str, tmp_path: Path
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, ADD])
    # Quantities the CRD accepts, a pod the API server refuses (HTTP 422): no retry can help.
    migrations.apply("app", spec(history, job={"resources": {
        "requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}))
    status = migrations.wait_phase("app", "Failed", timeout=60)
    assert migrations.condition("app", "Ready")["reason"] == reasons.JOB_REJECTED, status
    assert "HTTP 422" in status["message"], status["message"]
    assert "must be less than or equal to memory limit" in status["message"], status["message"]
    assert migrations.events("app")[-1][:2] == ("Warning", reasons.JOB_REJECTED)
    assert migrations.jobs() == []
    assert runner_cli.revision(database_url) == "a1"


def test_a_pod_the_job_controller_cannot_create_fails_within_seconds(
    migrations: Migrations, database_url: str, tmp_path: Path
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, ADD])
    # LimitRanger admission refuses the pod (the Job itself is admitted): FailedCreate.
    migrations.core.create_namespaced_limit_range(migrations.namespace, {
        "metadata": {"name": "tiny"},
        "spec": {"limits": [{"type": "Container", "max": {"memory": "1Mi"}}]}})
    migrations.apply("app", spec(history, deadlineSeconds=600))
    status = migrations.wait_phase("app", "Failed", timeout=60)
    assert migrations.condition("app", "Ready")["reason"] == reasons.JOB_REJECTED, status
    assert "maximum memory usage per Container is 1Mi" in status["message"], status["message"]
    assert migrations.events("app")[-1][:2] == ("Warning", reasons.JOB_REJECTED)
    migrations.wait("app", lambda s: migrations.jobs() == [], 30, "its Job deleted")
    assert runner_cli.revision(database_url) == "a1"


def test_spec_change_during_a_run_does_not_alter_it(
    migrations: Migrations, database_url: str, tmp_path: Path
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, slow(5)])
    migrations.apply("app", spec(history))
    migrations.wait("app", lambda s: s.get("step") == "apply", 30, "running")
    migrations.apply("app", spec(history, target="a1"))
    changed = migrations.wait("app", lambda s: any(
        c["type"] == "SpecChanged" for c in s.get("conditions", [])), 30, "SpecChanged")
    assert changed["step"] == "apply"
    status = migrations.wait_phase("app", "Succeeded", "Failed", "RolledBack")
    assert status["phase"] == "Succeeded" and status["currentRevision"] == "b2", status
    assert runner_cli.revision(database_url) == "b2"
    assert migrations.condition("app", "SpecChanged")["reason"] in (
        reasons.SPEC_CHANGED_DURING_RUN, reasons.ALREADY_SUCCEEDED)
    time.sleep(3)  # the operator had every chance to start generation 2: it must not
    assert len(migrations.jobs()) == 1
    assert runner_cli.revision(database_url) == "b2"
    assert migrations.condition("app", "SpecChanged")["reason"] == reasons.ALREADY_SUCCEEDED


def test_operator_killed_while_a_job_runs_converges(
    migrations: Migrations, operator_process: OperatorProcess, database_url: str,
    tmp_path: Path,
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, slow(6)])
    migrations.apply("app", spec(history))
    migrations.wait("app", lambda s: s.get("step") == "apply", 30, "running")
    operator_process.kill()
    try:
        time.sleep(8)  # the Job finishes while no operator runs
    finally:
        operator_process.start()
    status = migrations.wait_phase("app", "Succeeded", "Failed", "RolledBack")
    assert status["phase"] == "Succeeded", status
    assert runner_cli.revision(database_url) == "b2"
    assert len(migrations.jobs()) == 1
    assert reasons_of(migrations, "app").count(reasons.JOB_CREATED) == 1


def test_deletion_while_running_stops_the_job_and_reports(
    migrations: Migrations, database_url: str, tmp_path: Path
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, slow(120)])
    migrations.apply("app", spec(history))
    migrations.wait("app", lambda s: s.get("phase") == "Migrating", 60, "Migrating")
    job_name = migrations.status("app")["jobName"]
    migrations.plane.kubectl("delete", "smig", "app", "-n", migrations.namespace,
                             "--timeout=90s")
    events = migrations.events("app")
    deleted = [e for e in events if e[1] == reasons.DELETED_WHILE_RUNNING]
    assert deleted and deleted[0][0] == "Warning", events
    assert job_name in deleted[0][2] and "revision a1" in deleted[0][2]
    assert all(j["name"] != job_name for j in migrations.jobs())
    assert runner_cli.revision(database_url) == "a1"
    assert runner_cli.columns(database_url, "patients") == ["id", "name"]


def test_deadline_exceeded_fails_with_the_reason(
    migrations: Migrations, database_url: str, tmp_path: Path
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, slow(120)])
    migrations.apply("app", spec(history, deadlineSeconds=30))
    status = migrations.wait_phase("app", "Failed", "Succeeded", "RolledBack", timeout=120)
    assert status["phase"] == "Failed", status
    assert migrations.condition("app", "Ready")["reason"] == reasons.DEADLINE_EXCEEDED
    assert "30" in status["message"] and "a1" in status["message"]
    assert migrations.events("app")[-1][:2] == ("Warning", reasons.DEADLINE_EXCEEDED)
    assert runner_cli.revision(database_url) == "a1"
    assert runner_cli.columns(database_url, "patients") == ["id", "name"]

