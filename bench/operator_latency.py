"""Operator latency and memory on the real test bed (kube-apiserver + process kubelet).

Measures, with watches started before anything is applied (receipt times on this host):
- apply → Job created: `kubectl apply` of a SchemaMigration until its Job appears;
- Job finished → status: the Job's Complete/Failed condition until the resource's final phase;
over N resources (default 50), p50/p95, each as a ratio to a baseline measured in the same run:
`kubectl apply` of a ConfigMap until its watch event (the API round trip no operator can beat).
Then the operator's RSS with M SchemaMigrations (default 500) against its idle RSS.

The Jobs run `schemashift run-job` for real against an unreachable database (127.0.0.1:1), so each
ends within seconds with a genuine termination message; the operator's work is identical to a
migration's last step. Targets (issue 5): p95 < 1 s, RSS < 200 MB.

    python bench/operator_latency.py [--resources 50] [--many 500]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, watch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e import operator_fixtures as support  # noqa: E402
from tests.e2e.testbed import binaries  # noqa: E402
from tests.e2e.testbed.controlplane import ControlPlane  # noqa: E402
from tests.e2e.testbed.kubelet import ProcessKubelet  # noqa: E402

FINAL = {"Succeeded", "Failed", "RolledBack"}


class Watcher:
    """First receipt time of each (kind, name, fact) seen by watches in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.seen: dict[tuple[str, str], float] = {}
        self.stop = threading.Event()
        self.api, self.namespace = api, namespace
        custom, batch, core = (client.CustomObjectsApi(api), client.BatchV1Api(api),
                               client.CoreV1Api(api))
        self.streams = [
            (lambda **kw: custom.list_namespaced_custom_object(
                "schemashift.io", "v1alpha1", namespace, "schemamigrations", **kw), self._smig),
            (lambda **kw: batch.list_namespaced_job(namespace, **kw), self._job),
            (lambda **kw: core.list_namespaced_config_map(namespace, **kw), self._cm),
        ]
        self.threads = [threading.Thread(target=self._run, args=s, daemon=True)
                        for s in self.streams]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()
        time.sleep(1.0)

    def _note(self, key: tuple[str, str]) -> None:
        self.seen.setdefault(key, time.monotonic())

    def _run(self, lister: Any, handle: Any) -> None:
        while not self.stop.is_set():
            try:
                for event in watch.Watch().stream(lister, timeout_seconds=5):
                    handle(event["object"] if isinstance(event["object"], dict)
                           else self.api.sanitize_for_serialization(event["object"]))
            except Exception:
                time.sleep(0.2)

    def _smig(self, obj: dict[str, Any]) -> None:
        status = obj.get("status") or {}
        if status.get("phase") in FINAL and status.get("step") == "done":
            self._note(("final", obj["metadata"]["name"]))

    def _job(self, obj: dict[str, Any]) -> None:
        owner = obj["metadata"]["ownerReferences"][0]["name"]
        self._note(("job", owner))
        for cond in (obj.get("status") or {}).get("conditions") or ():
            if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
                self._note(("job-done", owner))

    def _cm(self, obj: dict[str, Any]) -> None:
        self._note(("cm", obj["metadata"]["name"]))


def smig(namespace: str, name: str, secret: str) -> dict[str, Any]:
    return {"apiVersion": "schemashift.io/v1alpha1", "kind": "SchemaMigration",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"database": {"urlSecretRef": {"name": secret, "key": "url"}},
                     "migrations": {"image": "schemashift:bench", "scriptLocation": "/bench"}}}


def quantiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def latency(plane: ControlPlane, namespace: str, count: int) -> None:
    core = client.CoreV1Api(plane.admin_api())
    watcher = Watcher(plane.admin_api(), namespace)
    watcher.start()
    applied: dict[str, float] = {}
    for i in range(count):
        name = f"cm-{i}"
        applied[name] = time.monotonic()
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace}}))
    for i in range(count):
        secret = f"db-{i}"  # one database each: nothing is serialised
        core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name=secret),
            string_data={"url": "postgresql://app:pw@127.0.0.1:1/none"}))
    started: dict[str, float] = {}
    for i in range(count):
        name = f"m-{i}"
        started[name] = time.monotonic()
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(smig(namespace, name, f"db-{i}")))
        time.sleep(1.0)  # a steady arrival rate: one or two Jobs running at once
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and sum(k[0] == "final" for k in watcher.seen) < count:
        time.sleep(0.5)
    watcher.stop.set()
    seen = watcher.seen
    baseline = [seen[("cm", n)] - t for n, t in applied.items() if ("cm", n) in seen]
    to_job = [seen[("job", n)] - t for n, t in started.items() if ("job", n) in seen]
    to_status = [watcher.seen[("final", n)] - watcher.seen[("job-done", n)] for n in started
                 if ("final", n) in watcher.seen and ("job-done", n) in watcher.seen]
    b50, b95 = quantiles(baseline)
    print(f"baseline apply→watched (ConfigMap), n={len(baseline)}: p50 {b50:.3f}s p95 {b95:.3f}s")
    for label, values in (("apply→Job created", to_job), ("Job finished→status", to_status)):
        p50, p95 = quantiles(values)
        print(f"{label}, n={len(values)}/{count}: p50 {p50:.3f}s p95 {p95:.3f}s "
              f"(x{p50 / b50:.1f} / x{p95 / b95:.1f} baseline; target p95 < 1 s: "
              f"{'met' if p95 < 1 else 'MISSED'})")


def memory(plane: ControlPlane, operator: support.OperatorProcess, namespace: str,
           count: int) -> None:
    assert operator.proc is not None
    idle = rss_mb(operator.proc.pid)
    docs = [smig(namespace, f"many-{i}", "missing") for i in range(count)]
    for start in range(0, count, 100):
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs[start:start + 100]),
                      timeout=120)
    custom = client.CustomObjectsApi(plane.admin_api())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        items = custom.list_namespaced_custom_object(
            "schemashift.io", "v1alpha1", namespace, "schemamigrations")["items"]
        done = sum((i.get("status") or {}).get("step") in ("done", "invalid") for i in items)
        if done >= count:
            break
        time.sleep(1)
    time.sleep(3)
    loaded = rss_mb(operator.proc.pid)
    print(f"operator RSS idle {idle:.0f} MB; with {count} SchemaMigrations {loaded:.0f} MB "
          f"(x{loaded / idle:.2f}; target < 200 MB: {'met' if loaded < 200 else 'MISSED'}; "
          f"{done}/{count} handled)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resources", type=int, default=50)
    parser.add_argument("--many", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="schemashift-bench-") as tmp:
        plane = ControlPlane(Path(tmp), binaries.locate())
        plane.start()
        kubelet = ProcessKubelet(plane)
        kubelet.start()
        operator = None
        try:
            plane.kubectl("apply", "-f", str(support.CRD_FILE))
            plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                          "crd/schemamigrations.schemashift.io")
            plane.create_namespace(support.OPERATOR_NAMESPACE)
            plane.kubectl("apply", "-f", str(support.RBAC_DIR / "operator.yaml"),
                          "-f", str(support.RBAC_DIR / "migration-job.yaml"))
            kubeconfig = plane.kubeconfig_for_service_account(support.OPERATOR_NAMESPACE,
                                                              support.OPERATOR_SA)
            operator = support.OperatorProcess(plane, kubeconfig, Path(tmp) / "operator.log")
            operator.start()
            for namespace in ("bench-latency", "bench-memory"):
                plane.create_namespace(namespace)
                plane.kubectl("apply", "-n", namespace, "-f",
                              str(support.RBAC_DIR / "migration-job-namespace.yaml"))
            latency(plane, "bench-latency", args.resources)
            memory(plane, operator, "bench-memory", args.many)
        finally:
            if operator is not None:
                operator.stop()
            kubelet.stop()
            plane.stop()


if __name__ == "__main__":
    main()
