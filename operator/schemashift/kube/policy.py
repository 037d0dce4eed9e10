"""The admin's policy for what a SchemaMigration may run (pure functions).

Creating a SchemaMigration makes the operator, which may create Jobs, create one: without limits
that is creating any pod as any ServiceAccount of the namespace. The admin sets the limits in the
chart's `policy` values; the Deployment hands them to the operator as JSON in `SCHEMASHIFT_POLICY`,
read once at start. Nothing set means the strict setting: the operator's own job image, the
migration ServiceAccount, no tolerations, no nodeSelector, no priorityClassName.

Image patterns and label/taint keys are globs where only `*` and `?` are wildcards (the chart's
ValidatingAdmissionPolicy translates them to the same regular expressions). Control-plane keys
are never matched by a glob: an admin lists them by their full name or they are refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from schemashift import errors
from schemashift.kube import resource

ENV = "SCHEMASHIFT_POLICY"
CHART_VALUES = "policy"  # the chart's values block the admin edits: policy.<rule>
CONTROL_PLANE_KEYS = frozenset({"node-role.kubernetes.io/control-plane",
                                "node-role.kubernetes.io/master"})


@dataclass(frozen=True)
class Policy:
    """Field names are the chart's `policy.*` values (camelCase in JSON, see `from_mapping`)."""

    allowed_images: tuple[str, ...] = ()
    allowed_service_accounts: tuple[str, ...] = ()
    allowed_toleration_keys: tuple[str, ...] = ()
    allow_tolerate_all: bool = False
    allowed_node_selector_keys: tuple[str, ...] = ()
    allowed_priority_classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Denial:
    field: str
    value: str
    rule: str  # a `policy.*` value name
    allowed: str

    def __str__(self) -> str:
        return (f"{self.field} {self.value!r} is refused by {CHART_VALUES}.{self.rule} "
                f"(allowed: {self.allowed}); an admin sets {CHART_VALUES}.{self.rule} in the "
                "schemashift chart values")


def value_name(attribute: str) -> str:
    head, *rest = attribute.split("_")
    return head + "".join(part.capitalize() for part in rest)


def from_mapping(data: Mapping[str, Any]) -> Policy:
    """The policy from its chart values; an unknown or mistyped key is an error, not ignored."""
    known = {value_name(f.name): f for f in fields(Policy)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise errors.UsageError(
            f"unknown policy setting(s) {', '.join(unknown)} in {ENV}",
            hint=f"known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for key, item in data.items():
        attribute = known[key]
        if attribute.type == "bool":
            if not isinstance(item, bool):
                raise errors.UsageError(f"policy.{key} must be true or false, not {item!r}")
            values[attribute.name] = item
        elif item is None:
            values[attribute.name] = ()
        elif isinstance(item, list) and all(isinstance(v, str) and v for v in item):
            values[attribute.name] = tuple(item)
        else:
            raise errors.UsageError(f"policy.{key} must be a list of non-empty strings")
    return Policy(**values)


def from_env(environ: Mapping[str, str]) -> Policy:
    text = environ.get(ENV, "").strip()
    if not text:
        return Policy()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.UsageError(f"{ENV} is not JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(data, dict):
        raise errors.UsageError(f"{ENV} must be a JSON object of policy settings")
    return from_mapping(data)


def glob_regex(pattern: str) -> str:
    """`*` any run of characters, `?` one character, everything else literal; anchored."""
    return "^" + re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".") + "$"


def matches(value: str, patterns: Iterable[str]) -> bool:
    return any(re.match(glob_regex(p), value) for p in patterns)


def key_allowed(key: str, patterns: Iterable[str]) -> bool:
    patterns = tuple(patterns)
    return key in patterns if key in CONTROL_PLANE_KEYS else matches(key, patterns)


def check(policy: Policy, spec: resource.MigrationSpec, default_image: str | None) -> list[Denial]:
    """Everything in the spec the policy refuses (empty: the Job may be created)."""
    return [*_image(policy, spec, default_image), *_service_account(policy, spec),
            *_tolerations(policy, spec), *_node_selector(policy, spec),
            *_priority_class(policy, spec)]


def describe(denials: Iterable[Denial]) -> str:
    return "no Job created: " + "; ".join(map(str, denials))


def _listed(items: Iterable[str], *always: str) -> str:
    shown = [*always, *items]
    return ", ".join(shown) if shown else "none"


def _image(policy: Policy, spec: resource.MigrationSpec,
           default_image: str | None) -> list[Denial]:
    image = spec.image or default_image or ""
    if not image or image == default_image or matches(image, policy.allowed_images):
        return []
    default = [f"the operator's job image {default_image}"] if default_image else []
    return [Denial("spec.migrations.image", image, "allowedImages",
                   _listed(policy.allowed_images, *default))]


def _service_account(policy: Policy, spec: resource.MigrationSpec) -> list[Denial]:
    account = spec.service_account or resource.DEFAULT_JOB_SERVICE_ACCOUNT
    if account == resource.DEFAULT_JOB_SERVICE_ACCOUNT or account in \
            policy.allowed_service_accounts:
        return []
    return [Denial("spec.job.serviceAccountName", account, "allowedServiceAccounts",
                   _listed(policy.allowed_service_accounts, resource.DEFAULT_JOB_SERVICE_ACCOUNT))]


def _tolerations(policy: Policy, spec: resource.MigrationSpec) -> list[Denial]:
    found = []
    for toleration in spec.tolerations:
        key = str(toleration.get("key") or "")
        if not key and not policy.allow_tolerate_all:
            found.append(Denial("spec.job.tolerations", "a toleration without key (tolerates "
                                "every taint)", "allowTolerateAll", "false"))
        elif key and not key_allowed(key, policy.allowed_toleration_keys):
            found.append(Denial("spec.job.tolerations key", key, "allowedTolerationKeys",
                                _listed(policy.allowed_toleration_keys)))
    return found


def _node_selector(policy: Policy, spec: resource.MigrationSpec) -> list[Denial]:
    return [Denial("spec.job.nodeSelector key", key, "allowedNodeSelectorKeys",
                   _listed(policy.allowed_node_selector_keys))
            for key in spec.node_selector
            if not key_allowed(key, policy.allowed_node_selector_keys)]


def _priority_class(policy: Policy, spec: resource.MigrationSpec) -> list[Denial]:
    name = spec.priority_class
    if not name or name in policy.allowed_priority_classes:
        return []
    return [Denial("spec.job.priorityClassName", name, "allowedPriorityClasses",
                   _listed(policy.allowed_priority_classes))]
