"""What the operator's steps share: the API they call, metrics, and the in-memory state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemashift.kube import policy as kpolicy

Body = Mapping[str, Any]
RUNNING_STEPS = frozenset({"plan", "replan", "apply"})
INVALID_RECHECK_S = 30.0  # the timer interval for resources whose Secret or image is missing
log = logging.getLogger("schemashift.operator")


class Api(Protocol):
    async def get_migration(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None: ...
    async def secret_keys(self, namespace: str, name: str) -> set[str] | None: ...
    async def service_account_exists(self, namespace: str, name: str) -> bool: ...
    async def job_create_failures(self, namespace: str, job_name: str) -> str | None: ...
    async def create_job(self, job: Mapping[str, Any]) -> bool: ...
    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def delete_job(self, namespace: str, name: str) -> None: ...
    async def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]: ...
    async def pod_log(self, namespace: str, pod: str) -> str | None: ...
    async def event(self, body: Body, type_: str, reason: str, message: str) -> None: ...


@dataclass(frozen=True)
class Peer:
    """What the queue of one database needs to know of a SchemaMigration."""

    uid: str
    name: str
    created: str  # creationTimestamp: the queue's order (then the name)
    step: str
    deleting: bool


class Peers(Protocol):
    """The SchemaMigrations of one database (key: MigrationSpec.database_key), as last watched."""

    def of(self, database_key: str) -> Iterable[Peer]: ...


class Metrics(Protocol):
    def finished(self, outcome: str, seconds: float | None, backup_bytes: int) -> None: ...


class NoMetrics:
    def finished(self, outcome: str, seconds: float | None, backup_bytes: int) -> None:
        return None


@dataclass
class Context:
    api: Api
    peers: Peers
    job_image: str | None = None
    # schemashift.operator.run always sets it (strict unless the admin relaxed it); None skips
    # the check, for unit tests of other concerns.
    policy: kpolicy.Policy | None = None
    metrics: Metrics = field(default_factory=NoMetrics)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # uid → the status fields this operator last wrote: anything else there is forged.
    written: dict[str, dict[str, Any]] = field(default_factory=dict)
    phases_seen: dict[str, int] = field(default_factory=dict)  # Job → runner phases announced

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self.locks.setdefault(f"{namespace}/{name}", asyncio.Lock())
