"""The operator's decisions, driven through `reconcile` with an in-memory stand-in for the API.

The API server itself is exercised in tests/e2e; here each rule of the issue gets a fast check.
"""

from __future__ import annotations

import asyncio
import copy
import io
import itertools
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import pytest

from schemashift import events, progress, reasons
from schemashift.kube import resource
from schemashift.kube.client import JobRejected, SecretsNotReadable
from schemashift.operator import reconcile

NS = "shop"
URL_REF = {"name": "app-db", "key": "url"}
_uids = itertools.count(1)


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeApi:
    def __init__(self) -> None:
        self.migrations: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, set[str]] = {"app-db": {"url"}, "s3": {
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, list[dict[str, Any]]] = {}
        self.events: list[tuple[str, str, str, str]] = []
        self.created: list[str] = []
        self.fail_next_patch = False
        self.service_accounts = {resource.DEFAULT_JOB_SERVICE_ACCOUNT}
        self.refuse_jobs: JobRejected | None = None
        self.create_failures: dict[str, str] = {}  # Job → the Job controller's FailedCreate
        self.logs: dict[str, str] = {}  # pod → its log
        self.secrets_readable = True  # the namespace granted the operator reading Secrets

    async def get_migration(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.migrations.get(name)
        return copy.deepcopy(found) if found else None

    def of(self, database_key: str) -> list[reconcile.Peer]:
        """The queue as kopf's index holds it: every stored resource under its database."""
        return [peer for m in self.migrations.values()
                for key, peer in reconcile.peer_entry(m).items() if key == database_key]

    async def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        if self.fail_next_patch:
            self.fail_next_patch = False
            raise ConnectionError("API went away")
        merge_patch(self.migrations[name].setdefault("status", {}), patch)

    async def secret_keys(self, namespace: str, name: str) -> set[str] | None:
        if not self.secrets_readable:
            raise SecretsNotReadable(namespace)
        return self.secrets.get(name)

    async def service_account_exists(self, namespace: str, name: str) -> bool:
        return name in self.service_accounts

    async def job_create_failures(self, namespace: str, job_name: str) -> str | None:
        return self.create_failures.get(job_name)

    async def create_job(self, job: Mapping[str, Any]) -> bool:
        if self.refuse_jobs is not None:
            raise self.refuse_jobs
        name = job["metadata"]["name"]
        if name in self.jobs:
            return False
        self.jobs[name] = copy.deepcopy(dict(job))
        self.pods[name] = []
        self.created.append(name)
        return True

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.jobs.get(name))

    async def delete_job(self, namespace: str, name: str) -> None:
        self.jobs.pop(name, None)
        self.pods.pop(name, None)

    async def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pods.get(job_name, []))

    async def pod_log(self, namespace: str, pod: str) -> str | None:
        return self.logs.get(pod)

    async def event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((body["metadata"]["name"], type_, reason, message))

    # -- test helpers ------------------------------------------------------------------------

    def add(self, name: str, **spec: Any) -> None:
        body = {"database": {"urlSecretRef": URL_REF},
                "migrations": {"image": "img", "scriptLocation": "/m"}, **spec}
        created = f"2026-01-01T00:00:{len(self.migrations):02d}Z"
        self.migrations[name] = {
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{next(_uids)}",
                         "generation": 1, "creationTimestamp": created, "annotations": {}},
            "spec": body}

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.migrations[name].get("status") or {})

    def runner_prints(self, name: str, *printed: events.Event) -> None:
        """The Job's pod runs and has printed these runner events (JSON lines) so far."""
        job_name = self.status(name)["jobName"]
        pod = f"{job_name}-pod"
        self.pods[job_name] = [{"metadata": {"name": pod, "creationTimestamp": "t"},
                                "status": {"phase": "Running"}}]
        out = io.StringIO()
        for event in printed:
            progress.JsonLinesReporter(stream=out).emit(event)
        self.logs[pod] = self.logs.get(pod, "") + out.getvalue()

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        found = [c for c in self.status(name).get("conditions", []) if c["type"] == type_]
        assert found, f"no {type_} condition in {self.status(name)}"
        return dict(found[0])

    def finish(self, name: str, result: progress.RunResult | None,
               job_reason: str = "BackoffLimitExceeded") -> str:
        job_name = self.status(name)["jobName"]
        ok = result is not None and result.exitCode == 0
        kind, why = ("Complete", "Completed") if ok else ("Failed", job_reason)
        self.jobs[job_name]["status"] = {"conditions": [
            {"type": kind, "status": "True", "reason": why}]}
        message = result.termination_message() if result else "Killed"
        self.pods[job_name] = [{"status": {"containerStatuses": [{"state": {"terminated": {
            "exitCode": 0 if ok else 1, "message": message}}}]}}]
        return str(job_name)

    def reasons_of(self, name: str) -> list[str]:
        return [reason for who, _, reason, _ in self.events if who == name]


