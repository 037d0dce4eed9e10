"""The test bed itself: real controllers acting on pods that the process kubelet runs."""

from __future__ import annotations

import json
import ssl
import subprocess
import textwrap
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.testbed import ControlPlane, ProcessKubelet, wait_for

pytestmark = pytest.mark.e2e

SLEEP_FOREVER = ["python", "-c", "import time; time.sleep(600)"]


def job_manifest(name: str, argv: list[str], **job_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            **job_spec,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "ignored", "command": argv}],
                }
            },
        },
    }


def pod_manifest(name: str, argv: list[str], **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "ignored", "command": argv, **container}],
        },
    }


def job_condition(batch: client.BatchV1Api, namespace: str, name: str) -> str | None:
    """The type of the Job's terminal condition (Complete/Failed) once it is True."""
    job = batch.read_namespaced_job(name, namespace)
    for condition in job.status.conditions or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return str(condition.type)
    return None


def terminated_pod(core: client.CoreV1Api, namespace: str, name: str) -> Any:
    """The pod once it is Succeeded or Failed, else None."""
    pod = core.read_namespaced_pod(name, namespace)
    return pod if pod.status.phase in ("Succeeded", "Failed") else None


def absent(read: Callable[[], object]) -> bool:
    """True once `read` (a read_namespaced_* call) gets 404."""
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def job_pods(core: client.CoreV1Api, namespace: str, job: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items)


@pytest.fixture
def core(admin_api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(admin_api)


@pytest.fixture
def batch(admin_api: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(admin_api)


def test_job_succeeds(kubelet: ProcessKubelet, batch: client.BatchV1Api, namespace: str) -> None:
    argv = ["python", "-c", "print('hello from a Job')"]
    batch.create_namespaced_job(namespace, job_manifest("ok", argv))
    condition = wait_for("Job ok to finish", lambda: job_condition(batch, namespace, "ok"))
    assert condition == "Complete"
    assert batch.read_namespaced_job("ok", namespace).status.succeeded == 1


def test_job_fails(
    kubelet: ProcessKubelet, batch: client.BatchV1Api, core: client.CoreV1Api, namespace: str
) -> None:
    argv = ["python", "-c", "import sys; sys.exit(1)"]
    batch.create_namespaced_job(namespace, job_manifest("bad", argv))
    condition = wait_for("Job bad to finish", lambda: job_condition(batch, namespace, "bad"))
    assert condition == "Failed"
    [pod] = job_pods(core, namespace, "bad")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, terminated.exit_code, terminated.reason) == ("Failed", 1, "Error")


def test_job_ttl_after_finished_deletes_it(
    kubelet: ProcessKubelet, batch: client.BatchV1Api, namespace: str
) -> None:
    batch.create_namespaced_job(
        namespace, job_manifest("ttl", ["python", "-c", "pass"], ttlSecondsAfterFinished=0)
    )

    wait_for(
        "the TTL controller to delete Job ttl",
        lambda: absent(lambda: batch.read_namespaced_job("ttl", namespace)),
    )


@pytest.mark.parametrize("propagation", ["Background", "Foreground"])
def test_deleting_a_job_cascades_to_its_pods(
    kubelet: ProcessKubelet,
    batch: client.BatchV1Api,
    core: client.CoreV1Api,
    namespace: str,
    propagation: str,
) -> None:
    batch.create_namespaced_job(namespace, job_manifest("long", SLEEP_FOREVER))
    running = wait_for(
        "the Job's pod to run",
        lambda: [p for p in job_pods(core, namespace, "long") if p.status.phase == "Running"],
    )
    uid = running[0].metadata.uid

    batch.delete_namespaced_job(
        "long", namespace, body=client.V1DeleteOptions(propagation_policy=propagation)
    )

    wait_for(
        "the garbage collector to delete the pods", lambda: not job_pods(core, namespace, "long")
    )
    proc = kubelet.runs[uid].proc
    assert proc is not None
    assert proc.poll() == -15, "SIGTERM must have stopped the process within the grace period"


def test_deletion_kills_a_process_ignoring_sigterm_after_the_grace_period(
    kubelet: ProcessKubelet, core: client.CoreV1Api, namespace: str
) -> None:
    argv = [
        "python",
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(600)",
    ]
    pod = core.create_namespaced_pod(namespace, pod_manifest("stubborn", argv))
    wait_for("the process to start", lambda: "ready" in kubelet.pod_log(namespace, "stubborn"))

    core.delete_namespaced_pod("stubborn", namespace, grace_period_seconds=1)

    wait_for(
        "the pod to be deleted",
        lambda: absent(lambda: core.read_namespaced_pod("stubborn", namespace)),
        timeout=30,
    )
    assert kubelet.runs[pod.metadata.uid].proc.returncode == -9  # type: ignore[union-attr]


def test_active_deadline_fails_the_pod(
    kubelet: ProcessKubelet, core: client.CoreV1Api, namespace: str
) -> None:
    manifest = pod_manifest("slow", SLEEP_FOREVER)
    manifest["spec"]["activeDeadlineSeconds"] = 2
    core.create_namespaced_pod(namespace, manifest)
    pod = wait_for("the deadline", lambda: terminated_pod(core, namespace, "slow"), timeout=45)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "DeadlineExceeded")


