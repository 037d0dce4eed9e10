"""kopf handlers: three-line shims over `reconcile` (which knows nothing of kopf)."""

from __future__ import annotations

from typing import Any

import kopf

from schemashift.kube import resource
from schemashift.operator import reconcile

RESOURCE = (resource.GROUP, resource.VERSION, resource.PLURAL)
JOBS = ("batch", "v1", "jobs")
CONTEXT: reconcile.Context | None = None  # set by schemashift.operator.run before kopf starts
Index = kopf.Index[str, reconcile.Peer]


class IndexPeers:
    """The queue of each database from kopf's index (kept by the watch: no listing)."""

    def __init__(self) -> None:
        self.index: Index | None = None

    def of(self, database_key: str) -> list[reconcile.Peer]:
        assert self.index is not None, "kopf passes the index to every handler"
        return list(self.index.get(database_key, ()))


@kopf.index(*RESOURCE)
def by_database(body: kopf.Body, **_: Any) -> dict[str, reconcile.Peer]:
    return reconcile.peer_entry(body)


def _ctx(kwargs: dict[str, Any]) -> reconcile.Context:
    """The context, its queue reading kopf's index (passed to handlers by the index's name)."""
    assert CONTEXT is not None, "schemashift.operator.run() sets the context"
    assert isinstance(CONTEXT.peers, IndexPeers)
    CONTEXT.peers.index = kwargs["by_database"]
    return CONTEXT


def _unfinished(status: kopf.Status, meta: kopf.Meta, **_: Any) -> bool:
    """Timers only for resources with work left: a Job, an approval, a new spec. A queued one
    waits for a watch event of its database (reconcile.next_in_line), not for a timer."""
    observed = status.get("observedGeneration")
    step = status.get("step")
    return step not in ("done", "invalid", "waiting") or observed != meta.get("generation")


def _recheck(status: kopf.Status, **_: Any) -> bool:
    """Now and then: a missing Secret may have been created; a queue, looked at again."""
    return status.get("step") in ("invalid", "waiting")


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
async def on_change(namespace: str | None, name: str, **kwargs: Any) -> None:
    await reconcile.reconcile(_ctx(kwargs), str(namespace), name)


@kopf.timer(*RESOURCE, interval=2.0, when=_unfinished)
async def on_timer(namespace: str | None, name: str, **kwargs: Any) -> None:
    await reconcile.reconcile(_ctx(kwargs), str(namespace), name)


@kopf.timer(*RESOURCE, interval=reconcile.INVALID_RECHECK_S, when=_recheck)
async def on_recheck(namespace: str | None, name: str, **kwargs: Any) -> None:
    await reconcile.reconcile(_ctx(kwargs), str(namespace), name)


@kopf.on.event(*RESOURCE)
async def on_event(body: kopf.Body, **kwargs: Any) -> None:
    await reconcile.observe(_ctx(kwargs), body)


@kopf.on.event(*JOBS, labels=resource.MANAGED_BY)
async def on_job_event(namespace: str | None, meta: kopf.Meta, **kwargs: Any) -> None:
    for owner in meta.get("ownerReferences") or ():
        if owner.get("kind") == resource.KIND:
            await reconcile.reconcile(_ctx(kwargs), str(namespace), owner["name"])


@kopf.on.delete(*RESOURCE)
async def on_delete(namespace: str | None, name: str, **kwargs: Any) -> None:
    await reconcile.finalize(_ctx(kwargs), str(namespace), name)