def result(outcome: str = "Succeeded", reason: str = reasons.SUCCEEDED, plan_hash: str = "h1",
           message: str = "migrated a1 → b2", current: str = "b2", **more: Any
           ) -> progress.RunResult:
    return progress.RunResult(
        outcome=outcome, reason=reason, message=message,  # type: ignore[arg-type]
        exitCode=0 if outcome in ("Succeeded", "Planned") else 1, fromRevision="a1",
        targetRevision="b2", currentRevision=current, planHash=plan_hash, **more)


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def ctx(api: FakeApi) -> reconcile.Context:
    return reconcile.Context(api=api, peers=api)


def run(ctx: reconcile.Context, name: str) -> None:
    asyncio.run(reconcile.reconcile(ctx, NS, name))


def watch(ctx: reconcile.Context, api: FakeApi, name: str,
          body: dict[str, Any] | None = None) -> None:
    """A watch event of `name` (its stored body, or `body` as last seen when it is gone)."""
    asyncio.run(reconcile.observe(ctx, body or copy.deepcopy(api.migrations[name])))


def job_env(api: FakeApi, job_name: str) -> dict[str, Any]:
    container = api.jobs[job_name]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_happy_path(api: FakeApi, ctx: reconcile.Context) -> None:
    api.add("app")
    run(ctx, "app")
    status = api.status("app")
    assert status["phase"] == "Planning" and status["step"] == "apply"
    assert api.created == [status["jobName"]]
    assert job_env(api, status["jobName"])["SCHEMASHIFT_DRY_RUN"] == "false"
    assert api.condition("app", "Reconciling")["status"] == "True"
    api.finish("app", result(backup=progress.BackupStatus("s3://b/x", 10, "ab", True, "t")))
    run(ctx, "app")
    status = api.status("app")
    assert (status["phase"], status["currentRevision"], status["step"]) == ("Succeeded", "b2",
                                                                           "done")
    assert api.condition("app", "Ready")["status"] == "True"
    assert api.condition("app", "Migrated")["status"] == "True"
    assert api.condition("app", "BackupCompleted")["reason"] == reasons.BACKUP_VERIFIED
    assert status["backup"]["summary"] == "10B verified"
    assert api.reasons_of("app") == [reasons.JOB_CREATED, reasons.SUCCEEDED]
    run(ctx, "app")
    assert len(api.created) == 1 and len(api.events) == 2  # finished: nothing more happens


def test_missing_secret_fails_without_a_job(api: FakeApi, ctx: reconcile.Context) -> None:
    api.add("app", database={"urlSecretRef": {"name": "nope", "key": "url"}})
    run(ctx, "app")
    assert api.status("app")["phase"] == "Failed"
    assert api.condition("app", "Stalled")["reason"] == reasons.SECRET_NOT_FOUND
    assert api.events[-1][1:3] == ("Warning", reasons.SECRET_NOT_FOUND)
    assert api.created == []
    run(ctx, "app")
    assert len(api.events) == 1  # checked again, said once
    api.secrets["nope"] = {"url"}  # created later: the migration runs, no spec change needed
    run(ctx, "app")
    assert api.status("app")["step"] == "apply" and len(api.created) == 1


