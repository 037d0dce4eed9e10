"""etcd + kube-apiserver + kube-controller-manager as local processes, RBAC on, TLS everywhere
on the API server, a throwaway PKI, and kubeconfigs for an admin and for any ServiceAccount."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .binaries import Binaries
from .certs import CertificateAuthority, KeyPair, service_account_keys

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
ISSUER = "https://kubernetes.default.svc.cluster.local"
# Job pods need: job-controller; cascading deletion: garbage-collector; Job TTL: ttl-after-finished;
# pods need a `default` SA (serviceaccount) and the kube-root-ca.crt ConfigMap (root-ca publisher);
# namespace deletion: namespace; Deployments (e.g. an operator installed by Helm): deployment +
# replicaset; SA token Secrets: serviceaccount-token.
CONTROLLERS = (
    "job-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "namespace-controller",
    "deployment-controller",
    "replicaset-controller",
)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# The identity kube-apiserver presents to kubelets (kubeadm's name for it); no groups, so it is
# nobody special to the API server itself.
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
READY_TIMEOUT_S = 120.0  # kube-apiserver on 2 busy cores takes 10-60 s to report ready


def free_port() -> int:
    """A loopback port that was free a moment ago (the server binds it right after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """If pytest itself is killed (no finalizers run), the kernel kills the server too.
    (The signal follows the *thread* that started the server: start it from a long-lived one.)"""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class ServerProcess:
    """One server in its own process group (so stopping it leaves no child behind), its
    stdout+stderr in `log_file`."""

    def __init__(self, name: str, argv: Sequence[str], log_file: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait_s)
                break

    def tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


class ControlPlaneError(RuntimeError):
    pass


def _kubeconfig(server: str, ca_file: Path, user: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "testbed",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": "user"}}],
        "current-context": "testbed",
    }


class ControlPlane:
    """A running control plane. Public attributes: `server` (URL), `ca_file`,
    `admin_kubeconfig`, `log_dir`, `work_dir`, `port`, `kubelet_client` (the certificate the API
    server presents to kubelets)."""

    def __init__(self, work_dir: Path, binaries: Binaries) -> None:
        self.work_dir = work_dir
        self.binaries = binaries
        self.log_dir = work_dir / "logs"
        self.pki_dir = work_dir / "pki"
        self.kubeconfig_dir = work_dir / "kubeconfigs"
        for d in (self.log_dir, self.pki_dir, self.kubeconfig_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.servers: list[ServerProcess] = []
        self._ca = CertificateAuthority(self.pki_dir)
        self.ca_file = self._ca.cert_file
        self._sa_keys = service_account_keys(self.pki_dir)
        self.kubelet_client = self._ca.client("apiserver-kubelet-client", KUBELET_CLIENT_USER)
        self.admin_kubeconfig = self._cert_kubeconfig("admin", "testbed-admin", ("system:masters",))
        self._admin: client.ApiClient | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        try:
            etcd_url = self._start_etcd()
            self._start_apiserver(etcd_url)
            self._start_controller_manager()
            self.wait_for_service_account("default", "default")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        # Reverse order: controllers first, etcd last, so nobody logs a storm of errors.
        for server in reversed(self.servers):
            server.stop()
        shutil.rmtree(self.work_dir / "etcd-data", ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- identities ----------------------------------------------------------------------------

    def _cert_kubeconfig(self, stem: str, user: str, groups: tuple[str, ...] = ()) -> Path:
        pair = self._ca.client(stem, user, groups)
        credentials = {"client-certificate": str(pair.cert), "client-key": str(pair.key)}
        return self._write_kubeconfig(stem, credentials)

    def _write_kubeconfig(self, stem: str, user: dict[str, str]) -> Path:
        path = self.kubeconfig_dir / f"{stem}.kubeconfig"
        path.write_text(yaml.safe_dump(_kubeconfig(self.server, self.ca_file, user)))
        path.chmod(0o600)
        return path

    def serving_certificate(self, stem: str, ips: list[str], dns: list[str]) -> KeyPair:
        """A serving certificate from the cluster CA (which the API server trusts for kubelets)."""
        return self._ca.serving(stem, ips=ips, dns=dns)

    def kubeconfig_for_user(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig authenticating as `user` in `groups` (client certificate)."""
        return self._cert_kubeconfig(f"user-{user.replace(':', '-')}", user, tuple(groups))

    def service_account_token(
        self, namespace: str, name: str, *, expiration_seconds: int = 86400, create: bool = True
    ) -> str:
        """A TokenRequest token for the ServiceAccount (created first when missing)."""
        core = client.CoreV1Api(self.admin_api())
        if create:
            with contextlib.suppress(ApiException):  # 409: exists already
                core.create_namespaced_service_account(
                    namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
                )
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
        )
        response = core.create_namespaced_service_account_token(name, namespace, request)
        return str(response.status.token)

    def kubeconfig_for_service_account(self, namespace: str, name: str, **kwargs: Any) -> Path:
        """A kubeconfig with a token of the ServiceAccount: the identity its RBAC applies to."""
        token = self.service_account_token(namespace, name, **kwargs)
        return self._write_kubeconfig(f"sa-{namespace}-{name}", {"token": token})

    # -- clients -------------------------------------------------------------------------------

    def api_client(self, kubeconfig: Path | None = None) -> client.ApiClient:
        """A new ApiClient for `kubeconfig` (default: admin). The caller closes it."""
        return config.new_client_from_config(config_file=str(kubeconfig or self.admin_kubeconfig))

    def admin_api(self) -> client.ApiClient:
        """A shared admin ApiClient (system:masters), closed by stop()."""
        if self._admin is None:
            self._admin = self.api_client()
        return self._admin

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """os.environ with KUBECONFIG set: for kubectl, helm, or a `schemashift` subprocess."""
        return {**os.environ, "KUBECONFIG": str(kubeconfig or self.admin_kubeconfig)}

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane; raises with its stderr when it fails."""
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise ControlPlaneError("kubectl is not on PATH")
        result = subprocess.run(
            [kubectl, *args],
            env=self.env(kubeconfig),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    def create_namespace(self, name: str) -> str:
        """Create a namespace and wait for its `default` ServiceAccount (pods need it)."""
        core = client.CoreV1Api(self.admin_api())
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        self.wait_for_service_account(name, "default")
        return name

    def wait_for_service_account(self, namespace: str, name: str, timeout: float = 60.0) -> None:
        core = client.CoreV1Api(self.admin_api())

        def exists() -> bool:
            try:
                core.read_namespaced_service_account(name, namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                return False
            return True

        self._wait(f"ServiceAccount {namespace}/{name}", exists, timeout)

    # -- diagnostics ---------------------------------------------------------------------------

    def logs(self, lines: int = 40) -> str:
        """The last lines of each server's log, for a failed test's report."""
        parts = [f"--- {s.name} ({s.log_file}) ---\n{s.tail(lines)}" for s in self.servers]
        return "\n".join(parts)

    # -- servers -------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: Sequence[str]) -> ServerProcess:
        server = ServerProcess(name, argv, self.log_dir / f"{name}.log")
        self.servers.append(server)
        server.start()
        return server

    def _wait(
        self,
        what: str,
        ready: Callable[[], bool],
        timeout: float = READY_TIMEOUT_S,
        server: ServerProcess | None = None,
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server is not None and not server.alive:
                raise ControlPlaneError(f"{server.name} exited while starting:\n{server.tail()}")
            with contextlib.suppress(OSError, ApiException):
                if ready():
                    return
            time.sleep(0.25)
        raise ControlPlaneError(f"{what} not ready after {timeout:.0f}s\n{self.logs()}")

    def _start_etcd(self) -> str:
        client_port, peer_port = free_port(), free_port()
        url, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
        etcd = self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=testbed",
                f"--data-dir={self.work_dir / 'etcd-data'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=testbed={peer}",
                "--unsafe-no-fsync=true",  # test data: durability buys nothing, fsync costs seconds
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return bool(json.load(response).get("health") == "true")

        self._wait("etcd", healthy, server=etcd)
        return url

    def _start_apiserver(self, etcd_url: str) -> None:
        serving = self._ca.serving(
            "apiserver",
            ips=["127.0.0.1", SERVICE_IP],
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
        )
        apiserver = self._spawn("kube-apiserver", self._apiserver_argv(etcd_url, serving))
        context = ssl.create_default_context(cafile=str(self.ca_file))

        def ready() -> bool:
            with urllib.request.urlopen(f"{self.server}/readyz", timeout=5, context=context) as r:
                return bool(r.status == 200)

        self._wait("kube-apiserver /readyz", ready, server=apiserver)

    def _apiserver_argv(self, etcd_url: str, serving: KeyPair) -> list[str]:
        return [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.work_dir / 'apiserver-certs'}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={self.ca_file}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={self._sa_keys.cert}",
            f"--service-account-signing-key-file={self._sa_keys.key}",
            # No real endpoints behind the `kubernetes` Service: stop the reconciler rewriting it.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            f"--kubelet-client-certificate={self.kubelet_client.cert}",
            f"--kubelet-client-key={self.kubelet_client.key}",
            f"--kubelet-certificate-authority={self.ca_file}",
            # The node's Hostname address does not resolve here; its InternalIP does.
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false",
        ]

    def _start_controller_manager(self) -> None:
        # Its own identity, and one ServiceAccount per controller (as kubeadm runs it), so each
        # controller works under its bootstrap RBAC role, as in a real cluster.
        kubeconfig = self._cert_kubeconfig("controller-manager", "system:kube-controller-manager")
        port = free_port()
        kcm = self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self._sa_keys.key}",
                f"--root-ca-file={self.ca_file}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.work_dir / 'kcm-certs'}",
                "--profiling=false",
            ],
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # it serves a self-signed cert; we only probe health

        def healthy() -> bool:
            url = f"https://127.0.0.1:{port}/healthz"
            with urllib.request.urlopen(url, timeout=5, context=insecure) as response:
                return bool(response.status == 200)

        self._wait("kube-controller-manager /healthz", healthy, server=kcm)
