"""The demo's Kubernetes part: the same product through a real kube-apiserver.

The test bed (tests/e2e/testbed/) starts etcd, kube-apiserver (RBAC on) and
kube-controller-manager as local processes, plus a process kubelet that runs Job pods as local
processes with the pod's environment (the image is ignored, so `spec.migrations.scriptLocation`
is a path on this machine). Everything else is what a user does: `kubectl apply` of the CRD and
RBAC, `schemashift operator` under its ServiceAccount, Secrets, SchemaMigrations, `kubectl get
smig -w`, `kubectl wait`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import psycopg
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.e2e.operator_fixtures import (  # noqa: E402
    EXAMPLES_POLICY,
    OPERATOR_NAMESPACE,
    OPERATOR_SA,
    OperatorProcess,
)
from tests.e2e.testbed import binaries  # noqa: E402
from tests.e2e.testbed.controlplane import ControlPlane  # noqa: E402
from tests.e2e.testbed.kubelet import ProcessKubelet  # noqa: E402

from schemashift.redact import redact  # noqa: E402

HMS_MIGRATIONS = REPO / "examples" / "hms" / "migrations"
FIRST_REVISION = "6407aebfbb5e"
NAMESPACE = "hms"
IMAGE = "ghcr.io/schemashift/hms-migrations:0.1.0"
INSTALL = ("manifests/operator/00-namespace.yaml", "manifests/crd/",
           "manifests/rbac/operator.yaml", "manifests/rbac/migration-job.yaml")
FINAL_PHASES = ("Succeeded", "Failed", "RolledBack")
WATCH_TIMEOUT_S = 180.0
CONDITIONS = ('jsonpath={range .status.conditions[*]}{.type}{"\\t"}{.status}{"\\t"}{.reason}'
              '{"\\n"}{end}')
MESSAGE = 'jsonpath={.status.message}{"\\n"}'
OUTPUT_LINES = 8
OUTPUT_WIDTH = 160
PATIENTS = (("Ada Lovelace", "1815-12-10", "ada@example.org"),
            ("Alan Turing", "1912-06-23", None),
            ("Grace Hopper", "1906-12-09", "grace@example.org"))
FAILING_REVISION = '''"""make an email address mandatory for every patient

Revision ID: {rev}
Revises: {down}
"""
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("patients", sa.Column("mrn", sa.String(20), nullable=True))
    op.execute("UPDATE patients SET mrn = 'MRN-' || id")
    # Fails on the live data: a patient has no email address.
    op.alter_column("patients", "email", existing_type=sa.String(320), nullable=False)


def downgrade() -> None:
    op.alter_column("patients", "email", existing_type=sa.String(320), nullable=True)
    op.drop_column("patients", "mrn")
'''


class Postgres(Protocol):
    """What the story needs of the demo's PostgreSQL (tests.fixtures.postgres.PgServer)."""

    bin_dir: Path

    def create_database(self, name: str | None = None) -> str: ...

    def app_url(self, database: str) -> str: ...


class ObjectStore(Protocol):
    """What the story needs of the demo's S3 (tests.fixtures.s3.S3Server)."""

    endpoint: str
    region: str

    def env(self) -> dict[str, str]: ...

    def create_bucket(self, name: str | None = None) -> str: ...

    def client(self) -> Any: ...


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def show(text: str, prefix: str = "  ") -> None:
    if text.strip():
        print(textwrap.indent(text.rstrip(), prefix, lambda _line: True), flush=True)