def test_a_missing_service_account_fails_at_once_without_a_job(
    api: FakeApi, ctx: reconcile.Context
) -> None:
    api.add("app")
    api.service_accounts.clear()
    run(ctx, "app")
    assert api.condition("app", "Ready")["reason"] == reasons.SERVICE_ACCOUNT_NOT_FOUND
    assert f"ServiceAccount {NS}/schemashift-migration does not exist" in api.status("app")[
        "message"]
    assert api.created == []
    api.service_accounts.add(resource.DEFAULT_JOB_SERVICE_ACCOUNT)  # an admin adds it
    run(ctx, "app")
    assert api.status("app")["step"] == "apply" and len(api.created) == 1


def test_a_job_the_api_server_refuses_fails_with_its_message(
    api: FakeApi, ctx: reconcile.Context
) -> None:
    api.add("app")
    api.refuse_jobs = JobRejected(403, 'jobs.batch "app-1" is forbidden: exceeded quota: q')
    run(ctx, "app")
    status = api.status("app")
    assert (status["phase"], status["step"]) == ("Failed", "done")
    assert api.condition("app", "Ready")["reason"] == reasons.JOB_REJECTED
    assert "exceeded quota" in status["message"] and "HTTP 403" in status["message"]
    assert api.events[-1][1:3] == ("Warning", reasons.JOB_REJECTED)


def test_a_pod_the_job_controller_cannot_create_fails_the_run_and_stops_the_job(
    api: FakeApi, ctx: reconcile.Context
) -> None:
    api.add("app")
    run(ctx, "app")
    job = api.status("app")["jobName"]
    run(ctx, "app")
    assert api.status("app")["step"] == "apply"  # no pod yet, no failure: still waiting
    api.create_failures[job] = 'pods "x" is forbidden: exceeded quota: pods'
    run(ctx, "app")
    status = api.status("app")
    assert status["phase"] == "Failed", status
    assert api.condition("app", "Ready")["reason"] == reasons.JOB_REJECTED
    assert "exceeded quota: pods" in status["message"]
    assert job not in api.jobs


def test_where_secrets_may_not_be_read_the_pod_reports_a_missing_one(
    api: FakeApi, ctx: reconcile.Context
) -> None:
    api.add("app", database={"urlSecretRef": {"name": "nope", "key": "url"}})
    api.secrets_readable = False
    run(ctx, "app")
    assert api.status("app")["step"] == "apply" and len(api.created) == 1
    job = api.status("app")["jobName"]
    api.pods[job] = [{"metadata": {"name": "p"}, "status": {"containerStatuses": [{"state": {
        "waiting": {"reason": "CreateContainerConfigError",
                    "message": 'secret "nope" not found'}}}]}}]
    run(ctx, "app")
    assert api.condition("app", "Ready")["reason"] == reasons.CONTAINER_CONFIG_ERROR
    assert 'secret "nope" not found' in api.status("app")["message"]
    assert job not in api.jobs


def test_missing_key_and_missing_image(api: FakeApi, ctx: reconcile.Context) -> None:
    api.add("key", backup={"enabled": True, "url": "s3://b/p/",
                           "credentialsSecretRef": {"name": "app-db"}})
    api.add("img", migrations={"scriptLocation": "/m"})
    run(ctx, "key")
    run(ctx, "img")
    assert api.condition("key", "Ready")["reason"] == reasons.SECRET_KEY_NOT_FOUND
    assert "AWS_ACCESS_KEY_ID" in api.status("key")["message"]
    assert api.condition("img", "Ready")["reason"] == reasons.IMAGE_NOT_SET
    assert api.created == []
    # an operator default now
    run(reconcile.Context(api=api, peers=api, job_image="default:1"), "img")
    assert len(api.created) == 1


def test_a_restarted_operator_adopts_the_job(api: FakeApi, ctx: reconcile.Context) -> None:
    api.add("app")
    api.fail_next_patch = True  # the operator dies between creating the Job and recording it
    with pytest.raises(ConnectionError):
        run(ctx, "app")
    run(reconcile.Context(api=api, peers=api), "app")
    assert len(api.created) == 1 and api.status("app")["jobName"] == api.created[0]


