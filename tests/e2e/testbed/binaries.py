"""Where the test-bed binaries are: the same rules as `tools/build_testbed.py`, which builds them.

Each binary is taken from `$KUBEBUILDER_ASSETS` when it is there (the envtest convention), else
from `${SCHEMASHIFT_ENVTEST_DIR:-~/.cache/schemashift/envtest}/<kubernetes version>/`, the
version being the one `tools/k8sbin/go.mod` pins.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_COMMAND = "python tools/build_testbed.py"
NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "helm")


def kubernetes_version() -> str:
    """The pinned release, e.g. "1.34.4"."""
    go_mod = (REPO_ROOT / "tools" / "k8sbin" / "go.mod").read_text()
    match = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes\s+v(\S+)", go_mod, re.M)
    if not match:
        raise RuntimeError("tools/k8sbin/go.mod does not require k8s.io/kubernetes")
    return match.group(1)


def cache_dir() -> Path:
    base = os.environ.get("SCHEMASHIFT_ENVTEST_DIR") or "~/.cache/schemashift/envtest"
    return Path(base).expanduser() / kubernetes_version()


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find(name: str) -> Path | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    for directory in ([Path(assets)] if assets else []) + [cache_dir()]:
        if _executable(candidate := directory / name):
            return candidate
    return None


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    helm: Path | None  # only the Helm-chart tests need it


class BinariesMissing(RuntimeError):
    pass


def locate() -> Binaries:
    """The binaries, or BinariesMissing naming what is absent and how to build it."""
    found = {name: find(name) for name in NAMES}
    missing = [name for name in NAMES[:3] if found[name] is None]
    if missing:
        raise BinariesMissing(
            f"test-bed binaries not built ({', '.join(missing)} missing in {cache_dir()}"
            f"{' or $KUBEBUILDER_ASSETS' if os.environ.get('KUBEBUILDER_ASSETS') else ''}); "
            f"run `{BUILD_COMMAND}` first"
        )
    return Binaries(
        etcd=found["etcd"],  # type: ignore[arg-type]
        kube_apiserver=found["kube-apiserver"],  # type: ignore[arg-type]
        kube_controller_manager=found["kube-controller-manager"],  # type: ignore[arg-type]
        helm=found["helm"],
    )