class Cluster:
    """The running test bed, driven with kubectl as a user would; secrets never printed."""

    def __init__(self, plane: ControlPlane, kubelet: ProcessKubelet,
                 operator: OperatorProcess | None = None) -> None:
        self.plane = plane
        self.kubelet = kubelet
        self.operator = operator
        self.secrets: list[str] = []
        self.custom = client.CustomObjectsApi(plane.admin_api())
        self.core = client.CoreV1Api(plane.admin_api())

    def kubectl(self, *args: str, input: str | None = None,
                ok_codes: Sequence[int] = (0,)) -> str:
        return self.run(["kubectl", *args], input=input, ok_codes=ok_codes)

    def run(self, argv: Sequence[str], input: str | None = None,
            ok_codes: Sequence[int] = (0,)) -> str:
        """Run a client (kubectl, schemashift) as the cluster admin; show command and output."""
        command = " ".join(shlex.quote(a) for a in argv)
        print(f"$ {self._safe(command)}", flush=True)
        if input is not None:
            show(input, "  | ")
        proc = subprocess.run(list(argv), env=self.env(), cwd=REPO, input=input, text=True,
                              capture_output=True, timeout=120)
        show(self._safe(proc.stdout + proc.stderr))
        print(f"  (exit {proc.returncode})", flush=True)
        if proc.returncode not in ok_codes:
            raise SystemExit(f"demo stopped: `{self._safe(command)}` exited {proc.returncode}")
        return proc.stdout

    def env(self) -> dict[str, str]:
        """A user's terminal: the admin kubeconfig, no in-cluster variables."""
        return {k: v for k, v in self.plane.env().items() if not k.startswith("KUBERNETES_")}

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest, sort_keys=False))

    def status(self, name: str) -> dict[str, Any]:
        body = self.custom.get_namespaced_custom_object(
            "schemashift.io", "v1alpha1", NAMESPACE, "schemamigrations", name)
        return dict(body.get("status") or {})

    def watch(self, name: str, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """`kubectl get smig NAME -w` until `until(status)`; identical updates printed once."""
        args = ["-n", NAMESPACE, "get", "smig", name, "-w"]
        print(f"$ kubectl {' '.join(args)}", flush=True)
        proc = subprocess.Popen(["kubectl", *args], env=self.env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        printer = threading.Thread(target=self._echo_changes, args=(proc.stdout,), daemon=True)
        printer.start()
        try:
            status = self._poll(name, until)
            time.sleep(1.0)  # the watch prints the last update a moment after it happened
        finally:
            proc.terminate()
            proc.wait(10)
            printer.join(5)
        print("  (watch stopped: the migration reached its state)", flush=True)
        return status

    def _echo_changes(self, lines: Iterable[str]) -> None:
        last = ""
        for line in lines:
            without_age = line.rsplit(maxsplit=1)[0] if line.strip() else ""
            if without_age != last:
                show(self._safe(line))
                last = without_age

    def _poll(self, name: str, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + WATCH_TIMEOUT_S
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(ApiException):
                status = self.status(name)
                if until(status):
                    return status
            time.sleep(0.5)
        self.diagnostics()
        raise SystemExit(f"demo stopped: {name} not done after {WATCH_TIMEOUT_S:.0f}s "
                         f"(phase {status.get('phase')}: {status.get('message')})")

    def job_output(self, job: str) -> None:
        """The Job pod's output, which `kubectl logs` shows on a cluster (here: a file)."""
        pods = self.core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={job}").items
        for pod in pods:
            text = self.kubelet.pod_log(NAMESPACE, pod.metadata.name).splitlines()
            print(f"  `kubectl -n {NAMESPACE} logs job/{job}` on a cluster; the process kubelet "
                  f"keeps it in a file (last {OUTPUT_LINES} lines, cut at {OUTPUT_WIDTH}):")
            shortened = [line if len(line) <= OUTPUT_WIDTH else line[:OUTPUT_WIDTH - 1] + "…"
                         for line in text[-OUTPUT_LINES:]]
            show(self._safe("\n".join(shortened)), "  | ")

    def diagnostics(self) -> None:
        print("  --- diagnostics ---")
        for logs in (self.operator.logs(30) if self.operator else "", self.kubelet.logs(30)):
            show(self._safe(logs))

    def _safe(self, text: str) -> str:
        return redact(text, *self.secrets)


def final(status: dict[str, Any]) -> bool:
    return status.get("phase") in FINAL_PHASES and status.get("step") == "done"


def awaiting_approval(status: dict[str, Any]) -> bool:
    return status.get("step") == "awaiting-approval" or final(status)


def kubernetes_story(pg: Postgres, store: ObjectStore, work: Path) -> None:
    """Steps 8-13 of the demo, when the test bed is built; otherwise how to build it."""
    step("8. The same through Kubernetes: kube-apiserver, the operator, Jobs")
    try:
        found = binaries.locate()
    except binaries.BinariesMissing as exc:
        print(f"  skipped: {exc}\n  (it builds from Go modules once, in a few minutes; then "
              "rerun this demo)")
        return
    if shutil.which("kubectl") is None:
        print("  skipped: kubectl is not on PATH (`pip install -e '.[test]'` installs it)")
        return
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as running:
            try:
                cluster = start_cluster(found, pg, work, running)
                install(cluster, running)
                database, url, bucket = prepare_application(cluster, pg, store, work)
                history = work / "k8s-migrations"
                release(cluster, history, store, bucket, database, url)
                failed_release(cluster, history, store, bucket, url)
                show_backups(store, bucket)
            finally:
                step("14. Shutting down the operator, the kubelet and the control plane")
                stopping = time.monotonic()
    except KeyboardInterrupt:
        # Everything started above is stopped by now; demo.py's finally stops the rest.
        raise SystemExit("demo interrupted; everything it started is stopped") from None
    print(f"  stopped in {time.monotonic() - stopping:.0f}s (the Kubernetes part took "
          f"{time.monotonic() - started:.0f}s)")


def start_cluster(found: binaries.Binaries, pg: Postgres, work: Path,
                  running: contextlib.ExitStack) -> Cluster:
    print("  starting etcd, kube-apiserver (RBAC on) and kube-controller-manager ...",
          flush=True)
    plane = ControlPlane(work / "k8s", found)
    running.callback(plane.stop)
    plane.start()
    # "The image's ENV": pg_dump/pg_restore matching the server, as the migration image ships.
    kubelet = ProcessKubelet(plane, extra_env={"SCHEMASHIFT_PG_BINDIR": str(pg.bin_dir)})
    running.callback(kubelet.stop)
    kubelet.start()
    print(f"  API server {plane.server} ready in {plane.startup_seconds:.0f}s; process kubelet "
          f"running Job pods as local processes\n  export KUBECONFIG={plane.admin_kubeconfig}"
          "  # the cluster admin, for the kubectl commands below")
    return Cluster(plane, kubelet)


def install(cluster: Cluster, running: contextlib.ExitStack) -> None:
    print("\n  Install (docs/install.md): the CRD and least-privilege RBAC")
    cluster.kubectl("apply", *(a for path in INSTALL for a in ("-f", path)))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/schemamigrations.schemashift.io")
    plane = cluster.plane
    kubeconfig = plane.kubeconfig_for_service_account(OPERATOR_NAMESPACE, OPERATOR_SA)
    policy = EXAMPLES_POLICY
    operator = OperatorProcess(plane, kubeconfig, plane.log_dir / "operator.log", policy)
    print("\n  The operator: manifests/operator/ runs it as a Deployment; here, with no image "
          "to pull, it runs\n  as a local process with a token of its ServiceAccount "
          f"{OPERATOR_NAMESPACE}/{OPERATOR_SA}, so only its RBAC applies:")
    print(f"$ KUBECONFIG={kubeconfig} SCHEMASHIFT_POLICY='{policy['SCHEMASHIFT_POLICY']}' "
          f"{shlex.join(operator.command())} &", flush=True)
    running.callback(operator.stop)
    operator.start()
    cluster.operator = operator
    print(f"  operator live (log: {operator.log_file})")


def prepare_application(cluster: Cluster, pg: Postgres, store: ObjectStore,
                        work: Path) -> tuple[str, str, str]:
    step("9. The application's namespace, its database and Secrets")
    database = pg.create_database("hms_k8s")
    url = pg.app_url(database)
    history = work / "k8s-migrations"
    shutil.copytree(HMS_MIGRATIONS, history, ignore=shutil.ignore_patterns("__pycache__"))
    cluster.secrets += [url.split(":")[2].split("@")[0], store.env()["AWS_SECRET_ACCESS_KEY"]]
    at_first_revision(pg, url, history)
    print(f"  database {database}: at revision {FIRST_REVISION} (patients only) with "
          f"{len(PATIENTS)} patients, one without an email address")
    bucket = store.create_bucket("hms-k8s-backups")
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.plane.wait_for_service_account(NAMESPACE, "default")
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", "manifests/rbac/migration-job-namespace.yaml")
    cluster.kubectl("-n", NAMESPACE, "create", "secret", "generic", "hms-db",
                    f"--from-literal=url={url}")
    credentials = store.env()
    cluster.kubectl("-n", NAMESPACE, "create", "secret", "generic", "hms-backup-s3",
                    *(f"--from-literal={key}={credentials[key]}"
                      for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                  "AWS_DEFAULT_REGION")))
    print("  The Job's ServiceAccount may patch its SchemaMigration's status, nothing else:")
    cluster.kubectl("auth", "can-i", "get", "secrets", "-n", NAMESPACE,
                    f"--as=system:serviceaccount:{NAMESPACE}:schemashift-migration",
                    ok_codes=(1,))
    return database, url, bucket


def at_first_revision(pg: Postgres, url: str, history: Path) -> None:
    """The database as production has it today: the first revision applied, with rows."""
    env = {**os.environ, "SCHEMASHIFT_DATABASE_URL": url, "SCHEMASHIFT_MIGRATIONS": str(history),
           "SCHEMASHIFT_PG_BINDIR": str(pg.bin_dir)}
    done = subprocess.run(["schemashift", "apply", "--target", FIRST_REVISION, "--lint", "warn"],
                          env=env, cwd=REPO, text=True, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"demo stopped: preparing the database failed:\n"
                         f"{redact(done.stdout + done.stderr, url)}")
    with psycopg.connect(url) as conn:
        for row in PATIENTS:
            conn.execute("INSERT INTO patients (name, date_of_birth, email) VALUES (%s, %s, %s)",
                         row)


def migration(name: str, history: Path, store: ObjectStore, bucket: str,
              **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "schemashift.io/v1alpha1",
        "kind": "SchemaMigration",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "database": {"urlSecretRef": {"name": "hms-db", "key": "url"}},
            "migrations": {"image": IMAGE, "scriptLocation": str(history)},
            "target": "head",
            "environment": "production",
            "backup": {"enabled": True, "url": f"s3://{bucket}/hms/", "endpoint": store.endpoint,
                       "credentialsSecretRef": {"name": "hms-backup-s3"}},
            **spec,
        },
    }


def release(cluster: Cluster, history: Path, store: ObjectStore, bucket: str, database: str,
            url: str) -> None:
    name = "hms-release-42"
    step(f"10. {name}: production, a verified backup first, the plan approved by a person")
    cluster.apply(migration(name, history, store, bucket, approval={"required": True}))
    status = cluster.watch(name, awaiting_approval)
    if final(status):
        raise SystemExit(f"demo stopped: {name} ended {status.get('phase')} before approval: "
                         f"{status.get('message')}")
    cluster.kubectl("-n", NAMESPACE, "get", "smig", name, "-o", MESSAGE)
    cluster.kubectl("-n", NAMESPACE, "get", "smig", name, "-o",
                    'jsonpath={.status.plan.revisions}{"\\n"}{.status.plan.lint}{"\\n"}')
    plan_hash = str(status["plan"]["hash"])
    cluster.run(["schemashift", "approve", name, "-n", NAMESPACE, "--plan-hash", plan_hash])
    status = cluster.watch(name, final)

    step(f"11. {name}: status, conditions, events")
    cluster.kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", f"smig/{name}",
                    "--timeout=60s", ok_codes=(0, 1))
    cluster.kubectl("-n", NAMESPACE, "get", "smig")
    cluster.run(["schemashift", "wait", name, "-n", NAMESPACE, "--timeout", "1m"])
    cluster.kubectl("-n", NAMESPACE, "get", "smig", name, "-o", CONDITIONS)
    cluster.kubectl("-n", NAMESPACE, "get", "smig", name, "-o", MESSAGE)
    cluster.kubectl("-n", NAMESPACE, "get", "smig", name, "-o",
                    'jsonpath={.status.backup}{"\\n"}{.status.stages}{"\\n"}')
    events(cluster, name)
    cluster.kubectl("-n", NAMESPACE, "get", "jobs")
    cluster.job_output(str(status.get("jobName")))
    print(f"  database {database}: revision {revision(url)}, tables: {', '.join(tables(url))}")
    if status.get("phase") != "Succeeded":
        cluster.diagnostics()
        raise SystemExit(f"demo stopped: {name} ended {status.get('phase')}")


