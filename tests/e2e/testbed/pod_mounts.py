"""The ServiceAccount token a kubelet projects, and how a process finds it and its message file.

Running as root with mount namespaces (``unshare``), each process gets a private mount namespace
in which the per-pod token directory is bind-mounted on the container's mount path and the
per-pod message file on its ``terminationMessagePath``; the host only gets the empty mount
points, left in place because another session's kubelet may be using them. Always, in addition
(and the only way without mount namespaces): ``SCHEMASHIFT_SA_DIR`` names the token directory
and ``SCHEMASHIFT_TERMINATION_MESSAGE_PATH`` the message file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from kubernetes import client

from .pod_run import PodRun

SA_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_SECONDS = 3607  # what the kubelet requests for projected tokens
_UNSHARE = ["unshare", "--mount", "--propagation", "private", "--"]
# Binds "$1" on "$2" for each pair up to "--", then execs the command: runs inside `unshare -m`.
_MOUNT_SCRIPT = (
    'set -e; while [ "$1" != "--" ]; do mount --bind "$1" "$2"; shift 2; done; shift; exec "$@"'
)


def mount_namespaces_work() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = [*_UNSHARE, "/bin/sh", "-c", "mount --bind / /mnt"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def sa_mount(container: Any) -> str | None:
    """The token's mount path if the ServiceAccount admission plugin added its volume."""
    for mount in container.volume_mounts or []:
        if mount.mount_path == SA_MOUNT_PATH or mount.name.startswith("kube-api-access-"):
            return str(mount.mount_path)
    return None


class PodFiles:
    """Writes a pod's projected token and wraps its command in the bind mounts it needs."""

    def __init__(self, core: client.CoreV1Api, ca_file: Path, use_namespaces: bool) -> None:
        self._core = core
        self._ca_file = ca_file
        self.use_namespaces = use_namespaces

    def environment(self, pod: Any, container: Any, run: PodRun) -> dict[str, str]:
        """The variables that name the files (and the token, written when it is mounted)."""
        env = {"SCHEMASHIFT_TERMINATION_MESSAGE_PATH": str(run.message_file)}
        if sa_mount(container) is not None:
            self._write_token(pod, run)
            env["SCHEMASHIFT_SA_DIR"] = str(run.sa_dir)
        return env

    def wrap(self, container: Any, run: PodRun, argv: list[str]) -> list[str]:
        if not self.use_namespaces:
            return argv
        binds: list[str] = []
        if (sa_path := sa_mount(container)) is not None:
            _ensure_mount_point(Path(sa_path), directory=True)
            binds += [str(run.sa_dir), sa_path]
        message_path = container.termination_message_path or "/dev/termination-log"
        _ensure_mount_point(Path(message_path), directory=False)
        binds += [str(run.message_file), message_path]
        return [*_UNSHARE, "/bin/sh", "-c", _MOUNT_SCRIPT, "sh", *binds, "--", *argv]

    def _write_token(self, pod: Any, run: PodRun) -> None:
        """As the kubelet projects it: a token bound to this pod, the cluster CA, the namespace."""
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[],
                expiration_seconds=TOKEN_SECONDS,
                bound_object_ref=client.V1BoundObjectReference(
                    api_version="v1", kind="Pod", name=pod.metadata.name, uid=pod.metadata.uid
                ),
            )
        )
        sa = pod.spec.service_account_name or "default"
        token = self._core.create_namespaced_service_account_token(
            sa, pod.metadata.namespace, request
        ).status.token
        run.sa_dir.mkdir(exist_ok=True)
        (run.sa_dir / "token").write_text(token)
        shutil.copyfile(self._ca_file, run.sa_dir / "ca.crt")
        (run.sa_dir / "namespace").write_text(pod.metadata.namespace)


def _ensure_mount_point(path: Path, *, directory: bool) -> None:
    """An empty mount point on the host (exist_ok: kubelets of parallel sessions race)."""
    if directory:
        path.mkdir(parents=True, exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
