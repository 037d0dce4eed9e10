"""A process kubelet: runs the pods of one Node as local processes (no container runtime here).

It stands in for kube-scheduler + kubelet, faithfully enough that the real Job controller, the
garbage collector and in-cluster clients behave as in a cluster:

- registers a Ready Node and binds every Pending pod of the default scheduler to it
  (pods/binding, which also sets PodScheduled);
- runs the first container's ``command`` + ``args`` (``$(VAR)`` expanded) as a process in its own
  process group; the image is ignored, the command resolves through ``PATH`` of the test process
  (so ``python``, ``schemashift`` … come from this checkout's environment);
- environment, lowest precedence first: a few variables of the test process (PATH, HOME, LANG,
  VIRTUAL_ENV, PYTHONPATH, …) and ``extra_env`` (think "the image's ENV"), the service variables
  (``KUBERNETES_SERVICE_HOST``/``_PORT``), ``envFrom`` (secretRef/configMapRef, ``prefix``), then
  ``env`` (``value``, ``secretKeyRef``, ``configMapKeyRef``, ``fieldRef``; ``optional`` honoured;
  a missing non-optional source keeps the container Waiting with CreateContainerConfigError, as a
  kubelet does, and is retried);
- ServiceAccount token: when the ServiceAccount admission plugin mounted the projected token
  volume, the kubelet requests a token bound to the pod (TokenRequest, like the kubelet's
  projection) and writes ``token``, ``ca.crt`` and ``namespace`` to a per-pod directory;
- termination message: a per-pod file, read after exit into the container's ``message``
  (``FallbackToLogsOnError`` honoured);
- reports phase, conditions and container states (running / terminated with exitCode, reason,
  message / waiting) through pods/status; restartPolicy Always/OnFailure restart the process
  (short back-off: 1 s doubling up to 10 s);
- deletion: SIGTERM to the process group, SIGKILL after the pod's grace period, a terminal phase
  reported, then the pod object deleted with grace 0;
- ``activeDeadlineSeconds``: the process is killed and the pod Failed with reason
  DeadlineExceeded.

How a process finds its token and termination-message file — the most faithful way available:

- Running as root with mount namespaces (``unshare``), each process gets a private mount
  namespace in which the per-pod token directory is bind-mounted on the container's mount path
  (``/var/run/secrets/kubernetes.io/serviceaccount``) and the per-pod message file on its
  ``terminationMessagePath`` (``/dev/termination-log``). So ``config.load_incluster_config()``,
  kopf and a runner writing ``/dev/termination-log`` work unmodified. The host only gets the
  empty mount points (both on tmpfs-like file systems); they are deliberately left in place,
  because another test session's kubelet may be using them at the same moment. The host never
  sees pod data.
- Always, in addition (and the only way without mount namespaces): ``SCHEMASHIFT_SA_DIR`` names
  the token directory and ``SCHEMASHIFT_TERMINATION_MESSAGE_PATH`` the message file.

Not modelled: init/sidecar containers (only the first container runs), volumes other than the
token, probes, resources, node selection (every pod fits the one node), token refresh (tokens
live 1 h), log timestamps (``kubectl logs --timestamps/--since`` are refused).

``kubectl logs`` / pods/log work through the API server: the kubelet API's container-log
endpoint is served over mutual TLS (:mod:`.kubelet_api`), advertised in the Node's
``daemonEndpoints``. ``ProcessKubelet.pod_log()`` reads the whole output file directly.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from .controlplane import KUBELET_CLIENT_USER, ControlPlane
from .kubelet_api import ContainerLog, KubeletServer, LogUnavailable, instance_log

SA_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_SECONDS = 3607  # what the kubelet requests for projected tokens
MAX_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
INHERITED_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONDONTWRITEBYTECODE",
    "SSL_CERT_FILE",
)
_UNSHARE = ["unshare", "--mount", "--propagation", "private", "--"]
# Binds "$1" on "$2" for each pair up to "--", then execs the command: runs inside `unshare -m`.
_MOUNT_SCRIPT = (
    'set -e; while [ "$1" != "--" ]; do mount --bind "$1" "$2"; shift 2; done; shift; exec "$@"'
)

log = logging.getLogger("schemashift.testbed.kubelet")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: `$$` escapes, unknown references stay as written."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)", repl, value)


class EnvError(Exception):
    """A referenced Secret/ConfigMap/key is missing and not optional."""


@dataclass
class PodRun:
    """What the kubelet knows about one pod it runs."""

    uid: str
    namespace: str
    name: str
    directory: Path
    container: str
    image: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    pod_started_at: float = 0.0  # monotonic, for activeDeadlineSeconds
    restarts: int = 0
    log_starts: list[int] = field(default_factory=list)  # where each instance's output begins
    restart_at: float = 0.0
    last_terminated: dict[str, Any] | None = None
    kill_at: float | None = None  # SIGKILL time once SIGTERM was sent
    deadline_exceeded: bool = False
    terminal: bool = False
    start_time: str = field(default_factory=_now)  # the pod's status.startTime

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_file(self) -> Path:
        return self.directory / f"{self.container}.log"

    @property
    def message_file(self) -> Path:
        return self.directory / "termination-log"

    @property
    def sa_dir(self) -> Path:
        return self.directory / "serviceaccount"


class ProcessKubelet:
    """Runs the pods bound to node `node_name` as local processes, in a background thread."""

    def __init__(
        self,
        plane: ControlPlane,
        *,
        node_name: str = "testbed-node",
        extra_env: Mapping[str, str] | None = None,
        work_dir: Path | None = None,
    ) -> None:
        self.plane = plane
        self.node_name = node_name
        self.extra_env: dict[str, str] = dict(extra_env or {})
        self.work_dir = work_dir or plane.work_dir / "kubelet"
        self.pods_dir = self.work_dir / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = plane.log_dir / "kubelet.log"
        self.runs: dict[str, PodRun] = {}
        self._api = plane.api_client()
        self._core = client.CoreV1Api(self._api)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reported: dict[str, str] = {}
        self.use_mount_namespaces = self._mount_namespaces_work()
        self.api_server = KubeletServer(
            serving=plane.serving_certificate("kubelet", ips=["127.0.0.1"], dns=[node_name]),
            client_ca=plane.ca_file,
            allowed_user=KUBELET_CLIENT_USER,
            lookup=self._container_log,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        handler = logging.FileHandler(self.log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False  # the pytest output stays quiet; the file has everything
        self.api_server.start()
        self._register_node()
        for target in (self._sync_loop, self._watch_loop):
            thread = threading.Thread(target=target, name=f"kubelet-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info(
            "kubelet started (node %s, mount ns: %s)", self.node_name, self.use_mount_namespaces
        )

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self.api_server.stop()
        for thread in self._threads:
            thread.join(timeout=15)
        for run in self.runs.values():
            self._signal(run, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for run in self.runs.values():
            if run.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    run.proc.wait(max(0.0, deadline - time.monotonic()))
                self._signal(run, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    run.proc.wait(5)
        self._api.close()
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()

    def __enter__(self) -> ProcessKubelet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- public helpers ----------------------------------------------------------------------

    def pod_log(self, namespace: str, name: str) -> str:
        """stdout+stderr of the pod's process (the latest run of that pod name)."""
        runs = [r for r in list(self.runs.values()) if (r.namespace, r.name) == (namespace, name)]
        if not runs or not runs[-1].log_file.exists():
            return ""
        return runs[-1].log_file.read_text(errors="replace")

    def _container_log(
        self, namespace: str, name: str, container: str, previous: bool
    ) -> ContainerLog:
        """The kubelet API's view of a pod's log (see kubelet_api.LogLookup)."""
        runs = [r for r in list(self.runs.values()) if (r.namespace, r.name) == (namespace, name)]
        if not runs:
            raise LogUnavailable(404, f'pod "{name}" in namespace "{namespace}" not found')
        run = runs[-1]
        if container != run.container:
            raise LogUnavailable(400, f'container "{container}" is not run by the process kubelet')
        return instance_log(
            run.log_file,
            run.log_starts,
            lambda: run.running,
            container=container,
            pod=name,
            previous=previous,
        )

    def logs(self, lines: int = 40) -> str:
        """The kubelet's log tail and each pod's output tail, for a failed test's report."""
        parts = [f"--- kubelet ({self.log_file}) ---", _tail(self.log_file, lines)]
        for run in list(self.runs.values())[-10:]:
            parts += [f"--- pod {run.namespace}/{run.name} ({run.log_file}) ---"]
            parts += [_tail(run.log_file, lines)]
        return "\n".join(parts)

    # -- node ----------------------------------------------------------------------------------

    def _register_node(self) -> None:
        labels = {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }
        node = client.V1Node(metadata=client.V1ObjectMeta(name=self.node_name, labels=labels))
        with contextlib.suppress(ApiException):  # 409: left over from an earlier kubelet
            self._core.create_node(node)
        capacity = {"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"}
        version = client.VersionApi(self._api).get_code().git_version
        status = {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.api_server.port}},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "process kubelet is posting ready status",
                    "lastHeartbeatTime": _now(),
                    "lastTransitionTime": _now(),
                }
            ],
            "nodeInfo": {
                "kubeletVersion": version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "process://0",
                "kernelVersion": os.uname().release,
                "osImage": "schemashift test bed",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }
        self._core.patch_node_status(self.node_name, {"status": status})

    # -- loops ---------------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        """Only wakes the sync loop: the sync lists pods itself, so a lost event costs 0.5 s."""
        api = self.plane.api_client()
        core = client.CoreV1Api(api)
        try:
            while not self._stopping.is_set():
                try:
                    for _ in watch.Watch().stream(
                        core.list_pod_for_all_namespaces, timeout_seconds=5, _request_timeout=30
                    ):
                        self._wake.set()
                        if self._stopping.is_set():
                            break
                except Exception:  # reconnect: the API server may be restarting
                    time.sleep(0.5)
        finally:
            api.close()

    def _sync_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._sync()
            except Exception:
                log.exception("sync failed")
                time.sleep(0.5)

    def _sync(self) -> None:
        pods = self._core.list_pod_for_all_namespaces(_request_timeout=30).items
        present = set()
        for pod in pods:
            present.add(pod.metadata.uid)
            if not pod.spec.node_name:
                self._maybe_bind(pod)
            elif pod.spec.node_name == self.node_name:
                try:
                    self._sync_pod(pod)
                except Exception:
                    log.exception("pod %s/%s", pod.metadata.namespace, pod.metadata.name)
        for uid, run in list(self.runs.items()):
            if uid not in present and run.running:
                log.info("pod %s/%s vanished: killing its process", run.namespace, run.name)
                self._signal(run, signal.SIGKILL)

    def _maybe_bind(self, pod: Any) -> None:
        if pod.metadata.deletion_timestamp or pod.spec.scheduler_name not in (
            None,
            "default-scheduler",
        ):
            return
        binding = client.V1Binding(
            metadata=client.V1ObjectMeta(name=pod.metadata.name, uid=pod.metadata.uid),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=self.node_name),
        )
        try:
            # _preload_content=False: the client cannot deserialise the (empty) Status it returns.
            self._core.create_namespaced_pod_binding(
                pod.metadata.name, pod.metadata.namespace, binding, _preload_content=False
            )
            log.info("bound %s/%s", pod.metadata.namespace, pod.metadata.name)
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone, or bound meanwhile
                raise

    # -- one pod -------------------------------------------------------------------------------

    def _sync_pod(self, pod: Any) -> None:
        uid = pod.metadata.uid
        run = self.runs.get(uid)
        if pod.metadata.deletion_timestamp:
            self._sync_deletion(pod, run)
            return
        if run is None:
            if pod.status.phase in ("Succeeded", "Failed"):
                return
            self._create_run(pod)
            return
        if run.terminal:
            return
        exited = run.proc is not None and not run.running
        if exited and not run.deadline_exceeded:
            self._handle_exit(pod, run)  # an exit that beat the deadline counts as such
        elif run.deadline_exceeded or self._deadline_passed(pod, run):
            self._kill_for_deadline(pod, run)
        elif not run.running and time.monotonic() >= run.restart_at:
            self._start_process(pod, run)

    def _create_run(self, pod: Any) -> None:
        container = pod.spec.containers[0]
        meta = pod.metadata
        directory = self.pods_dir / f"{meta.namespace}_{meta.name}_{meta.uid[:8]}"
        directory.mkdir(parents=True, exist_ok=True)
        run = PodRun(
            uid=pod.metadata.uid,
            namespace=pod.metadata.namespace,
            name=pod.metadata.name,
            directory=directory,
            container=container.name,
            image=container.image or "",
            # The kubelet's clock for activeDeadlineSeconds starts when it admits the pod.
            pod_started_at=time.monotonic(),
        )
        self.runs[run.uid] = run
        self._start_process(pod, run)

    def _start_process(self, pod: Any, run: PodRun) -> None:
        container = pod.spec.containers[0]
        try:
            env = self._environment(pod, container, run)
        except EnvError as exc:
            run.proc = None
            self._report(pod, run, waiting=("CreateContainerConfigError", str(exc)))
            run.restart_at = time.monotonic() + 1  # retry: the Secret may be created later
            return
        argv = [_expand(a, env) for a in [*(container.command or []), *(container.args or [])]]
        if not argv:
            self._report(
                pod,
                run,
                waiting=(
                    "CreateContainerError",
                    "the process kubelet needs an explicit command: images are ignored",
                ),
            )
            run.restart_at = time.monotonic() + 5
            return
        run.message_file.write_text("")
        log.info("starting %s/%s: %s", run.namespace, run.name, argv)
        argv = self._wrap_mounts(pod, container, run, argv)
        workdir = container.working_dir
        cwd = workdir if workdir and Path(workdir).is_dir() else run.directory
        with run.log_file.open("ab") as out:
            start = out.tell()
            run.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a process group: signals reach its children too
            )
        run.log_starts.append(start)
        run.started_at = _now()
        run.kill_at = None
        threading.Thread(target=self._wait_exit, args=(run.proc,), daemon=True).start()
        log.info("started %s/%s (pid %d)", run.namespace, run.name, run.proc.pid)
        self._report(pod, run)

    def _wait_exit(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        self._wake.set()

    def _handle_exit(self, pod: Any, run: PodRun) -> None:
        terminated = self._terminated_state(pod, run)
        policy = pod.spec.restart_policy or "Always"
        if policy == "Always" or (policy == "OnFailure" and terminated["exitCode"] != 0):
            run.last_terminated = terminated
            run.restarts += 1
            run.restart_at = time.monotonic() + min(10.0, 2.0 ** (run.restarts - 1))
            run.proc = None
            self._report(pod, run, waiting=("CrashLoopBackOff", "back-off restarting the process"))
            return
        run.terminal = True
        phase = "Succeeded" if terminated["exitCode"] == 0 else "Failed"
        self._report(pod, run, terminated=terminated, phase=phase)

    def _terminated_state(self, pod: Any, run: PodRun) -> dict[str, Any]:
        assert run.proc is not None
        code = run.proc.returncode
        exit_code = 128 - code if code < 0 else code  # killed by signal N: 128+N, as runtimes do
        message = run.message_file.read_bytes()[:MAX_MESSAGE_BYTES].decode(errors="replace")
        container = pod.spec.containers[0]
        fallback = container.termination_message_policy == "FallbackToLogsOnError"
        if not message and exit_code != 0 and fallback:
            message = _tail(run.log_file, FALLBACK_LOG_LINES)[-2048:]
        state: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": run.started_at,
            "finishedAt": _now(),
            "containerID": f"process://{run.proc.pid}",
        }
        if message:
            state["message"] = message
        return state

    # -- deadline and deletion -------------------------------------------------------------------

    def _deadline_passed(self, pod: Any, run: PodRun) -> bool:
        seconds = pod.spec.active_deadline_seconds
        return bool(seconds) and time.monotonic() - run.pod_started_at >= seconds

    def _kill_for_deadline(self, pod: Any, run: PodRun) -> None:
        run.deadline_exceeded = True
        if self._terminate(run, pod.spec.termination_grace_period_seconds):
            return  # still stopping; the exit wakes us
        terminated = self._terminated_state(pod, run) if run.proc is not None else None
        run.terminal = True
        self._report(
            pod,
            run,
            terminated=terminated,
            waiting=None if terminated else ("DeadlineExceeded", "never started"),
            phase="Failed",
            reason="DeadlineExceeded",
            message="Pod was active on the node longer than the specified deadline",
        )

    def _sync_deletion(self, pod: Any, run: PodRun | None) -> None:
        if run is not None and self._terminate(run, pod.metadata.deletion_grace_period_seconds):
            return
        if run is not None and not run.terminal and run.proc is not None:
            # Since 1.27 a kubelet reports a terminal phase before the pod goes away; the Job
            # controller counts the pod from it.
            terminated = self._terminated_state(pod, run)
            run.terminal = True
            phase = "Succeeded" if terminated["exitCode"] == 0 else "Failed"
            with contextlib.suppress(ApiException):
                self._report(pod, run, terminated=terminated, phase=phase)
        try:
            self._core.delete_namespaced_pod(
                pod.metadata.name,
                pod.metadata.namespace,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0,
                    preconditions=client.V1Preconditions(uid=pod.metadata.uid),
                ),
            )
            log.info("deleted %s/%s", pod.metadata.namespace, pod.metadata.name)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def _terminate(self, run: PodRun, grace_seconds: int | None) -> bool:
        """SIGTERM, then SIGKILL once the grace period is over. True while still running."""
        if not run.running:
            return False
        if run.kill_at is None:
            grace = 30 if grace_seconds is None else grace_seconds
            run.kill_at = time.monotonic() + grace
            self._signal(run, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        elif time.monotonic() >= run.kill_at:
            self._signal(run, signal.SIGKILL)
        return True

    @staticmethod
    def _signal(run: PodRun, sig: signal.Signals) -> None:
        if run.proc is not None and run.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.proc.pid, sig)

    # -- status ------------------------------------------------------------------------------

    def _report(
        self,
        pod: Any,
        run: PodRun,
        *,
        waiting: tuple[str, str] | None = None,
        terminated: dict[str, Any] | None = None,
        phase: str | None = None,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        """Patch pods/status; skipped when nothing changed since the last report."""
        if terminated is not None:
            state: dict[str, Any] = {"terminated": terminated}
        elif waiting is not None:
            state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
        else:
            state = {"running": {"startedAt": run.started_at}}
        running = "running" in state
        ready = "True" if running else "False"
        container_status: dict[str, Any] = {
            "name": run.container,
            "image": run.image,
            "imageID": "",
            "ready": running,
            "started": running,
            "restartCount": run.restarts,
            "state": state,
        }
        if run.last_terminated:
            container_status["lastState"] = {"terminated": run.last_terminated}
        if run.proc is not None:
            container_status["containerID"] = f"process://{run.proc.pid}"
        conditions = [
            {"type": t, "status": s, "lastTransitionTime": _now()}
            for t, s in (
                ("PodReadyToStartContainers", "True"),
                ("Initialized", "True"),
                ("ContainersReady", ready),
                ("Ready", ready),
            )
        ]
        status: dict[str, Any] = {
            "phase": phase or ("Running" if running else "Pending"),
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": run.start_time,
            "containerStatuses": [container_status],
            "reason": reason,
            "message": message,
        }
        key = json.dumps(
            [status["phase"], state, run.restarts, reason], sort_keys=True, default=str
        )
        if self._reported.get(run.uid) == key:
            return
        self._core.patch_namespaced_pod_status(
            pod.metadata.name,
            pod.metadata.namespace,
            {"status": {**status, "conditions": conditions}},
        )
        self._reported[run.uid] = key
        log.info("status %s/%s: %s %s", run.namespace, run.name, status["phase"], state)

    # -- environment ---------------------------------------------------------------------------

    def _environment(self, pod: Any, container: Any, run: PodRun) -> dict[str, str]:
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        env.update(self.extra_env)
        port = str(self.plane.port)
        env.update(
            KUBERNETES_SERVICE_HOST="127.0.0.1",
            KUBERNETES_SERVICE_PORT=port,
            KUBERNETES_SERVICE_PORT_HTTPS=port,
            HOSTNAME=pod.metadata.name,
            SCHEMASHIFT_TERMINATION_MESSAGE_PATH=str(run.message_file),
        )
        if self._sa_mount(container) is not None:
            self._write_token(pod, run)
            env["SCHEMASHIFT_SA_DIR"] = str(run.sa_dir)
        for source in container.env_from or []:
            prefix = source.prefix or ""
            for key, value in self._env_from(pod.metadata.namespace, source).items():
                env[prefix + key] = value
        for var in container.env or []:
            resolved = self._env_value(pod, var, env)
            if resolved is not None:
                env[var.name] = resolved
        return env

    def _env_from(self, namespace: str, source: Any) -> dict[str, str]:
        if source.secret_ref is not None:
            ref = source.secret_ref
            data = self._secret_data(namespace, ref.name, bool(ref.optional))
        elif source.config_map_ref is not None:
            ref = source.config_map_ref
            data = self._config_map_data(namespace, ref.name, bool(ref.optional))
        else:
            return {}
        return data or {}

    def _env_value(self, pod: Any, var: Any, env: Mapping[str, str]) -> str | None:
        source = var.value_from
        if source is None:
            return _expand(var.value or "", env)
        namespace = pod.metadata.namespace
        for ref, read in (
            (source.secret_key_ref, self._secret_data),
            (source.config_map_key_ref, self._config_map_data),
        ):
            if ref is None:
                continue
            data = read(namespace, ref.name, bool(ref.optional))
            if data is not None and ref.key in data:
                return data[ref.key]
            if ref.optional:
                return None
            raise EnvError(f"couldn't find key {ref.key} in {ref.name}")
        if source.field_ref is not None:
            return _field(pod, source.field_ref.field_path)
        return None  # resourceFieldRef: resources are not modelled

    def _secret_data(self, namespace: str, name: str, optional: bool) -> dict[str, str] | None:
        secret = self._read_source(self._core.read_namespaced_secret, "secret", namespace, name,
                                   optional)
        if secret is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def _config_map_data(self, namespace: str, name: str, optional: bool) -> dict[str, str] | None:
        config_map = self._read_source(self._core.read_namespaced_config_map, "configmap",
                                       namespace, name, optional)
        return None if config_map is None else dict(config_map.data or {})

    @staticmethod
    def _read_source(read: Callable[[str, str], Any], kind: str, namespace: str, name: str,
                     optional: bool) -> Any:
        """A Secret or ConfigMap an env var refers to; None when it is missing but optional."""
        try:
            return read(name, namespace)
        except ApiException as exc:
            if exc.status == 404 and optional:
                return None
            if exc.status == 404:
                raise EnvError(f'{kind} "{name}" not found') from exc
            raise

    # -- service account token and mounts ----------------------------------------------------------

    @staticmethod
    def _sa_mount(container: Any) -> str | None:
        """The token's mount path if the ServiceAccount admission plugin added its volume."""
        for mount in container.volume_mounts or []:
            if mount.mount_path == SA_MOUNT_PATH or mount.name.startswith("kube-api-access-"):
                return str(mount.mount_path)
        return None

    def _write_token(self, pod: Any, run: PodRun) -> None:
        """As the kubelet projects it: a token bound to this pod, the cluster CA, the namespace."""
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[],
                expiration_seconds=TOKEN_SECONDS,
                bound_object_ref=client.V1BoundObjectReference(
                    api_version="v1", kind="Pod", name=pod.metadata.name, uid=pod.metadata.uid
                ),
            )
        )
        sa = pod.spec.service_account_name or "default"
        token = self._core.create_namespaced_service_account_token(
            sa, pod.metadata.namespace, request
        ).status.token
        run.sa_dir.mkdir(exist_ok=True)
        (run.sa_dir / "token").write_text(token)
        shutil.copyfile(self.plane.ca_file, run.sa_dir / "ca.crt")
        (run.sa_dir / "namespace").write_text(pod.metadata.namespace)

    def _wrap_mounts(self, pod: Any, container: Any, run: PodRun, argv: list[str]) -> list[str]:
        if not self.use_mount_namespaces:
            return argv
        binds: list[str] = []
        if (sa_path := self._sa_mount(container)) is not None:
            self._ensure_mount_point(Path(sa_path), directory=True)
            binds += [str(run.sa_dir), sa_path]
        message_path = container.termination_message_path or "/dev/termination-log"
        self._ensure_mount_point(Path(message_path), directory=False)
        binds += [str(run.message_file), message_path]
        return [*_UNSHARE, "/bin/sh", "-c", _MOUNT_SCRIPT, "sh", *binds, "--", *argv]

    @staticmethod
    def _ensure_mount_point(path: Path, *, directory: bool) -> None:
        """An empty mount point on the host (exist_ok: kubelets of parallel sessions race)."""
        if directory:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)

    @staticmethod
    def _mount_namespaces_work() -> bool:
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            return False
        probe = [*_UNSHARE, "/bin/sh", "-c", "mount --bind / /mnt"]
        return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def _field(pod: Any, path: str) -> str | None:
    """fieldRef values a kubelet resolves (downward API)."""
    simple: dict[str, str | None] = {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        values = getattr(pod.metadata, match.group(1)) or {}
        return str(values.get(match.group(2), ""))
    return None


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
