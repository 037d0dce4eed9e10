"""Every version of every SchemaMigration of a namespace, as the API server served it.

A watch in a thread records each ADDED/MODIFIED object, so the Argo CD health check is judged on
each status the operator really wrote (not on a sample taken by polling). With
SCHEMASHIFT_RECORD_ARGOCD_FIXTURES=1 one object per kind of status is also written to
tests/fixtures/argocd/ (the fast unit test replays them without a test bed).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "argocd"
RECORD_ENV = "SCHEMASHIFT_RECORD_ARGOCD_FIXTURES"


def kind_of(obj: dict[str, Any]) -> str:
    """A fixture name for the kind of status: phase, plus what changes the verdict."""
    status = obj.get("status") or {}
    name = str(status.get("phase") or "NoStatus")
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if (conditions.get("ContractPending") or {}).get("status") == "True":
        name += "-ContractPending"
    observed = status.get("observedGeneration")
    if isinstance(observed, int) and observed < int(obj["metadata"].get("generation") or 0):
        name += "-OlderGeneration"
    if status.get("step") == "invalid":
        name += "-Invalid"
    return name


class StatusRecorder:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.objects: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._started.wait(30)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        version = ""
        while not self._stop.is_set():
            stream = watch.Watch().stream(
                self.custom.list_namespaced_custom_object, "schemashift.io", "v1alpha1",
                self.namespace, "schemamigrations", resource_version=version or None,
                timeout_seconds=2, _request_timeout=10)
            self._started.set()
            with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError, OSError):
                for event in stream:
                    obj = event.get("object")
                    if not isinstance(obj, dict):
                        continue
                    version = obj["metadata"].get("resourceVersion") or version
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self.objects.append(copy.deepcopy(obj))
                    if self._stop.is_set():
                        break

    def kinds(self) -> set[str]:
        return {kind_of(o) for o in self.objects}

    def save_fixtures(self, prefix: str) -> None:
        if not os.environ.get(RECORD_ENV):
            return
        FIXTURES.mkdir(parents=True, exist_ok=True)
        first: dict[str, dict[str, Any]] = {}
        for obj in self.objects:
            first.setdefault(kind_of(obj), obj)
        for kind, obj in first.items():
            obj = {k: v for k, v in obj.items() if k in ("apiVersion", "kind", "metadata",
                                                          "spec", "status")}
            obj["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
            path = FIXTURES / f"{prefix}-{kind}.json"
            path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


@contextlib.contextmanager
def recording(api: client.ApiClient, namespace: str) -> Iterator[StatusRecorder]:
    recorder = StatusRecorder(api, namespace)
    recorder.start()
    try:
        yield recorder
    finally:
        recorder.stop()