def test_same_database_is_serialised(api: FakeApi, ctx: reconcile.Context) -> None:
    api.add("first")
    api.add("second")
    run(ctx, "second")  # reconciled first, but created second: waits for the older one
    assert api.status("second")["phase"] == "Pending"
    assert api.condition("second", "Reconciling")["reason"] == reasons.WAITING_FOR_DATABASE
    run(ctx, "first")
    run(ctx, "second")
    assert api.status("second")["step"] == "waiting" and len(api.created) == 1
    assert api.reasons_of("second") == [reasons.WAITING_FOR_DATABASE]  # no event storm
    api.finish("first", result())
    run(ctx, "first")
    run(ctx, "second")
    assert api.status("second")["step"] == "apply" and len(api.created) == 2


def test_a_failed_resource_never_blocks_a_later_one_of_the_same_database(
    api: FakeApi, ctx: reconcile.Context
) -> None:
    api.add("broken", backup={"enabled": True, "url": "s3://b/p/",
                              "credentialsSecretRef": {"name": "nope"}})
    api.add("valid")
    run(ctx, "valid")  # the older one is not judged yet: wait for it
    assert api.status("valid")["step"] == "waiting"
    run(ctx, "broken")
    assert api.status("broken")["step"] == "invalid"
    run(ctx, "valid")
    valid = api.status("valid")
    assert valid["step"] == "apply" and api.created == [valid["jobName"]]


def test_a_waiting_resource_starts_on_the_watch_event_that_ends_the_run_before(
    api: FakeApi, ctx: reconcile.Context
) -> None:
    for name in ("first", "second", "third"):
        api.add(name)
        run(ctx, name)
    assert [api.status(n)["step"] for n in ("first", "second", "third")] == [
        "apply", "waiting", "waiting"]
    del api.secrets["app-db"]  # a waiter behind the same holder is not asked about again…
    run(ctx, "third")
    assert api.status("third")["step"] == "waiting"
    api.secrets["app-db"] = {"url"}
    watch(ctx, api, "second")  # a run goes on: nobody's turn
    assert len(api.created) == 1
    api.finish("first", result())
    run(ctx, "first")
    watch(ctx, api, "first")  # its final status, watched: the oldest waiter's turn, only its
    assert [api.status(n)["step"] for n in ("second", "third")] == ["apply", "waiting"]
    api.finish("second", result())
    run(ctx, "second")
    gone = api.migrations.pop("second")  # …and deleted: the watch's last word of it
    watch(ctx, api, "second", gone)
    assert api.status("third")["step"] == "apply" and len(api.created) == 3
    assert f"{NS}/second" not in ctx.locks  # nothing kept of a deleted resource


def test_other_databases_are_not_serialised(api: FakeApi, ctx: reconcile.Context) -> None:
    api.secrets["other-db"] = {"url"}
    api.add("first")
    api.add("second", database={"urlSecretRef": {"name": "other-db", "key": "url"}})
    run(ctx, "first")
    run(ctx, "second")
    assert len(api.created) == 2


def test_dry_run_plans_only(api: FakeApi, ctx: reconcile.Context) -> None:
    api.add("app", dryRun=True)
    run(ctx, "app")
    job_name = api.status("app")["jobName"]
    assert job_env(api, job_name)["SCHEMASHIFT_DRY_RUN"] == "true"
    api.finish("app", result("Planned", reasons.DRY_RUN, current="a1"))
    run(ctx, "app")
    status = api.status("app")
    assert status["phase"] == "Succeeded" and status["plan"]["hash"] == "h1"
    assert api.condition("app", "Planned")["reason"] == reasons.DRY_RUN
    assert api.condition("app", "Ready")["reason"] == reasons.DRY_RUN
    assert len(api.created) == 1


def approve(api: FakeApi, name: str, value: str) -> None:
    api.migrations[name]["metadata"]["annotations"][resource.APPROVED_ANNOTATION] = value