def test_pod_env_is_resolved_like_a_kubelet(
    kubelet: ProcessKubelet, core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="db"), string_data={"url": "postgresql://s3cret"}
        ),
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg"), data={"A": "1", "B": "2"}),
    )
    env = [
        {"name": "DB_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "A"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "PLAIN", "value": "x-$(MODE)"},
        {
            "name": "ABSENT",
            "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
        },
    ]
    env_from = [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "db"}}]
    keys = ["DB_URL", "MODE", "POD", "NS", "PLAIN", "ABSENT", "CFG_A", "CFG_B", "url"]
    script = (
        "import json, os; open('/dev/termination-log', 'w').write(json.dumps("
        f"{{k: os.environ.get(k) for k in {keys!r}}}))"
    )
    core.create_namespaced_pod(
        namespace, pod_manifest("env", ["python", "-c", script], env=env, envFrom=env_from)
    )
    pod = wait_for("pod env to finish", lambda: terminated_pod(core, namespace, "env"))
    assert pod.status.phase == "Succeeded", kubelet.pod_log(namespace, "env")
    seen = json.loads(pod.status.container_statuses[0].state.terminated.message)
    assert seen == {
        "DB_URL": "postgresql://s3cret",
        "MODE": "1",
        "POD": "env",
        "NS": namespace,
        "PLAIN": "x-1",
        "ABSENT": None,
        "CFG_A": "1",
        "CFG_B": "2",
        "url": "postgresql://s3cret",
    }


def test_missing_secret_keeps_the_container_waiting(
    kubelet: ProcessKubelet, core: client.CoreV1Api, namespace: str
) -> None:
    env = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "later", "key": "k"}}}]
    script = "import os; open('/dev/termination-log', 'w').write(os.environ['X'])"
    core.create_namespaced_pod(namespace, pod_manifest("wait", ["python", "-c", script], env=env))

    def waiting_reason() -> str | None:
        statuses = core.read_namespaced_pod("wait", namespace).status.container_statuses or []
        return statuses[0].state.waiting.reason if statuses and statuses[0].state.waiting else None

    assert wait_for("CreateContainerConfigError", waiting_reason) == "CreateContainerConfigError"
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="later"), string_data={"k": "v"}),
    )
    pod = wait_for(
        "the pod to run once the Secret exists", lambda: terminated_pod(core, namespace, "wait")
    )
    assert pod.status.container_statuses[0].state.terminated.message == "v"


IN_CLUSTER_PROBE = textwrap.dedent(
    """
    import json
    from kubernetes import client, config
    config.load_incluster_config()
    core = client.CoreV1Api()
    namespace = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
    result = {"configmap": core.read_namespaced_config_map("cfg", namespace).data}
    try:
        core.list_namespaced_secret(namespace)
        result["secrets"] = "allowed"
    except client.ApiException as exc:
        result["secrets"] = exc.status
    open("/dev/termination-log", "w").write(json.dumps(result))
    """
)


def test_in_cluster_client_gets_its_service_account_rbac(
    kubelet: ProcessKubelet, control_plane: ControlPlane, core: client.CoreV1Api, namespace: str
) -> None:
    rbac = client.RbacAuthorizationV1Api(control_plane.admin_api())
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg"), data={"k": "v"})
    )
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "read-configmaps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "read-configmaps",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    manifest = pod_manifest("incluster", ["python", "-c", IN_CLUSTER_PROBE])
    manifest["spec"]["serviceAccountName"] = "reader"
    core.create_namespaced_pod(namespace, manifest)

    pod = wait_for("the in-cluster probe", lambda: terminated_pod(core, namespace, "incluster"))
    assert pod.status.phase == "Succeeded", kubelet.pod_log(namespace, "incluster")
    seen = json.loads(pod.status.container_statuses[0].state.terminated.message)
    assert seen == {"configmap": {"k": "v"}, "secrets": 403}


