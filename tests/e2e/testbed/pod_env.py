"""A pod process's environment, resolved as a kubelet resolves it.

Lowest precedence first: a few variables of the test process and ``extra_env`` (the image's
ENV), the service variables, ``envFrom`` (secretRef/configMapRef, ``prefix``), then ``env``
(``value`` with ``$(VAR)`` expansion, ``secretKeyRef``, ``configMapKeyRef``, ``fieldRef``). A
missing non-optional source raises EnvError: the container stays Waiting with
CreateContainerConfigError, as with a kubelet.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

INHERITED_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONDONTWRITEBYTECODE",
    "SSL_CERT_FILE",
)


class EnvError(Exception):
    """A referenced Secret/ConfigMap/key is missing and not optional."""


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: `$$` escapes, unknown references stay as written."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)", repl, value)


class PodEnvironment:
    """Resolves containers' env through the API server (Secrets, ConfigMaps, the pod itself)."""

    def __init__(self, core: client.CoreV1Api, api_port: int,
                 extra_env: Mapping[str, str]) -> None:
        self._core = core
        self._api_port = str(api_port)
        self._extra_env = extra_env  # the kubelet's, read at each start (tests add to it)

    def base(self, pod: Any) -> dict[str, str]:
        """What every process gets before the container's own envFrom and env."""
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        env.update(self._extra_env)
        env.update(
            KUBERNETES_SERVICE_HOST="127.0.0.1",
            KUBERNETES_SERVICE_PORT=self._api_port,
            KUBERNETES_SERVICE_PORT_HTTPS=self._api_port,
            HOSTNAME=pod.metadata.name,
        )
        return env

    def container(self, pod: Any, container: Any, env: dict[str, str]) -> dict[str, str]:
        """`env` with the container's envFrom, then its env, applied."""
        for source in container.env_from or []:
            prefix = source.prefix or ""
            for key, value in self._env_from(pod.metadata.namespace, source).items():
                env[prefix + key] = value
        for var in container.env or []:
            resolved = self._env_value(pod, var, env)
            if resolved is not None:
                env[var.name] = resolved
        return env

    def _env_from(self, namespace: str, source: Any) -> dict[str, str]:
        if source.secret_ref is not None:
            ref = source.secret_ref
            data = self._secret_data(namespace, ref.name, bool(ref.optional))
        elif source.config_map_ref is not None:
            ref = source.config_map_ref
            data = self._config_map_data(namespace, ref.name, bool(ref.optional))
        else:
            return {}
        return data or {}

    def _env_value(self, pod: Any, var: Any, env: Mapping[str, str]) -> str | None:
        source = var.value_from
        if source is None:
            return expand(var.value or "", env)
        namespace = pod.metadata.namespace
        for ref, read in (
            (source.secret_key_ref, self._secret_data),
            (source.config_map_key_ref, self._config_map_data),
        ):
            if ref is None:
                continue
            data = read(namespace, ref.name, bool(ref.optional))
            if data is not None and ref.key in data:
                return data[ref.key]
            if ref.optional:
                return None
            raise EnvError(f"couldn't find key {ref.key} in {ref.name}")
        if source.field_ref is not None:
            return downward_field(pod, source.field_ref.field_path)
        return None  # resourceFieldRef: resources are not modelled

    def _secret_data(self, namespace: str, name: str, optional: bool) -> dict[str, str] | None:
        secret = _read_source(self._core.read_namespaced_secret, "secret", namespace, name,
                              optional)
        if secret is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def _config_map_data(self, namespace: str, name: str, optional: bool) -> dict[str, str] | None:
        config_map = _read_source(self._core.read_namespaced_config_map, "configmap",
                                  namespace, name, optional)
        return None if config_map is None else dict(config_map.data or {})


def _read_source(read: Callable[[str, str], Any], kind: str, namespace: str, name: str,
                 optional: bool) -> Any:
    """A Secret or ConfigMap an env var refers to; None when it is missing but optional."""
    try:
        return read(name, namespace)
    except ApiException as exc:
        if exc.status == 404 and optional:
            return None
        if exc.status == 404:
            raise EnvError(f'{kind} "{name}" not found') from exc
        raise


def downward_field(pod: Any, path: str) -> str | None:
    """fieldRef values a kubelet resolves (downward API)."""
    simple: dict[str, str | None] = {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        values = getattr(pod.metadata, match.group(1)) or {}
        return str(values.get(match.group(2), ""))
    return None