def failed_release(cluster: Cluster, history: Path, store: ObjectStore, bucket: str,
                   url: str) -> None:
    name = "hms-release-43"
    step(f"12. {name}: a migration that fails on the live data is rolled back")
    down = revision(url)
    path = history / "versions" / "29991231000000_badc0ffee043_require_patient_email.py"
    path.write_text(FAILING_REVISION.format(rev="badc0ffee043", down=down))
    print(f"  new revision {path.name}: adds patients.mrn, backfills it, then makes email "
          "NOT NULL\n  (a patient has none); lint set to warn so that the run reaches the data")
    cluster.apply(migration(name, history, store, bucket, safety={"lint": "warn"}))
    status = cluster.watch(name, final)

    step(f"13. {name}: status, conditions, events; the database is where it was")
    cluster.kubectl("-n", NAMESPACE, "wait", "--for=jsonpath={.status.phase}=RolledBack",
                    f"smig/{name}", "--timeout=60s", ok_codes=(0, 1))
    print("  What a Helm pre-upgrade hook runs: it fails, so the new app version is not rolled "
          "out:")
    cluster.run(["schemashift", "wait", name, "-n", NAMESPACE, "--timeout", "1m"], ok_codes=(1,))
    cluster.kubectl("-n", NAMESPACE, "get", "smig")
    cluster.kubectl("-n", NAMESPACE, "get", "smig", name, "-o", CONDITIONS)
    cluster.kubectl("-n", NAMESPACE, "get", "smig", name, "-o", MESSAGE)
    events(cluster, name)
    cluster.job_output(str(status.get("jobName")))
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM patients").fetchone()
    print(f"  database revision: {revision(url)} (was {down}); patients columns: "
          f"{', '.join(columns(url, 'patients'))}; patients: {row[0] if row else '?'}")
    if status.get("phase") != "RolledBack":
        cluster.diagnostics()
        raise SystemExit(f"demo stopped: {name} ended {status.get('phase')}, not RolledBack")


def events(cluster: Cluster, name: str) -> None:
    # Event timestamps have whole seconds; the resourceVersion keeps their order within one.
    cluster.kubectl("-n", NAMESPACE, "get", "events", "--sort-by=.metadata.resourceVersion",
                    f"--field-selector=involvedObject.name={name}")


def show_backups(store: ObjectStore, bucket: str) -> None:
    print("\n  The backups the Jobs took, in the bucket:")
    for item in store.client().list_objects_v2(Bucket=bucket).get("Contents", []):
        print(f"  s3://{bucket}/{item['Key']}  {item['Size']} bytes")


def revision(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0]) if row else None


def tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                            "ORDER BY tablename").fetchall()
    return [str(r[0]) for r in rows]


def columns(url: str, table: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE "
                            "table_name = %s ORDER BY ordinal_position", (table,)).fetchall()
    return [str(r[0]) for r in rows]
