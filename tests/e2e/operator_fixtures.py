"""Fixtures of the operator's end-to-end tests (imported by tests/e2e/conftest.py).

The operator runs as a real `schemashift operator` process under the ServiceAccount and RBAC of
manifests/rbac/; SchemaMigrations are applied with `kubectl apply -f -` as users do.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.testbed import fixtures as _testbed
from tests.e2e.testbed.controlplane import ControlPlane, free_port
from tests.e2e.testbed.kubelet import ProcessKubelet

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "manifests" / "crd" / "schemamigrations.yaml"
RBAC_DIR = REPO / "manifests" / "rbac"
OPERATOR_NAMESPACE = "schemashift-system"
OPERATOR_SA = "schemashift-operator"
# What an admin sets (chart values policy.*) so the examples' image may run, and the hook
# chart's per-release runner ServiceAccount (release hms) may report its progress.
EXAMPLES_POLICY = {"SCHEMASHIFT_POLICY": json.dumps({
    "allowedImages": ["ghcr.io/schemashift/*"],
    "allowedServiceAccounts": ["hms-schemashift-runner"]})}


class OperatorProcess:
    """`schemashift operator` as a process in its own group, its output in `log_file`."""

    def __init__(self, plane: ControlPlane, kubeconfig: Path, log_file: Path,
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.plane = plane
        self.extra_env = dict(extra_env or {})
        self.kubeconfig = kubeconfig
        self.log_file = log_file
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.checked = 0  # the log up to here was looked at for problems()

    def command(self) -> list[str]:
        return ["schemashift", "operator",
                "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
                "--metrics-port", str(self.metrics_port), "--job-image", "schemashift:e2e",
                "--lease-namespace", OPERATOR_NAMESPACE]

    def start(self) -> None:
        env = {k: v for k, v in self.plane.env(self.kubeconfig).items()
               if not k.startswith(("SCHEMASHIFT_", "AWS_", "KUBERNETES_"))}
        env.update(self.extra_env)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"operator exited:\n{self.logs()}"
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{self.liveness_port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            time.sleep(0.2)
        raise AssertionError(f"operator not live after 60 s:\n{self.logs()}")

    def leading(self) -> bool:
        """Holds the leader Lease and runs kopf (a standby serves liveness, not this)."""
        return "schemashift_operator_leader 1.0" in self.metrics()

    def wait_leading(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.logs()
            if self.leading():
                return
            time.sleep(0.2)
        raise AssertionError(f"not the leader after {timeout:.0f} s:\n{self.logs()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def log_size(self) -> int:
        return self.log_file.stat().st_size if self.log_file.exists() else 0

    def problems(self, since: int = 0) -> list[str]:
        """Log lines a sound run never writes: a traceback (a handler that raised), or the API
        server refusing the operator something (its RBAC in manifests/rbac/ was not enough)."""
        if not self.log_file.exists():
            return []
        with self.log_file.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        return [line[:2000] for line in text.splitlines()
                if "Traceback" in line or "Forbidden" in line or "(403)" in line
                or "status=403" in line]

    def logs(self, lines: int = 60) -> str:
        if not self.log_file.exists():
            return ""
        text = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        return f"--- operator ({self.log_file}) ---\n" + "\n".join(text)


@pytest.fixture(scope="session")
def smig_crd(control_plane: ControlPlane) -> Path:
    """The SchemaMigration CRD from manifests/crd/, applied and Established."""
    control_plane.kubectl("apply", "-f", str(CRD_FILE))
    # Not `kubectl wait --for=condition=Established`: it errors out instead of waiting when the
    # CRD has no conditions yet (right after a create).
    extensions = client.ApiextensionsV1Api(control_plane.admin_api())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        crd = extensions.read_custom_resource_definition("schemamigrations.schemashift.io")
        if any(c.type == "Established" and c.status == "True"
               for c in (crd.status.conditions or []) if crd.status):
            return CRD_FILE
        time.sleep(0.2)
    raise AssertionError("the SchemaMigration CRD is not Established after 60 s")


@pytest.fixture(scope="session")
def operator_process(
    control_plane: ControlPlane, kubelet: ProcessKubelet, smig_crd: Path, pg_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator for the session, as ServiceAccount schemashift-system/schemashift-operator."""
    with contextlib.suppress(ApiException):
        control_plane.create_namespace(OPERATOR_NAMESPACE)
    control_plane.kubectl("apply", "-f", str(RBAC_DIR / "operator.yaml"),
                          "-f", str(RBAC_DIR / "migration-job.yaml"))
    kubeconfig = control_plane.kubeconfig_for_service_account(OPERATOR_NAMESPACE, OPERATOR_SA)
    # "The image's ENV": the migration image ships pg_dump/pg_restore matching the servers.
    kubelet.extra_env["SCHEMASHIFT_PG_BINDIR"] = str(pg_server.bin_dir)
    process = OperatorProcess(control_plane, kubeconfig,
                              tmp_path_factory.mktemp("operator") / "operator.log",
                              EXAMPLES_POLICY)
    process.start()
    process.wait_leading()
    _testbed._diagnostics.append(process.logs)
    try:
        yield process
    finally:
        _testbed._diagnostics.remove(process.logs)
        process.stop()
    # What happened after the last test's own check (e.g. its namespace being deleted).
    late = process.problems(process.checked)
    assert not late, "the operator logged after the last test:\n" + "\n".join(late[:5])


