"""kopf handlers: three-line shims over `reconcile` (which knows nothing of kopf)."""

from __future__ import annotations

from typing import Any

import kopf

from schemashift.kube import resource
from schemashift.operator import reconcile

RESOURCE = (resource.GROUP, resource.VERSION, resource.PLURAL)
JOBS = ("batch", "v1", "jobs")
CONTEXT: reconcile.Context | None = None  # set by schemashift.operator.run before kopf starts


def _ctx() -> reconcile.Context:
    assert CONTEXT is not None, "schemashift.operator.run() sets the context"
    return CONTEXT


def _unfinished(status: kopf.Status, meta: kopf.Meta, **_: Any) -> bool:
    """Timers only for resources with work left: a Job, a queue, an approval, a new spec."""
    observed = status.get("observedGeneration")
    step = status.get("step")
    return step not in ("done", "invalid") or observed != meta.get("generation")


def _invalid(status: kopf.Status, **_: Any) -> bool:
    return status.get("step") == "invalid"


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
async def on_change(namespace: str | None, name: str, **_: Any) -> None:
    await reconcile.reconcile(_ctx(), str(namespace), name)


@kopf.timer(*RESOURCE, interval=2.0, when=_unfinished)
async def on_timer(namespace: str | None, name: str, **_: Any) -> None:
    await reconcile.reconcile(_ctx(), str(namespace), name)


@kopf.timer(*RESOURCE, interval=reconcile.INVALID_RECHECK_S, when=_invalid)
async def on_recheck(namespace: str | None, name: str, **_: Any) -> None:
    await reconcile.reconcile(_ctx(), str(namespace), name)


@kopf.on.event(*RESOURCE)
async def on_event(namespace: str | None, name: str, **_: Any) -> None:
    await reconcile.observe(_ctx(), str(namespace), name)


@kopf.on.event(*JOBS, labels=resource.MANAGED_BY)
async def on_job_event(namespace: str | None, meta: kopf.Meta, **_: Any) -> None:
    for owner in meta.get("ownerReferences") or ():
        if owner.get("kind") == resource.KIND:
            await reconcile.reconcile(_ctx(), str(namespace), owner["name"])


@kopf.on.delete(*RESOURCE)
async def on_delete(namespace: str | None, name: str, **_: Any) -> None:
    await reconcile.finalize(_ctx(), str(namespace), name)
