"""What an identity may do, as `kubectl auth can-i --list` shows it, and what the RBAC
manifests grant, in the same (resource, verb) form: tests compare the two for equality."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.e2e.testbed.controlplane import ControlPlane


def rights(plane: ControlPlane, ns: str, account: str) -> set[tuple[str, str]]:
    """(resource, verb) pairs `kubectl auth can-i --list` shows for the identity in `ns`."""
    done = plane.kubectl("auth", "can-i", "--list", "-n", ns, "--as", account)
    found = set()
    for line in done.stdout.splitlines()[1:]:
        columns = re.split(r"\s{2,}", line.strip())
        if len(columns) < 4 or not columns[0]:
            continue  # a non-resource URL (discovery, healthz)
        for verb in columns[3].strip("[]").split():
            found.add((columns[0], verb))
    return found


def granted(path: Path, kinds: tuple[str, ...], names: tuple[str, ...] = ()
            ) -> set[tuple[str, str]]:
    """What the manifests' roles of `kinds` grant, as `auth can-i --list` names it."""
    pairs = set()
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc["kind"] not in kinds or (names and doc["metadata"]["name"] not in names):
            continue
        for rule in doc["rules"]:
            for group in rule["apiGroups"]:
                for name in rule["resources"]:
                    base, _, sub = name.partition("/")
                    shown = f"{base}.{group}" if group else base
                    pairs |= {(f"{shown}/{sub}" if sub else shown, verb)
                              for verb in rule["verbs"]}
    return pairs


# Every authenticated identity may ask the API server about itself (system:basic-user).
SELF_REVIEWS = {
    ("selfsubjectreviews.authentication.k8s.io", "create"),
    ("selfsubjectaccessreviews.authorization.k8s.io", "create"),
    ("selfsubjectrulesreviews.authorization.k8s.io", "create"),
}
