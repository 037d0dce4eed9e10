"""Two operator replicas never act at once: leader election over a Lease on the real API server,
under the operator's own RBAC."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from kubernetes import client, config

from schemashift.kube.leader import LeaseElector, Timings
from tests.e2e.operator_fixtures import (
    EXAMPLES_POLICY,
    OPERATOR_NAMESPACE,
    Migrations,
    OperatorProcess,
)
from tests.e2e.test_operator import ADD, CREATE, at_a1, slow, spec
from tests.e2e.testbed.controlplane import ControlPlane

pytestmark = pytest.mark.e2e


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def electors(operator_process: OperatorProcess) -> tuple[LeaseElector, LeaseElector, FakeClock]:
    """Two replicas' electors on one new Lease, as the operator's ServiceAccount; the second
    one's clock is the test's."""
    api = client.CoordinationV1Api(
        config.new_client_from_config(config_file=str(operator_process.kubeconfig)))
    name = f"lease-{uuid.uuid4().hex[:8]}"
    timings = Timings(lease_s=15, renew_deadline_s=10, retry_s=2)
    clock = FakeClock()
    return (LeaseElector(OPERATOR_NAMESPACE, name, "first", timings, api),
            LeaseElector(OPERATOR_NAMESPACE, name, "second", timings, api, clock=clock), clock)


def holder(elector: LeaseElector) -> str | None:
    lease = elector._api.read_namespaced_lease(elector.name, elector.namespace)
    return lease.spec.holder_identity if lease.spec else None


def test_the_lease_goes_to_another_replica_only_after_the_holder_stops_renewing(
    operator_process: OperatorProcess,
) -> None:
    first, second, clock = electors(operator_process)
    assert first.try_acquire_or_renew()  # creates the Lease
    assert not second.try_acquire_or_renew()
    clock.now = 14.9  # the lease is 15 s from when *second* first saw this renewal
    assert not second.try_acquire_or_renew()
    assert first.try_acquire_or_renew()  # a renewal: second's wait starts again
    clock.now = 29.0
    assert not second.try_acquire_or_renew()
    clock.now = 44.1  # 15 s without a renewal seen
    assert second.try_acquire_or_renew()
    assert holder(second) == "second"
    assert not first.try_acquire_or_renew()  # the old holder sees a live lease of another
    lease = second._api.read_namespaced_lease(second.name, second.namespace)
    assert lease.spec.lease_transitions == 1


def test_a_released_lease_is_taken_at_once(operator_process: OperatorProcess) -> None:
    first, second, _ = electors(operator_process)
    assert first.try_acquire_or_renew()
    assert not second.try_acquire_or_renew()
    first.release()
    assert holder(first) is None
    assert second.try_acquire_or_renew()  # no waiting out the lease
    second.release()
    assert first.try_acquire_or_renew()


def test_only_the_holder_runs_and_a_standby_takes_over_a_killed_leader_without_a_second_run(
    control_plane: ControlPlane, operator_process: OperatorProcess, migrations: Migrations,
    database_url: str, tmp_path: Path,
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, slow(3)])
    standby = OperatorProcess(control_plane, operator_process.kubeconfig,
                              tmp_path / "standby.log", EXAMPLES_POLICY)
    standby.start()  # live (it answers the liveness probe) but not leading
    try:
        assert not standby.leading()
        migrations.apply("app", spec(history))
        running = migrations.wait("app", lambda s: s.get("step") == "apply"
                                  and bool(s.get("jobName")), what="applying")
        standby_log = standby.log_file.read_text()
        assert "waiting for Lease" in standby_log
        assert migrations.namespace not in standby_log  # the standby touched nothing
        operator_process.kill()
        standby.wait_leading()
        status = migrations.wait_phase("app", "Succeeded", "Failed", "RolledBack")
        assert status["phase"] == "Succeeded", status
        assert status["jobName"] == running["jobName"]  # adopted, not started again
        jobs = migrations.jobs()
        assert [j["name"] for j in jobs] == [running["jobName"]], jobs
        pods = migrations.core.list_namespaced_pod(
            migrations.namespace, label_selector=f"job-name={running['jobName']}").items
        assert len(pods) == 1, [p.metadata.name for p in pods]
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
                (ADD.id,)]
        assert not standby.problems(), standby.problems()
    finally:
        if operator_process.proc is None:
            operator_process.start()  # a standby now: the session's operator again after…
        standby.stop()  # …the standby hands the Lease over on SIGTERM
        operator_process.wait_leading(timeout=30)
