"""`schemashift wait NAME`: block until a SchemaMigration is Succeeded (the Helm hook's waiter).

Exit codes: 0 Succeeded; 1 Failed / RolledBack / timed out; 2 bad input (bad duration, no such
resource after a short grace period, not allowed to read it, no Kubernetes configuration);
3 API server unreachable.

The decisions (what a status means, what line to print) are pure functions over plain dicts;
`wait_for` only feeds them from a watch. `--timeout` is a duration in the one grammar of
schemashift.durations (Go's), with the bounds of options_table.WAIT_TIMEOUT.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from schemashift import errors
from schemashift.kube import resource
from schemashift.runner import options_table as table

GROUP, VERSION, PLURAL = resource.GROUP, resource.VERSION, resource.PLURAL
SUCCEEDED = "Succeeded"
FAILED_PHASES = ("Failed", "RolledBack")
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
NOT_FOUND_GRACE_S = 30.0  # a hook's resource may lag its waiter by an informer resync or two
UNREACHABLE_GRACE_S = 30.0  # ride out an API server restart during a long migration
RETRY_DELAY_S = 2.0
WATCH_CHUNK_S = 60  # server-side watch timeout; the loop reconnects

Echo = Callable[[str], Any]


class WaitError(Exception):
    """Ends the wait with an exit code and a message for the user."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Verdict:
    """The final word on a resource: exit code and what to tell the user."""

    code: int
    message: str


def format_duration(seconds: float) -> str:
    """Compact elapsed time for progress lines: "42s", "3m05s", "1h02m03s"."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def current_stage(status: Mapping[str, Any]) -> str | None:
    """ "2/3 add_email (running)" for the first unfinished stage, else the last stage's state."""
    stages = [s for s in status.get("stages") or [] if isinstance(s, Mapping)]
    if not stages:
        return None
    index, stage = next(
        ((i, s) for i, s in enumerate(stages) if s.get("state") not in ("Succeeded", "Skipped")),
        (len(stages) - 1, stages[-1]),
    )
    name = stage.get("name") or stage.get("revision") or "?"
    return f"{index + 1}/{len(stages)} {name} ({stage.get('state') or 'Pending'})"


def backup_summary(status: Mapping[str, Any]) -> str | None:
    backup = status.get("backup")
    if not isinstance(backup, Mapping) or not backup:
        return None
    size = backup.get("sizeBytes")
    text = format_bytes(float(size)) if isinstance(size, int | float) else "in progress"
    return f"{text}, verified" if backup.get("verified") else text


def progress_line(status: Mapping[str, Any]) -> str:
    """One line from a status: phase, stage, revisions, backup and the operator's message."""
    parts = [str(status.get("phase") or "Pending")]
    if stage := current_stage(status):
        parts.append(f"stage {stage}")
    revisions = [status.get(k) for k in ("fromRevision", "currentRevision", "targetRevision")]
    if any(revisions):
        parts.append("revision {} -> {} (target {})".format(*(r or "-" for r in revisions)))
    if backup := backup_summary(status):
        parts.append(f"backup {backup}")
    line = "; ".join(parts)
    return f"{line}: {status['message']}" if status.get("message") else line


