#!/usr/bin/env python3
"""Build the Kubernetes test-bed binaries from Go modules into a cache directory.

Builds ``kube-apiserver`` and ``kube-controller-manager`` (module ``tools/k8sbin``), ``etcd``
(module ``tools/etcd``) and ``helm`` (``go install helm.sh/helm/v3/cmd/helm@HELM_VERSION``) into

    ${SCHEMASHIFT_ENVTEST_DIR:-~/.cache/schemashift/envtest}/<kubernetes version>/

The Kubernetes and etcd versions are the ones pinned in ``tools/k8sbin/go.mod`` and
``tools/etcd/go.mod``; those files (with their ``go.sum``) are the single source of truth, and
``tests/e2e/testbed`` reads the same ``go.mod`` to find the binaries.

A binary already present is reused, so a second run builds nothing and takes seconds. The
envtest convention is honoured: a binary found in ``$KUBEBUILDER_ASSETS`` is used as is and not
built (envtest asset directories usually hold etcd and kube-apiserver only; whatever they lack
is built into the cache).

Usage::

    python tools/build_testbed.py            # build what is missing, print progress
    python tools/build_testbed.py --print-dir
    python tools/build_testbed.py --check    # exit 1 when a binary is missing; builds nothing
    python tools/build_testbed.py --print-replaces k8s.io/kubernetes@v1.34.4
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
K8S_MODULE = TOOLS / "k8sbin"
ETCD_MODULE = TOOLS / "etcd"
HELM_VERSION = "v3.22.0"
# Upstream's release build flags (build/root/Makefile, hack/lib/golang.sh).
K8S_TAGS = "selinux,notest"
PROGRESS_EVERY_S = 30.0


@dataclass
class Target:
    """One binary: how to build it, and the version flags it needs."""

    name: str
    argv: list[str]  # the go command after "go", without -o / ldflags
    cwd: Path
    ldflags: list[str] | Callable[[], list[str]] = field(default_factory=list)
    tags: str = ""
    install: bool = False  # `go install pkg@v` (GOBIN) instead of `go build -o`


def module_version(go_mod: Path, module: str) -> str:
    """The version `go_mod` requires for `module` (e.g. "v1.34.4")."""
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod.read_text(), re.M)
    if not match:
        raise SystemExit(f"{go_mod}: no requirement on {module}")
    return match.group(1)


def k8s_version() -> str:
    return module_version(K8S_MODULE / "go.mod", "k8s.io/kubernetes")


def etcd_version() -> str:
    return module_version(ETCD_MODULE / "go.mod", "go.etcd.io/etcd/server/v3")


def cache_dir() -> Path:
    base = os.environ.get("SCHEMASHIFT_ENVTEST_DIR") or "~/.cache/schemashift/envtest"
    return Path(base).expanduser() / k8s_version().lstrip("v")


def k8s_version_ldflags(version: str) -> list[str]:
    """-X flags so the binaries report their real version (kubectl skew, Helm kubeVersion)."""
    major, minor = version.lstrip("v").split(".")[:2]
    values = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",  # fixed: the build is reproducible
    }
    return [
        f"-X {pkg}.{var}={value}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for var, value in values.items()
    ]


def targets() -> list[Target]:
    k8s_flags = k8s_version_ldflags(k8s_version())
    return [
        Target("etcd", ["build", "go.etcd.io/etcd/server/v3"], ETCD_MODULE),
        Target(
            "kube-apiserver",
            ["build", "k8s.io/kubernetes/cmd/kube-apiserver"],
            K8S_MODULE,
            k8s_flags,
            K8S_TAGS,
        ),
        Target(
            "kube-controller-manager",
            ["build", "k8s.io/kubernetes/cmd/kube-controller-manager"],
            K8S_MODULE,
            k8s_flags,
            K8S_TAGS,
        ),
        Target(
            "helm",
            ["install", f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"],
            TOOLS,
            helm_ldflags,  # computed lazily: it needs the module download
            install=True,
        ),
    ]


def go_mod_of(module_at_version: str) -> str:
    """The go.mod text of a published module version (downloads it into the module cache)."""
    info = subprocess.run(
        ["go", "mod", "download", "-json", module_at_version],
        env=go_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(json.loads(info.stdout)["GoMod"]).read_text()


def helm_ldflags() -> list[str]:
    """As helm's Makefile sets them: its version, and the default Kubernetes version that
    `helm template`/`helm lint` assume, derived from the client-go it is built with."""
    client_go = re.search(
        r"^\s*k8s\.io/client-go\s+v0\.(\d+)\.", go_mod_of(f"helm.sh/helm/v3@{HELM_VERSION}"), re.M
    )
    if not client_go:
        raise SystemExit(f"helm {HELM_VERSION}: cannot find its k8s.io/client-go version")
    version = "helm.sh/helm/v3/internal/version"
    flags = [
        f"-X {version}.version={HELM_VERSION}",
        f"-X {version}.metadata=",
        f"-X {version}.gitTreeState=clean",
    ]
    for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [f"-X {pkg}.k8sVersionMajor=1", f"-X {pkg}.k8sVersionMinor={client_go.group(1)}"]
    return flags


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    # The modules pin their versions; never let Go switch toolchains or read VCS state.
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-buildvcs=false")
    return env


def assets_binary(name: str) -> Path | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and (path := Path(assets) / name).is_file() and os.access(path, os.X_OK):
        return path
    return None


def existing(name: str, out: Path) -> Path | None:
    if found := assets_binary(name):
        return found
    path = out / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def log(msg: str) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
    print(f"[build-testbed {stamp}] {msg}", flush=True)


def go_command(target: Target, out: Path, tmp: Path) -> list[str]:
    ldflags = target.ldflags() if callable(target.ldflags) else target.ldflags
    flags = ["-trimpath", "-v", "-ldflags", " ".join(["-s", "-w", *ldflags])]
    if target.tags:
        flags += ["-tags", target.tags]
    if target.install:
        return ["go", target.argv[0], *flags, *target.argv[1:]]
    return ["go", target.argv[0], *flags, "-o", str(tmp), *target.argv[1:]]


def run_with_progress(cmd: Sequence[str], cwd: Path, env: dict[str, str], name: str) -> None:
    """Run a go build; `-v` names each package as it compiles, which we count for progress."""
    started = last = time.monotonic()
    counts = {"modules downloaded": 0, "packages compiled": 0}
    tail: list[str] = []
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        kind = "modules downloaded" if line.startswith("go: downloading") else "packages compiled"
        counts[kind] += 1
        tail = [*tail[-40:], line.rstrip()]
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            done = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
            log(f"  {name}: {done}; {last - started:.0f}s so far")
    if proc.wait() != 0:
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(f"building {name} failed (exit {proc.returncode})")


def build(target: Target, out: Path) -> float:
    tmp = out / f".{target.name}.tmp"
    env = go_env()
    if target.install:
        # go install writes GOBIN/<name>: use a scratch GOBIN so a half-written file never
        # sits at the final path.
        env["GOBIN"] = str(out / ".gobin")
        tmp = out / ".gobin" / target.name
    started = time.monotonic()
    log(f"building {target.name} ({' '.join(target.argv)}) ...")
    run_with_progress(go_command(target, out, tmp), target.cwd, env, target.name)
    tmp.replace(out / target.name)  # atomic: readers see the old state or a whole binary
    if target.install:
        shutil.rmtree(out / ".gobin", ignore_errors=True)
    elapsed = time.monotonic() - started
    log(f"built {target.name} in {elapsed:.0f}s")
    return elapsed


def write_manifest(out: Path, timings: dict[str, float]) -> None:
    manifest = out / "versions.json"
    data = json.loads(manifest.read_text()) if manifest.exists() else {}
    data.update(kubernetes=k8s_version(), etcd=etcd_version(), helm=HELM_VERSION)
    data.setdefault("build_seconds", {}).update({k: round(v) for k, v in timings.items()})
    manifest.write_text(json.dumps(data, indent=2) + "\n")


def print_replaces(module_at_version: str) -> None:
    """Print the replace block a wrapper module needs for k8s.io/kubernetes@VERSION."""
    _, version = module_at_version.split("@")
    go_mod = go_mod_of(module_at_version)
    staging = re.findall(r"^\s*(k8s\.io/\S+)\s+=>\s+\./staging/", go_mod, re.M)
    staging_version = "v0." + version.lstrip("v").split(".", 1)[1]
    print("replace (")
    for module in staging:
        print(f"\t{module} => {module} {staging_version}")
    print(")")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print-dir", action="store_true", help="print the cache directory")
    parser.add_argument("--check", action="store_true", help="exit 1 if a binary is missing")
    parser.add_argument("--print-replaces", metavar="MODULE@VERSION")
    args = parser.parse_args(argv)
    if args.print_replaces:
        print_replaces(args.print_replaces)
        return 0
    out = cache_dir()
    if args.print_dir:
        print(out)
        return 0
    missing = [t for t in targets() if not existing(t.name, out)]
    if args.check:
        for t in missing:
            print(f"missing: {t.name}")
        return 1 if missing else 0
    if missing and not shutil.which("go"):
        raise SystemExit(
            "go is not on PATH; it is needed to build " + ", ".join(t.name for t in missing)
        )
    out.mkdir(parents=True, exist_ok=True)
    for t in targets():
        if t not in missing:
            log(f"reusing {existing(t.name, out)}")
    started = time.monotonic()
    timings = {t.name: build(t, out) for t in missing}
    write_manifest(out, timings)
    log(f"test-bed binaries ready in {out} ({time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