def test_approval_flow(api: FakeApi, ctx: reconcile.Context) -> None:
    api.add("app", approval={"required": True})
    run(ctx, "app")
    api.finish("app", result("Planned", reasons.DRY_RUN, current="a1"))
    run(ctx, "app")
    assert api.status("app")["phase"] == "AwaitingApproval"
    assert "schemashift.io/approved=h1" in api.status("app")["message"]
    run(ctx, "app")
    assert len(api.created) == 1  # waits
    approve(api, "app", "stale")
    run(ctx, "app")
    run(ctx, "app")
    assert api.condition("app", "Approved")["reason"] == reasons.APPROVAL_HASH_MISMATCH
    assert api.reasons_of("app").count(reasons.APPROVAL_HASH_MISMATCH) == 1
    assert len(api.created) == 1
    approve(api, "app", "h1")
    run(ctx, "app")
    assert api.status("app")["step"] == "replan"
    assert api.condition("app", "Approved")["status"] == "True"
    api.finish("app", result("Planned", reasons.DRY_RUN, current="a1"))
    run(ctx, "app")
    assert api.status("app")["step"] == "apply" and len(api.created) == 3
    assert job_env(api, api.created[-1])["SCHEMASHIFT_DRY_RUN"] == "false"
    api.finish("app", result())
    run(ctx, "app")
    assert api.status("app")["phase"] == "Succeeded"


def test_moved_database_is_replanned_never_applied(api: FakeApi, ctx: reconcile.Context) -> None:
    api.add("app", approval={"required": True})
    run(ctx, "app")
    api.finish("app", result("Planned", reasons.DRY_RUN, current="a1"))
    run(ctx, "app")
    approve(api, "app", "h1")
    run(ctx, "app")
    api.migrations["app"]["status"]["plan"] = {"hash": "h2"}  # the runner's live report
    api.finish("app", result("Planned", reasons.DRY_RUN, plan_hash="h2", current="a2"))
    run(ctx, "app")
    status = api.status("app")
    assert status["phase"] == "AwaitingApproval" and status["plan"]["hash"] == "h2"
    assert api.condition("app", "Approved")["reason"] == reasons.PLAN_STALE
    assert len(api.created) == 2  # plan, replan: no apply
    run(ctx, "app")  # the old approval does not match the new plan: PlanStale said so already
    assert api.condition("app", "Approved")["reason"] == reasons.PLAN_STALE
    assert len(api.created) == 2
    approve(api, "app", "h2")
    run(ctx, "app")
    assert api.status("app")["step"] == "replan"


def test_failure_is_rolled_back_and_scrubbed(api: FakeApi, ctx: reconcile.Context) -> None:
    api.add("app")
    run(ctx, "app")
    api.finish("app", result("RolledBack", reasons.ROLLED_BACK_DOWNGRADE, current="a1",
                             message="b2 failed on postgresql://app:pw1234@db/app; undone",
                             undone=["b2"]))
    run(ctx, "app")
    status = api.status("app")
    assert status["phase"] == "RolledBack" and status["currentRevision"] == "a1"
    assert "pw1234" not in str(status) and "pw1234" not in str(api.events)
    assert api.condition("app", "RolledBack")["status"] == "True"
    assert api.condition("app", "Stalled")["status"] == "True"
    assert api.events[-1][1] == "Warning"


def test_deadline_and_lost_job(api: FakeApi, ctx: reconcile.Context) -> None:
    api.add("slow")
    run(ctx, "slow")
    api.migrations["slow"]["status"]["currentRevision"] = "a1"  # live progress from the runner
    api.finish("slow", None, job_reason="DeadlineExceeded")
    run(ctx, "slow")
    assert api.condition("slow", "Ready")["reason"] == reasons.DEADLINE_EXCEEDED
    assert "revision a1" in api.status("slow")["message"]
    api.add("lost", database={"urlSecretRef": {"name": "s3", "key": "AWS_ACCESS_KEY_ID"}})
    run(ctx, "lost")
    api.jobs.clear()
    run(ctx, "lost")
    assert api.condition("lost", "Ready")["reason"] == reasons.JOB_NOT_FOUND


