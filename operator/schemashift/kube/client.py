"""The few Kubernetes API calls schemashift makes, over the official client, as plain dicts.

Sync client calls run in a worker thread (`asyncio.to_thread`) so kopf's event loop never blocks.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Mapping
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from schemashift import progress, redact
from schemashift.kube import resource

Body = dict[str, Any]
_TIMEOUT = 10.0
LOG_LIMIT_BYTES = 4 * 1024 * 1024  # the runner's JSON lines of one run stay far below


def load_config() -> client.ApiClient:
    """In a pod: its ServiceAccount; elsewhere: $KUBECONFIG or ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def _json(response: Any) -> Body:
    return dict(json.loads(response.data))


class SecretsNotReadable(Exception):
    """The namespace did not grant the operator reading Secrets (it has no cluster-wide read)."""


class JobRejected(Exception):
    """The API server refused to create the Job (a 4xx other than 409): retrying cannot help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def namespace_terminating(exc: ApiException) -> bool:
    """The API server refuses new objects (events too) in a namespace being deleted."""
    try:
        causes = (json.loads(exc.body or "{}").get("details") or {}).get("causes") or ()
    except (ValueError, AttributeError):
        return False
    return exc.status == 403 and any(c.get("reason") == "NamespaceTerminating" for c in causes)


def api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


class KubeApi:
    """What the operator needs from the API server, each call returning JSON-shaped dicts."""

    def __init__(self, api_client: client.ApiClient | None = None):
        self.api_client = api_client or load_config()
        self.core = client.CoreV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.instance = socket.gethostname()

    async def _call(self, func: Any, *args: Any, **kwargs: Any) -> Body | None:
        """The call's JSON body; None for 404."""
        def run() -> Body | None:
            try:
                return _json(func(*args, _preload_content=False, _request_timeout=_TIMEOUT,
                                  **kwargs))
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
        return await asyncio.to_thread(run)

    async def get_migration(self, namespace: str, name: str) -> Body | None:
        return await self._call(self.custom.get_namespaced_custom_object, resource.GROUP,
                                resource.VERSION, namespace, resource.PLURAL, name)

    async def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        await self._call(self.custom.patch_namespaced_custom_object_status, resource.GROUP,
                         resource.VERSION, namespace, resource.PLURAL, name,
                         {"status": dict(patch)})

    async def secret_keys(self, namespace: str, name: str) -> set[str] | None:
        """Which keys a Secret has (None when it does not exist); values are dropped at once.
        Raises SecretsNotReadable where the namespace did not grant the operator that read."""
        try:
            secret = await self._call(self.core.read_namespaced_secret, name, namespace)
        except ApiException as exc:
            if exc.status == 403:
                raise SecretsNotReadable(namespace) from None
            raise
        if secret is None:
            return None
        return set(secret.get("data") or {}) | set(secret.get("stringData") or {})

    async def create_job(self, job: Mapping[str, Any]) -> bool:
        """True when created, False when a Job of that name exists already (adopted)."""
        try:
            await self._call(self.batch.create_namespaced_job, job["metadata"]["namespace"],
                             dict(job))
        except ApiException as exc:
            if exc.status == 409:
                return False
            if exc.status is not None and 400 <= exc.status < 500:
                raise JobRejected(exc.status, redact.redact(api_message(exc))) from None
            raise
        return True

    async def service_account_exists(self, namespace: str, name: str) -> bool:
        found = await self._call(self.core.read_namespaced_service_account, name, namespace)
        return found is not None

    async def job_create_failures(self, namespace: str, job_name: str) -> str | None:
        """The Job controller's latest FailedCreate message (it could not create the pod: quota,
        pod security, a missing ServiceAccount), None when there is none."""
        found = await self._call(
            self.core.list_namespaced_event, namespace,
            field_selector=f"involvedObject.kind=Job,involvedObject.name={job_name},"
                           "reason=FailedCreate")
        events = sorted((found or {}).get("items") or [],
                        key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        return redact.redact(str(events[-1].get("message") or "")) if events else None

    async def get_job(self, namespace: str, name: str) -> Body | None:
        return await self._call(self.batch.read_namespaced_job, name, namespace)

    async def delete_job(self, namespace: str, name: str) -> None:
        await self._call(self.batch.delete_namespaced_job, name, namespace,
                         propagation_policy="Background")

    async def job_pods(self, namespace: str, job_name: str) -> list[Body]:
        found = await self._call(self.core.list_namespaced_pod, namespace,
                                 label_selector=f"job-name={job_name}")
        return list((found or {}).get("items") or [])

    async def pod_log(self, namespace: str, pod: str) -> str | None:
        """The pod's log (None before its container started). Raw bytes: kubernetes 36's
        decoded variant returns the repr of the bytes (kubernetes-client/python#2596)."""
        def run() -> str | None:
            try:
                response = self.core.read_namespaced_pod_log(
                    pod, namespace, limit_bytes=LOG_LIMIT_BYTES, _preload_content=False,
                    _request_timeout=_TIMEOUT)
            except ApiException as exc:
                if exc.status in (400, 404):  # not started yet, or gone
                    return None
                raise
            return str(response.data.decode("utf-8", errors="replace"))
        return await asyncio.to_thread(run)

    async def event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        stamp = progress.now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": resource.API_VERSION, "kind": resource.KIND,
                "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": redact.redact(message)[:1024],
            "source": {"component": "schemashift-operator"},
            "reportingComponent": "schemashift.io/operator",
            "reportingInstance": self.instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self._call(self.core.create_namespaced_event, meta["namespace"], event)
        except ApiException as exc:
            # Nobody will read it, and retrying cannot help (the finalizer would hold the
            # namespace's deletion): the status write that follows still goes through.
            if not namespace_terminating(exc):
                raise
