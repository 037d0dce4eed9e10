"""Creating a step's Job (plan, replan, apply)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemashift import progress, reasons
from schemashift.kube import jobspec, resource
from schemashift.kube.client import JobRejected
from schemashift.operator.context import (
    Body,
    Context,
)
from schemashift.operator.status_writes import fail, fresh_fields, set_status


async def launch(ctx: Context, body: Body, spec: resource.MigrationSpec,
                  purpose: jobspec.Purpose, extra: Mapping[str, Any] | None = None) -> None:
    status = body.get("status") or {}
    seq = int((extra or {}).get("jobSeq", status.get("jobSeq", 0)))
    # The apply Job re-plans under the migration lock and refuses a plan other than the approved.
    approved = (extra or {}).get("approvedHash", status.get("approvedHash"))
    expected = approved if spec.approval_required else None
    job = jobspec.build_job(body, spec.image or ctx.job_image or "", purpose, seq, expected)
    name = job["metadata"]["name"]
    try:
        created = await ctx.api.create_job(job)
    except JobRejected as exc:  # e.g. a quota or an admission webhook: no retry can help
        await fail(ctx, body, reasons.JOB_REJECTED,
                    f"the API server refused Job {name} (HTTP {exc.status}): {exc}; "
                    "nothing was run", fields=fresh_fields())
        return
    doing = {"plan": "plan", "replan": "re-plan (the database may have moved)",
             "apply": "migrate"}[purpose]
    message = f"Job {name} started to {doing} to {spec.target}"
    fields = {**(extra or {}), "step": purpose, "jobName": name, "jobPurpose": purpose}
    if purpose != "replan":
        fields["startedAt"] = progress.now()
    # A restart before the status patch finds the Job (409) and announces nothing twice.
    await set_status(ctx, body, "Planning", reasons.JOB_CREATED, message, fields,
               event="Normal" if created else None)