def test_image_pull_failure_stops_the_job(api: FakeApi, ctx: reconcile.Context) -> None:
    api.add("app")
    run(ctx, "app")
    job_name = api.status("app")["jobName"]
    api.pods[job_name] = [{"status": {"containerStatuses": [{"state": {"waiting": {
        "reason": "ErrImagePull", "message": "not found"}}}]}}]
    run(ctx, "app")
    assert api.condition("app", "Ready")["reason"] == reasons.IMAGE_PULL_FAILED
    assert job_name not in api.jobs


def test_runner_phases_are_read_from_its_log_and_announced_once(
    api: FakeApi, ctx: reconcile.Context
) -> None:
    api.add("app")
    run(ctx, "app")
    api.runner_prints("app", events.PhaseEntered(phase="BackingUp", message="backing up"),
                      events.StageChanged(stage=progress.StageStatus(name="1-a1", revision="a1")))
    run(ctx, "app")
    run(ctx, "app")
    assert api.reasons_of("app") == [reasons.JOB_CREATED, "BackingUp"]
    status = api.status("app")
    assert (status["phase"], status["message"]) == ("BackingUp", "backing up")
    assert status["stages"] == [asdict(progress.StageStatus(name="1-a1", revision="a1"))]
    assert api.condition("app", "Reconciling")["reason"] == reasons.IN_PROGRESS
    api.runner_prints("app", events.PhaseEntered(phase="Succeeded", message="claims success"))
    run(ctx, "app")
    assert api.status("app")["phase"] == "BackingUp"  # a final phase is the operator's call


def test_spec_change_during_a_run(api: FakeApi, ctx: reconcile.Context) -> None:
    api.add("app")
    run(ctx, "app")
    first_job = api.status("app")["jobName"]
    api.migrations["app"]["metadata"]["generation"] = 2
    run(ctx, "app")
    run(ctx, "app")
    assert api.condition("app", "SpecChanged")["reason"] == reasons.SPEC_CHANGED_DURING_RUN
    assert api.reasons_of("app").count(reasons.SPEC_CHANGED_DURING_RUN) == 1
    assert api.created == [first_job]
    api.finish("app", result("Failed", reasons.LINT_BLOCKED, current="a1"))
    run(ctx, "app")
    assert api.status("app")["phase"] == "Failed"
    assert api.status("app")["observedGeneration"] == 1
    run(ctx, "app")  # generation 2 and not Succeeded: it runs
    assert len(api.created) == 2 and api.status("app")["observedGeneration"] == 2


def test_succeeded_is_never_rerun(api: FakeApi, ctx: reconcile.Context) -> None:
    api.add("app")
    run(ctx, "app")
    api.finish("app", result())
    run(ctx, "app")
    api.migrations["app"]["metadata"]["generation"] = 2
    run(ctx, "app")
    run(ctx, "app")
    assert len(api.created) == 1
    assert api.condition("app", "SpecChanged")["reason"] == reasons.ALREADY_SUCCEEDED
    assert api.status("app")["observedGeneration"] == 2  # seen: timers stop
    assert api.condition("app", "Ready")["status"] == "True"


def test_deletion_while_running_stops_the_job(api: FakeApi, ctx: reconcile.Context) -> None:
    api.add("app")
    run(ctx, "app")
    job_name = api.status("app")["jobName"]
    api.migrations["app"]["status"]["currentRevision"] = "a2"
    said = asyncio.run(reconcile.finalize(ctx, NS, "app", poll_s=0.01, timeout_s=1))
    assert job_name not in api.jobs
    assert "revision a2" in said and api.events[-1][2] == reasons.DELETED_WHILE_RUNNING


def test_a_forged_status_is_put_back(api: FakeApi, ctx: reconcile.Context) -> None:
    api.add("app")
    run(ctx, "app")
    api.finish("app", result(outcome="RolledBack", reason=reasons.ROLLED_BACK_DOWNGRADE))
    run(ctx, "app")
    truth = api.status("app")
    forged = api.migrations["app"]["status"]
    forged["phase"] = "Succeeded"  # someone with status rights claims success
    forged["conditions"] = [{"type": "Ready", "status": "True", "reason": "Succeeded"}]
    watch(ctx, api, "app")
    assert api.status("app")["phase"] == truth["phase"] != "Succeeded"
    assert api.status("app")["conditions"] == truth["conditions"]