@pytest.fixture(autouse=True)
def operator_log_is_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test with the operator: no traceback, no refusal in its log since the previous
    test's check (which includes what the previous test's namespace deletion caused)."""
    if "operator_process" not in request.fixturenames:
        yield
        return
    process: OperatorProcess = request.getfixturevalue("operator_process")
    yield
    found = process.problems(process.checked)
    process.checked = process.log_size()
    assert not found, "the operator logged:\n" + "\n".join(found[:5])


class Migrations:
    """SchemaMigrations of one test namespace: apply, read, wait, events, Jobs."""

    def __init__(self, plane: ControlPlane, namespace: str, kubelet: ProcessKubelet) -> None:
        self.plane = plane
        self.namespace = namespace
        self.kubelet = kubelet
        api = plane.admin_api()
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)

    def secret(self, name: str, data: dict[str, str]) -> None:
        self.core.create_namespaced_secret(self.namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name=name), string_data=data))

    def manifest(self, name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
        return {"apiVersion": "schemashift.io/v1alpha1", "kind": "SchemaMigration",
                "metadata": {"name": name, "namespace": self.namespace, **metadata},
                "spec": spec}

    def apply(self, name: str, spec: dict[str, Any], *, check: bool = True,
              **metadata: Any) -> subprocess.CompletedProcess[str]:
        text = yaml.safe_dump(self.manifest(name, spec, **metadata))
        return self.plane.kubectl("apply", "-f", "-", input=text, check=check)

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(
            "schemashift.io", "v1alpha1", self.namespace, "schemamigrations", name))

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        found = [c for c in self.status(name).get("conditions", []) if c["type"] == type_]
        assert found, f"no condition {type_}: {json.dumps(self.status(name), indent=1)}"
        return dict(found[0])

    def wait(self, name: str, until: Callable[[dict[str, Any]], bool], timeout: float = 120,
             what: str = "") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(ApiException):
                status = self.status(name)
                if until(status):
                    return status
            time.sleep(0.3)
        raise AssertionError(f"{name}: not {what or until} after {timeout:.0f}s; status:\n"
                             f"{json.dumps(status, indent=1)}\njobs: {self.jobs()}")

    def wait_phase(self, name: str, *phases: str, timeout: float = 120) -> dict[str, Any]:
        return self.wait(name, lambda s: s.get("phase") in phases and s.get("step") in (
            "done", "awaiting-approval", "invalid"), timeout, f"in {phases}")

    def events(self, name: str) -> list[tuple[str, str, str]]:
        found = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}").items
        # Timestamps have 1 s resolution; etcd's revision (resourceVersion) orders within one.
        found.sort(key=lambda e: (e.first_timestamp or e.event_time,
                                  int(e.metadata.resource_version)))
        return [(e.type, e.reason, e.message) for e in found]

    def jobs(self) -> list[dict[str, Any]]:
        items = self.batch.list_namespaced_job(self.namespace).items
        return [{"name": j.metadata.name, "labels": j.metadata.labels,
                 "conditions": [(c.type, c.reason) for c in j.status.conditions or []]}
                for j in items]

    def pod_log(self, job_name: str) -> str:
        pods = self.core.list_namespaced_pod(self.namespace,
                                             label_selector=f"job-name={job_name}").items
        return "\n".join(self.kubelet.pod_log(self.namespace, p.metadata.name) for p in pods)


@pytest.fixture
def migrations(
    control_plane: ControlPlane, kubelet: ProcessKubelet, operator_process: OperatorProcess,
    namespace: str, database_url: str,
) -> Migrations:
    """A namespace ready for SchemaMigrations: Secret app-db (key url) and the Job's RBAC."""
    control_plane.kubectl("apply", "-n", namespace, "-f",
                          str(RBAC_DIR / "migration-job-namespace.yaml"))
    found = Migrations(control_plane, namespace, kubelet)
    found.secret("app-db", {"url": database_url})
    return found
