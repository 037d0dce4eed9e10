"""The Argo CD health check (charts/schemashift/argocd/health.lua), run in gopher-lua (the VM Argo
CD embeds) on every version of every SchemaMigration the operator drives here: each status the
API server served, recorded by a watch, judged as Argo CD would.

What Argo CD must conclude (docs/argocd.md): Succeeded → Healthy (an expand with contract left
says so in its message); Failed / RolledBack → Degraded with the message that says where the
database is; AwaitingApproval → Suspended naming the plan hash to approve; anything else, and a
status of an older spec, → Progressing (never Healthy before the migration ran: argo-cd#16357).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.operator_fixtures import Migrations
from tests.e2e.status_recorder import StatusRecorder, kind_of, recording
from tests.e2e.test_hook_expand_contract import CONTRACT, EXPAND, history
from tests.e2e.test_hook_expand_contract import CREATE as CREATE_P
from tests.e2e.test_operator import ADD, CREATE, FAILING_C3, at_a1, backup_spec, spec
from tests.fixtures import argocd_health, runner_cli
from tests.fixtures.histories import Revision

pytestmark = pytest.mark.e2e

# Stages that wait for the test: the gate is a table the test creates and fills when it has
# seen what it wants to see (the run's phase), so no step depends on how fast the machine is.
WAIT_FOR_GATE = ('op.execute("DO $$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM gate) LOOP '
                 'PERFORM pg_sleep(0.1); END LOOP; END $$")')
GATED = Revision("b2", "add email once the gate opens",
                 f'op.add_column("patients", sa.Column("email", sa.Text))\n{WAIT_FOR_GATE}',
                 'op.drop_column("patients", "email")')
GATED_UNDO = Revision("b2", "add email, undone once the gate opens",
                      'op.add_column("patients", sa.Column("email", sa.Text))',
                      f'{WAIT_FOR_GATE}\nop.drop_column("patients", "email")')


def make_gate(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE gate (opened boolean)")


def open_gate(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO gate VALUES (true)")


def judge(recorder: StatusRecorder) -> dict[str, dict[str, str]]:
    """Argo CD's verdict on every recorded version; asserts each; returns one per kind."""
    assert recorder.objects, "the watch recorded nothing"
    verdicts = argocd_health.check(recorder.objects)
    by_kind: dict[str, dict[str, str]] = {}
    for obj, verdict in zip(recorder.objects, verdicts, strict=True):
        status = obj.get("status") or {}
        assert "error" not in verdict, (verdict, status)
        assert verdict["status"] == argocd_health.expected(obj), (verdict, kind_of(obj), status)
        message = verdict.get("message", "")
        if verdict["status"] == "Degraded":
            assert status["message"] in message, (message, status)
            if status.get("step") != "invalid":  # invalid: nothing ran, the spec is wrong
                assert "revision" in message, message  # where the database is
        if verdict["status"] == "Suspended":
            assert status["plan"]["hash"] in message and "schemashift approve" in message
        if status.get("phase") and verdict["status"] == "Progressing" and status.get("message"):
            assert status["phase"] in message or "generation" in message, message
        by_kind.setdefault(kind_of(obj), verdict)
    return by_kind


def test_a_backed_up_run_a_queued_one_and_a_spec_change_while_running(
    migrations: Migrations, database_url: str, tmp_path: Path, s3_server: Any, s3_bucket: str,
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, GATED])
    make_gate(database_url)
    backup = backup_spec(migrations, s3_server, s3_bucket)
    with recording(migrations.plane.admin_api(), migrations.namespace) as recorder:
        migrations.apply("first", spec(history, environment="production", backup=backup))
        migrations.wait("first", lambda s: s.get("phase") == "Migrating", 60, "Migrating")
        # A new spec while generation 1 runs: the status is of an older generation until the end.
        migrations.apply("first", spec(history, environment="production", deadlineSeconds=900,
                                       backup=backup))
        migrations.apply("second", spec(history))
        migrations.wait("second", lambda s: s.get("phase") == "Pending", 60, "Pending")
        assert migrations.status("first")["phase"] == "Migrating"  # both seen while it ran
        open_gate(database_url)
        assert migrations.wait_phase("first", "Succeeded", "Failed")["phase"] == "Succeeded"
        assert migrations.wait_phase("second", "Succeeded", "Failed")["phase"] == "Succeeded"
    verdicts = judge(recorder)
    assert {"NoStatus", "Pending", "Migrating", "Migrating-OlderGeneration",
            "Succeeded"} <= set(verdicts), sorted(verdicts)
    assert verdicts["NoStatus"]["status"] == "Progressing"  # not Healthy on creation
    recorder.save_fixtures("run")


