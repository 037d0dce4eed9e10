"""What the process kubelet reports of a pod: container states, conditions, phase (pods/status)."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from .pod_run import PodRun, now, tail

MAX_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80


def terminated_state(pod: Any, run: PodRun) -> dict[str, Any]:
    """The container's `terminated` state after its process exited (termination message read
    from the per-pod file; FallbackToLogsOnError honoured)."""
    assert run.proc is not None
    code = run.proc.returncode
    exit_code = 128 - code if code < 0 else code  # killed by signal N: 128+N, as runtimes do
    message = run.message_file.read_bytes()[:MAX_MESSAGE_BYTES].decode(errors="replace")
    container = pod.spec.containers[0]
    fallback = container.termination_message_policy == "FallbackToLogsOnError"
    if not message and exit_code != 0 and fallback:
        message = tail(run.log_file, FALLBACK_LOG_LINES)[-2048:]
    state: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": run.started_at,
        "finishedAt": now(),
        "containerID": f"process://{run.proc.pid}",
    }
    if message:
        state["message"] = message
    return state


class PodStatusWriter:
    """Patches pods/status, skipping a report that says nothing new."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self._core = core
        self._reported: dict[str, str] = {}

    def report(
        self,
        pod: Any,
        run: PodRun,
        *,
        waiting: tuple[str, str] | None = None,
        terminated: dict[str, Any] | None = None,
        phase: str | None = None,
        reason: str | None = None,
        message: str | None = None,
    ) -> str | None:
        """The phase and state written, or None when nothing changed since the last report."""
        if terminated is not None:
            state: dict[str, Any] = {"terminated": terminated}
        elif waiting is not None:
            state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
        else:
            state = {"running": {"startedAt": run.started_at}}
        running = "running" in state
        status: dict[str, Any] = {
            "phase": phase or ("Running" if running else "Pending"),
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": run.start_time,
            "containerStatuses": [_container_status(run, state)],
            "reason": reason,
            "message": message,
        }
        key = json.dumps(
            [status["phase"], state, run.restarts, reason], sort_keys=True, default=str
        )
        if self._reported.get(run.uid) == key:
            return None
        self._core.patch_namespaced_pod_status(
            pod.metadata.name,
            pod.metadata.namespace,
            {"status": {**status, "conditions": _conditions(running)}},
        )
        self._reported[run.uid] = key
        return f"{status['phase']} {state}"


def _container_status(run: PodRun, state: dict[str, Any]) -> dict[str, Any]:
    running = "running" in state
    found: dict[str, Any] = {
        "name": run.container,
        "image": run.image,
        "imageID": "",
        "ready": running,
        "started": running,
        "restartCount": run.restarts,
        "state": state,
    }
    if run.last_terminated:
        found["lastState"] = {"terminated": run.last_terminated}
    if run.proc is not None:
        found["containerID"] = f"process://{run.proc.pid}"
    return found


def _conditions(running: bool) -> list[dict[str, str]]:
    ready = "True" if running else "False"
    return [
        {"type": t, "status": s, "lastTransitionTime": now()}
        for t, s in (
            ("PodReadyToStartContainers", "True"),
            ("Initialized", "True"),
            ("ContainersReady", ready),
            ("Ready", ready),
        )
    ]
