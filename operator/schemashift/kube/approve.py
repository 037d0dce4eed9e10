"""`schemashift approve`: approve the plan a SchemaMigration waits with, as the current user.

Sets the plan hash (`schemashift.io/approved`) and the approver's user name as the API server
knows it (a SelfSubjectReview, as `kubectl auth whoami`) in `schemashift.io/approved-by`; the
chart's approval admission policy admits only approvers, and only under their own name.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from schemashift import errors
from schemashift.kube import resource
from schemashift.kube import status as kstatus
from schemashift.kube.client import api_message
from schemashift.kube.wait import WaitError, load_api


@dataclass(frozen=True)
class Approval:
    namespace: str
    name: str
    plan_hash: str
    approver: str


def approve(name: str, namespace: str | None, plan_hash: str | None) -> Approval:
    try:
        api, ns = load_api(namespace)
    except WaitError as exc:
        raise errors.UsageError(str(exc)) from exc
    objects = client.CustomObjectsApi(api)
    ref = f"SchemaMigration {ns}/{name}"
    try:
        body = objects.get_namespaced_custom_object(resource.GROUP, resource.VERSION, ns,
                                                    resource.PLURAL, name)
    except ApiException as exc:
        raise _refused(exc, f"cannot read {ref}") from exc
    status = body.get("status") or {}
    expected = kstatus.plan_hash(status)
    if status.get("phase") != "AwaitingApproval" or not expected:
        raise errors.UsageError(
            f"{ref} is not awaiting approval (phase {status.get('phase') or 'none yet'})",
            hint=f"kubectl -n {ns} get smig {name} shows where it stands")
    if plan_hash and plan_hash != expected:
        raise errors.PolicyRefused(
            f"{ref} waits with plan {expected}, not {plan_hash}: the plan changed since you "
            "reviewed it", hint=f"review status.plan again (kubectl -n {ns} get smig {name} "
                                "-o yaml), then approve its hash")
    try:
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview())
    except ApiException as exc:
        raise _refused(exc, "cannot ask the API server who you are (SelfSubjectReview)") from exc
    approver = str(review.status.user_info.username)
    annotations = {resource.APPROVED_ANNOTATION: expected,
                   resource.APPROVED_BY_ANNOTATION: approver}
    try:
        objects.patch_namespaced_custom_object(resource.GROUP, resource.VERSION, ns,
                                               resource.PLURAL, name,
                                               {"metadata": {"annotations": annotations}})
    except ApiException as exc:
        raise _refused(exc, f"approving {ref} as {approver} was refused") from exc
    return Approval(ns, name, expected, approver)


def _refused(exc: ApiException, what: str) -> errors.SchemashiftError:
    message = f"{what}: {api_message(exc)} (HTTP {exc.status})"
    if exc.status == 403:
        return errors.PolicyRefused(message)
    if exc.status is not None and 400 <= exc.status < 500:
        return errors.UsageError(message)
    return errors.InfrastructureError(message)