def test_a_rollback_and_a_failure_without_rollback_are_degraded(
    migrations: Migrations, database_url: str, tmp_path: Path,
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, GATED_UNDO, FAILING_C3])
    make_gate(database_url)
    with recording(migrations.plane.admin_api(), migrations.namespace) as recorder:
        migrations.apply("undo", spec(history, rollback={"policy": "downgrade"}))
        migrations.wait("undo", lambda s: s.get("phase") == "RollingBack", 60, "RollingBack")
        open_gate(database_url)
        assert migrations.wait_phase("undo", "RolledBack", "Failed", "Succeeded")["phase"] == (
            "RolledBack")
        migrations.apply("keep", spec(history, rollback={"policy": "none"}))
        assert migrations.wait_phase("keep", "RolledBack", "Failed", "Succeeded")["phase"] == (
            "Failed")
        broken = spec(history)
        broken["database"] = {"urlSecretRef": {"name": "no-such-secret"}}
        migrations.apply("nosecret", broken)
        migrations.wait_phase("nosecret", "Failed")
    verdicts = judge(recorder)
    assert {"RollingBack", "RolledBack", "Failed", "Failed-Invalid"} <= set(verdicts), sorted(
        verdicts)
    recorder.save_fixtures("failures")


def test_awaiting_approval_is_suspended_until_approved(
    migrations: Migrations, database_url: str, tmp_path: Path,
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, ADD])
    with recording(migrations.plane.admin_api(), migrations.namespace) as recorder:
        migrations.apply("gate", spec(history, approval={"required": True}))
        plan_hash = migrations.wait_phase("gate", "AwaitingApproval")["plan"]["hash"]
        migrations.plane.kubectl("annotate", "smig", "gate", "-n", migrations.namespace,
                                 f"schemashift.io/approved={plan_hash}")
        assert migrations.wait_phase("gate", "Succeeded", "Failed")["phase"] == "Succeeded"
    verdicts = judge(recorder)
    assert {"AwaitingApproval", "Planning", "Succeeded"} <= set(verdicts), sorted(verdicts)
    recorder.save_fixtures("approval")


def test_an_expand_that_leaves_contract_work_is_healthy_and_says_so(
    migrations: Migrations, database_url: str, tmp_path: Path,
) -> None:
    scripts = history(tmp_path, [CREATE_P, EXPAND, CONTRACT])
    assert runner_cli.run_apply(database_url, scripts, "--target", "r1").exit_code == 0
    with recording(migrations.plane.admin_api(), migrations.namespace) as recorder:
        early = spec(scripts, phase="contract", safety={"lint": "warn"})
        migrations.apply("early", early)  # refused: its expand is not applied
        assert migrations.wait_phase("early", "Succeeded", "Failed", "RolledBack")["phase"] == (
            "Failed")
        migrations.apply("expand", spec(scripts, phase="expand", safety={"lint": "warn"}))
        assert migrations.wait_phase("expand", "Succeeded", "Failed")["phase"] == "Succeeded"
        migrations.apply("contract", spec(scripts, phase="contract", safety={"lint": "warn"}))
        assert migrations.wait_phase("contract", "Succeeded", "Failed")["phase"] == "Succeeded"
    verdicts = judge(recorder)
    assert "Succeeded-ContractPending" in verdicts, sorted(verdicts)
    assert verdicts["Succeeded-ContractPending"]["message"].startswith(
        "Expand succeeded; contract pending: contract revisions not applied yet: c1")
    refused = [v for kind, v in verdicts.items() if kind.startswith("Failed")]
    assert refused and all(v["status"] == "Degraded" for v in refused), sorted(verdicts)
    assert any("contract refused before its expand" in v["message"] for v in refused), refused
    recorder.save_fixtures("phases")