def failing_condition(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The condition that says why it failed: Failed=True, else Stalled=True, else Ready=False."""
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    for kind, state in (
        ("Failed", "True"),
        ("RolledBack", "True"),
        ("Stalled", "True"),
        ("Ready", "False"),
    ):
        for condition in conditions:
            if condition.get("type") == kind and condition.get("status") == state:
                return condition
    return None


def contract_note(status: Mapping[str, Any]) -> str:
    """What an expand left for the contract phase (condition ContractPending), if anything."""
    for condition in status.get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == "ContractPending" \
                and condition.get("status") == "True":
            return f"\n  contract pending: {condition.get('message')}"
    return ""


def verdict(obj: Mapping[str, Any]) -> Verdict | None:
    """The exit code once the resource is finished, None while it is still in progress.

    A Failed/RolledBack status written for an older generation is not final: the operator runs
    the new spec (a Succeeded resource is never re-run, so Succeeded is final at any generation).
    """
    status = obj.get("status") or {}
    meta = obj.get("metadata") or {}
    ref = f"{meta.get('namespace', '')}/{meta.get('name', '')}".lstrip("/")
    phase = status.get("phase")
    if phase == SUCCEEDED:
        return Verdict(
            errors.EXIT_OK,
            f"SchemaMigration {ref} Succeeded"
            + (f": {status['message']}" if status.get("message") else "")
            + contract_note(status),
        )
    if phase not in FAILED_PHASES:
        return None
    observed = status.get("observedGeneration")
    if isinstance(observed, int) and observed < int(meta.get("generation") or 0):
        return None
    message = f"SchemaMigration {ref} {phase}: {status.get('message') or 'no message in status'}"
    if condition := failing_condition(status):
        message += f" (condition {condition.get('type')}, reason {condition.get('reason')})"
    return Verdict(errors.EXIT_FAILED, message)


def in_cluster_namespace(path: Path = IN_CLUSTER_NAMESPACE_FILE) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def load_api(namespace: str | None) -> tuple[client.ApiClient, str]:
    """An API client (in-cluster config first, else kubeconfig) and the namespace to use."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
        default_ns = in_cluster_namespace()
    except ConfigException as in_cluster:
        # The client reads $KUBECONFIG once at import; read it now, as kubectl does.
        kubeconfig = os.environ.get("KUBECONFIG") or "~/.kube/config"
        try:
            config.load_kube_config(kubeconfig, client_configuration=configuration)
            _, context = config.list_kube_config_contexts(kubeconfig)
        except (ConfigException, OSError) as exc:
            in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
            raise WaitError(
                errors.EXIT_USAGE,
                f"no Kubernetes configuration found: {in_cluster if in_pod else exc}\n"
                + (
                    "  hint: the pod needs its ServiceAccount token (automountServiceAccountToken)"
                    if in_pod
                    else "  hint: run inside a pod, or set KUBECONFIG / ~/.kube/config"
                ),
            ) from exc
        default_ns = (context or {}).get("context", {}).get("namespace")
    return client.ApiClient(configuration), namespace or default_ns or "default"


def _is_unreachable(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        return status == 0 or status >= 500
    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)


class _Waiter:
    """The watch loop: holds the clock, the last line printed and the grace-period timers."""

    def __init__(
        self,
        api: client.ApiClient,
        name: str,
        namespace: str,
        timeout_s: float,
        echo: Echo,
        not_found_grace: float,
        unreachable_grace: float,
    ) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.name, self.namespace, self.echo = name, namespace, echo
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s
        self.timeout_s = timeout_s
        self.not_found_grace = not_found_grace
        self.unreachable_grace = unreachable_grace
        self.unreachable_since: float | None = None
        self.last_line: str | None = None
        self.last_phase = "unknown"

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run(self) -> int:
        self.echo(
            f"waiting for SchemaMigration {self.ref} (timeout {format_duration(self.timeout_s)})"
        )
        while self.remaining() > 0:
            try:
                for obj in self._events():
                    self.unreachable_since = None
                    if (result := self._observe(obj)) is not None:
                        return result
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                self._on_error(exc)
        self.echo(
            f"error: timed out after {format_duration(self.timeout_s)} waiting for "
            f"SchemaMigration {self.ref} (last phase: {self.last_phase}); the migration "
            f"itself goes on: kubectl -n {self.namespace} get smig {self.name}"
        )
        return errors.EXIT_FAILED

    def _events(self) -> Iterator[Mapping[str, Any]]:
        """The current object, then every change to it until the watch chunk ends."""
        obj = self._get()
        yield obj
        chunk = max(1, min(WATCH_CHUNK_S, int(self.remaining()) + 1))
        stream = watch.Watch().stream(
            self.objects.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            field_selector=f"metadata.name={self.name}",
            resource_version=obj["metadata"].get("resourceVersion"),
            timeout_seconds=chunk,
            _request_timeout=chunk + 10,
        )
        for event in stream:
            if event.get("type") == "DELETED":
                raise WaitError(
                    errors.EXIT_FAILED,
                    f"SchemaMigration {self.ref} was deleted while waiting for it",
                )
            if event.get("type") in ("ADDED", "MODIFIED") and isinstance(event["object"], dict):
                yield event["object"]
            if self.remaining() <= 0:
                return

    def _get(self) -> Mapping[str, Any]:
        while True:
            try:
                obj: Mapping[str, Any] = self.objects.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, self.name, _request_timeout=(10, 30)
                )
                return obj
            except ApiException as exc:
                if exc.status == 403:
                    raise WaitError(
                        errors.EXIT_USAGE,
                        f"not allowed to read SchemaMigration "
                        f"{self.ref}: {exc.reason}\n  hint: grant get/list/watch on "
                        f"{PLURAL}.{GROUP} to this ServiceAccount",
                    ) from exc
                if exc.status != 404:
                    raise
                self._on_missing()

    def _on_missing(self) -> None:
        if time.monotonic() - self.started >= min(self.not_found_grace, self.timeout_s):
            raise WaitError(
                errors.EXIT_USAGE,
                f"SchemaMigration {self.ref} not found\n  hint: "
                f"check the name and namespace (kubectl -n {self.namespace} get smig),"
                " and that the schemashift CRD is installed",
            )
        time.sleep(RETRY_DELAY_S)

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, ApiException) and exc.status == 410:
            return  # watch history expired: the next loop reads the object afresh
        if not _is_unreachable(exc):
            raise WaitError(
                errors.EXIT_USAGE, f"reading SchemaMigration {self.ref} failed: {_describe(exc)}"
            ) from exc
        now = time.monotonic()
        self.unreachable_since = self.unreachable_since or now
        if now - self.unreachable_since >= self.unreachable_grace or self.remaining() <= 0:
            raise WaitError(
                errors.EXIT_INFRA, f"Kubernetes API server unreachable: {_describe(exc)}"
            ) from exc
        time.sleep(min(RETRY_DELAY_S, max(self.remaining(), 0)))

    def _observe(self, obj: Mapping[str, Any]) -> int | None:
        status = obj.get("status") or {}
        self.last_phase = str(status.get("phase") or "Pending")
        line = progress_line(status)
        if line != self.last_line:
            self.last_line = line
            self.echo(f"[{format_duration(time.monotonic() - self.started)}] {line}")
            self._hint_approval(status)
        result = verdict(obj)
        if result is None:
            return None
        self.echo(result.message if result.code == 0 else f"error: {result.message}")
        return result.code

    def _hint_approval(self, status: Mapping[str, Any]) -> None:
        plan_hash = (status.get("plan") or {}).get("hash")
        if status.get("phase") == "AwaitingApproval" and plan_hash:
            self.echo(
                f"  approve with: schemashift approve -n {self.namespace} {self.name} "
                f"--plan-hash {plan_hash}"
            )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}".strip()
    return f"{type(exc).__name__}: {exc}"


def wait_for(
    name: str,
    namespace: str | None = None,
    timeout: str = table.WAIT_TIMEOUT.default,
    echo: Echo = print,
    *,
    not_found_grace: float = NOT_FOUND_GRACE_S,
    unreachable_grace: float = UNREACHABLE_GRACE_S,
) -> int:
    """Watch SchemaMigration `name` until it finishes; print progress; return the exit code."""
    try:
        timeout_s = table.WAIT_TIMEOUT.seconds(timeout)  # the runner's and the CRD's grammar
        if not name:
            raise WaitError(errors.EXIT_USAGE, "a SchemaMigration name is required")
        api, ns = load_api(namespace)
        with api:
            return _Waiter(api, name, ns, timeout_s, echo, not_found_grace, unreachable_grace).run()
    except errors.UsageError as exc:
        echo(f"error: {exc}")
        return errors.EXIT_USAGE
    except WaitError as exc:
        echo(f"error: {exc}")
        return exc.code