def test_service_account_kubeconfig_is_bound_by_rbac(
    control_plane: ControlPlane, namespace: str
) -> None:
    kubeconfig = control_plane.kubeconfig_for_service_account(namespace, "operator")
    whoami = control_plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig)
    username = json.loads(whoami.stdout)["status"]["userInfo"]["username"]
    assert username == f"system:serviceaccount:{namespace}:operator"
    denied = control_plane.kubectl(
        "get", "pods", "-n", namespace, kubeconfig=kubeconfig, check=False
    )
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.testbed.example.com
spec:
  group: testbed.example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wdg]}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer, minimum: 1}
"""


def test_kubectl_applies_a_crd_then_a_custom_resource(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("apply", "-f", "-", input=CRD)
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.testbed.example.com", "--timeout=60s"
    )
    widget = (
        "apiVersion: testbed.example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}"
    )
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=widget)
    got = control_plane.kubectl("get", "wdg", "w1", "-n", namespace, "-o", "json")
    assert json.loads(got.stdout)["spec"] == {"size": 3}
    invalid = widget.replace("size: 3", "size: 0")
    rejected = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=invalid, check=False
    )
    assert rejected.returncode != 0 and "should be greater than or equal to 1" in rejected.stderr


def test_helm_reaches_the_api_server(control_plane: ControlPlane) -> None:
    helm = control_plane.binaries.helm
    if helm is None:
        pytest.skip("helm not built (python tools/build_testbed.py builds it)")
    version = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True)
    assert version.stdout.startswith("v3."), version
    listed = subprocess.run(
        [str(helm), "list", "--all-namespaces", "--output", "json"],
        env=control_plane.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


def test_on_failure_restarts_the_process_in_place(
    kubelet: ProcessKubelet, core: client.CoreV1Api, namespace: str, tmp_path: Path
) -> None:
    marker = tmp_path / "first-run-done"
    script = (
        "import pathlib, sys; m = pathlib.Path(sys.argv[1]); "
        "sys.exit(0) if m.exists() else (m.touch(), sys.exit(3))"
    )
    manifest = pod_manifest("flaky", ["python", "-c", script, str(marker)])
    manifest["spec"]["restartPolicy"] = "OnFailure"
    core.create_namespaced_pod(namespace, manifest)
    pod = wait_for("the second run", lambda: terminated_pod(core, namespace, "flaky"))
    status = pod.status.container_statuses[0]
    assert (pod.status.phase, status.restart_count) == ("Succeeded", 1)
    assert status.last_state.terminated.exit_code == 3


def test_a_deployment_becomes_available(
    kubelet: ProcessKubelet, admin_api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(admin_api)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [{"name": "web", "image": "x", "command": SLEEP_FOREVER}]
                    },
                },
            },
        },
    )
    wait_for(
        "Deployment web to be available",
        lambda: apps.read_namespaced_deployment("web", namespace).status.available_replicas == 1,
    )


PRINT_THREE_LINES = ["python", "-c", "print('one'); print('two'); print('three')"]


def run_to_completion(core: client.CoreV1Api, namespace: str, name: str, argv: list[str]) -> None:
    core.create_namespaced_pod(namespace, pod_manifest(name, argv))
    pod = wait_for(f"pod {name} to finish", lambda: terminated_pod(core, namespace, name))
    assert pod.status.phase == "Succeeded"


def test_kubectl_logs_reads_the_output_through_the_api_server(
    kubelet: ProcessKubelet, control_plane: ControlPlane, core: client.CoreV1Api, namespace: str
) -> None:
    run_to_completion(core, namespace, "talk", PRINT_THREE_LINES)

    logs = control_plane.kubectl("logs", "-n", namespace, "talk")
    tail = control_plane.kubectl("logs", "-n", namespace, "talk", "--tail=1")
    # _preload_content=False: client 36.0.x returns the repr of the bytes (kubernetes-client/
    # python#2596); reading the raw body works with every version.
    limited = core.read_namespaced_pod_log(
        "talk", namespace, limit_bytes=6, _preload_content=False
    ).data.decode()

    assert (logs.stdout, tail.stdout, limited) == ("one\ntwo\nthree\n", "three\n", "one\ntw")


def test_kubectl_logs_previous_reads_the_run_before_the_restart(
    kubelet: ProcessKubelet,
    control_plane: ControlPlane,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "first-run-done"
    script = (
        "import pathlib, sys; m = pathlib.Path(sys.argv[1])\n"
        "if m.exists(): print('second run')\n"
        "else: print('first run'); m.touch(); sys.exit(3)"
    )
    manifest = pod_manifest("flaky", ["python", "-c", script, str(marker)])
    manifest["spec"]["restartPolicy"] = "OnFailure"
    core.create_namespaced_pod(namespace, manifest)
    wait_for("the second run", lambda: terminated_pod(core, namespace, "flaky"))

    current = control_plane.kubectl("logs", "-n", namespace, "flaky")
    previous = control_plane.kubectl("logs", "-n", namespace, "flaky", "--previous")

    assert (current.stdout, previous.stdout) == ("second run\n", "first run\n")


def test_kubectl_logs_follow_streams_until_the_process_exits(
    kubelet: ProcessKubelet,
    control_plane: ControlPlane,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    go_on = tmp_path / "go-on"
    script = (
        "import pathlib, sys, time\n"
        "print('first', flush=True)\n"
        "while not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.1)\n"
        "print('last')"
    )
    core.create_namespaced_pod(
        namespace, pod_manifest("chatty", ["python", "-c", script, str(go_on)])
    )
    wait_for("the first line", lambda: "first" in kubelet.pod_log(namespace, "chatty"))
    follow = subprocess.Popen(
        ["kubectl", "logs", "-f", "-n", namespace, "chatty"],
        env=control_plane.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        first = follow.stdout.readline()  # streamed while the process still waits
        go_on.touch()
        rest, errors = follow.communicate(timeout=60)
    finally:
        follow.kill()
    assert (first, rest, follow.returncode) == ("first\n", "last\n", 0), errors


def test_reading_pod_logs_needs_the_pods_log_permission(
    kubelet: ProcessKubelet, control_plane: ControlPlane, core: client.CoreV1Api, namespace: str
) -> None:
    run_to_completion(core, namespace, "talk", PRINT_THREE_LINES)
    rbac = client.RbacAuthorizationV1Api(control_plane.admin_api())
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "viewer"}
            ],
        },
    )
    viewer = control_plane.kubeconfig_for_user("viewer")

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return control_plane.kubectl(*args, "-n", namespace, kubeconfig=viewer, check=False)

    can_get_pods = kubectl("auth", "can-i", "get", "pods")
    can_read_logs = kubectl("auth", "can-i", "get", "pods", "--subresource=log")
    denied = kubectl("logs", "talk")
    assert (can_get_pods.stdout, can_read_logs.stdout) == ("yes\n", "no\n")
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied

    rbac.patch_namespaced_role(
        "pod-reader",
        namespace,
        [
            {
                "op": "add",
                "path": "/rules/-",
                "value": {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
            }
        ],
    )
    assert kubectl("auth", "can-i", "get", "pods", "--subresource=log").stdout == "yes\n"
    assert kubectl("logs", "talk").stdout == "one\ntwo\nthree\n"


def test_the_kubelet_serves_logs_only_to_the_api_server(
    kubelet: ProcessKubelet, control_plane: ControlPlane, core: client.CoreV1Api, namespace: str
) -> None:
    run_to_completion(core, namespace, "talk", PRINT_THREE_LINES)
    url = f"https://127.0.0.1:{kubelet.api_server.port}/containerLogs/{namespace}/talk/main"
    admin = yaml.safe_load(control_plane.admin_kubeconfig.read_text())["users"][0]["user"]

    def get(cert: tuple[str, str] | None) -> tuple[int, str]:
        context = ssl.create_default_context(cafile=str(control_plane.ca_file))
        if cert is not None:
            context.load_cert_chain(*cert)
        try:
            with urllib.request.urlopen(url, context=context, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    api_server = control_plane.kubelet_client
    assert get((str(api_server.cert), str(api_server.key))) == (200, "one\ntwo\nthree\n")
    status, _ = get((admin["client-certificate"], admin["client-key"]))
    assert status == 403
    with pytest.raises(OSError):  # the TLS handshake demands a client certificate
        get(None)
