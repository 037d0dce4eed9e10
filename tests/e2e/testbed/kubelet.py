"""A process kubelet: runs the pods of one Node as local processes (no container runtime here).

It stands in for kube-scheduler + kubelet, faithfully enough that the real Job controller, the
garbage collector and in-cluster clients behave as in a cluster:

- registers a Ready Node and binds every Pending pod of the default scheduler to it
  (pods/binding, which also sets PodScheduled);
- runs the first container's ``command`` + ``args`` (``$(VAR)`` expanded) as a process in its own
  process group; the image is ignored, the command resolves through ``PATH`` of the test process
  (so ``python``, ``schemashift`` … come from this checkout's environment);
- environment as a kubelet resolves it (:mod:`.pod_env`; ``extra_env`` stands for the image's
  ENV); a missing non-optional source keeps the container Waiting with CreateContainerConfigError
  and is retried;
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

How a process finds its token and termination-message file: :mod:`.pod_mounts` (bind mounts in
a private mount namespace when running as root, plus ``SCHEMASHIFT_SA_DIR`` /
``SCHEMASHIFT_TERMINATION_MESSAGE_PATH``). Pod status: :mod:`.pod_status`; the Node: :mod:`.node`.

Not modelled: init/sidecar containers (only the first container runs), volumes other than the
token, probes, resources, node selection (every pod fits the one node), token refresh (tokens
live 1 h), log timestamps (``kubectl logs --timestamps/--since`` are refused).

``kubectl logs`` / pods/log work through the API server: the kubelet API's container-log
endpoint is served over mutual TLS (:mod:`.kubelet_api`), advertised in the Node's
``daemonEndpoints``. ``ProcessKubelet.pod_log()`` reads the whole output file directly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from .controlplane import KUBELET_CLIENT_USER, ControlPlane
from .kubelet_api import ContainerLog, KubeletServer, LogUnavailable, instance_log
from .node import register_node
from .pod_env import EnvError, PodEnvironment, expand
from .pod_mounts import PodFiles, mount_namespaces_work
from .pod_run import PodRun, now, tail
from .pod_status import PodStatusWriter, terminated_state

log = logging.getLogger("schemashift.testbed.kubelet")


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
        self._env = PodEnvironment(self._core, plane.port, self.extra_env)
        self._files = PodFiles(self._core, plane.ca_file, mount_namespaces_work())
        self._status = PodStatusWriter(self._core)
        self.api_server = KubeletServer(
            serving=plane.serving_certificate("kubelet", ips=["127.0.0.1"], dns=[node_name]),
            client_ca=plane.ca_file,
            allowed_user=KUBELET_CLIENT_USER,
            lookup=self._container_log,
        )

    @property
    def use_mount_namespaces(self) -> bool:
        return self._files.use_namespaces

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        handler = logging.FileHandler(self.log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False  # the pytest output stays quiet; the file has everything
        self.api_server.start()
        register_node(self._api, self.node_name, self.api_server.port)
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
        parts = [f"--- kubelet ({self.log_file}) ---", tail(self.log_file, lines)]
        for run in list(self.runs.values())[-10:]:
            parts += [f"--- pod {run.namespace}/{run.name} ({run.log_file}) ---"]
            parts += [tail(run.log_file, lines)]
        return "\n".join(parts)

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
            env = self._env.base(pod)
            env.update(self._files.environment(pod, container, run))
            env = self._env.container(pod, container, env)
        except EnvError as exc:
            run.proc = None
            self._report(pod, run, waiting=("CreateContainerConfigError", str(exc)))
            run.restart_at = time.monotonic() + 1  # retry: the Secret may be created later
            return
        argv = [expand(a, env) for a in [*(container.command or []), *(container.args or [])]]
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
        argv = self._files.wrap(container, run, argv)
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
        run.started_at = now()
        run.kill_at = None
        threading.Thread(target=self._wait_exit, args=(run.proc,), daemon=True).start()
        log.info("started %s/%s (pid %d)", run.namespace, run.name, run.proc.pid)
        self._report(pod, run)

    def _wait_exit(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        self._wake.set()

    def _handle_exit(self, pod: Any, run: PodRun) -> None:
        terminated = terminated_state(pod, run)
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

    # -- deadline and deletion -------------------------------------------------------------------

    def _deadline_passed(self, pod: Any, run: PodRun) -> bool:
        seconds = pod.spec.active_deadline_seconds
        return bool(seconds) and time.monotonic() - run.pod_started_at >= seconds

    def _kill_for_deadline(self, pod: Any, run: PodRun) -> None:
        run.deadline_exceeded = True
        if self._terminate(run, pod.spec.termination_grace_period_seconds):
            return  # still stopping; the exit wakes us
        terminated = terminated_state(pod, run) if run.proc is not None else None
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
            terminated = terminated_state(pod, run)
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

    def _report(self, pod: Any, run: PodRun, **state: Any) -> None:
        written = self._status.report(pod, run, **state)
        if written is not None:
            log.info("status %s/%s: %s", run.namespace, run.name, written)
