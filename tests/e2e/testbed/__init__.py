"""A real Kubernetes control plane for end-to-end tests, and a process kubelet.

Binaries: ``python tools/build_testbed.py`` builds etcd 3.6, kube-apiserver and
kube-controller-manager (the release pinned in ``tools/k8sbin/go.mod``) and helm from Go modules
into ``${SCHEMASHIFT_ENVTEST_DIR:-~/.cache/schemashift/envtest}/<version>/``; binaries in
``$KUBEBUILDER_ASSETS`` take precedence. Without them the fixtures skip, unless
``SCHEMASHIFT_REQUIRE_TESTBED=1`` (CI), where they fail.

Fixtures (``tests/e2e/conftest.py``):

``control_plane`` (session) — a :class:`ControlPlane`: etcd, kube-apiserver (TLS, client-cert
and ServiceAccount-token authentication, ``--authorization-mode=Node,RBAC``) and
kube-controller-manager (Job, garbage collector, TTL-after-finished, ServiceAccount + token,
root-CA publisher, namespace, Deployment, ReplicaSet controllers; each controller under its own
ServiceAccount, as kubeadm runs it). Useful members:

- ``server`` (URL), ``port``, ``ca_file``, ``admin_kubeconfig`` (system:masters), ``log_dir``,
  ``kubelet_client`` (the client certificate kube-apiserver presents to kubelets)
- ``kubeconfig_for_service_account(namespace, name) -> Path`` — a TokenRequest token of that
  ServiceAccount (created when missing): run the operator with it to test its RBAC
- ``service_account_token(namespace, name)``, ``kubeconfig_for_user(user, groups)``
- ``kubectl(*args, kubeconfig=None, input=None, check=True)``, ``env(kubeconfig=None)`` (for
  helm / subprocesses: ``KUBECONFIG`` set), ``api_client(kubeconfig=None)``, ``admin_api()``
- ``create_namespace(name)`` (waits for its ``default`` ServiceAccount), ``logs()``
- ``binaries.helm`` — the helm binary built with the others (``None`` if absent)

``kubelet`` (session) — a :class:`ProcessKubelet` running pods as local processes; see
:mod:`tests.e2e.testbed.kubelet` for exactly what it models and how a process finds its
ServiceAccount token (the usual in-cluster path, via a private mount namespace) and its
termination-message file. ``kubelet.extra_env`` is added to every pod process started later
(like an image's ENV); ``kubelet.pod_log(namespace, name)`` is the process output, which
``kubectl logs`` / pods/log also serve through the API server (the kubelet API's container-log
endpoint, mutual TLS: :mod:`tests.e2e.testbed.kubelet_api`).

``admin_api`` (session) — a ``kubernetes.client.ApiClient`` as admin.

``namespace`` (function) — a fresh namespace, deleted after the test.

When a test fails, the tails of every server's log, the kubelet's log and the pods' output are
attached to its report; the full logs stay in ``control_plane.log_dir`` (under pytest's basetemp).
Other session fixtures can add their own with ``fixtures.add_diagnostics(callable)`` /
``fixtures.remove_diagnostics(callable)``.

By hand, outside pytest: ``python -m tests.e2e.testbed`` starts the same bed and prints the
``KUBECONFIG`` to export; Ctrl-C stops it.
"""

from .binaries import Binaries, BinariesMissing, locate
from .controlplane import ControlPlane, ControlPlaneError
from .kubelet import ProcessKubelet
from .wait import wait_for

__all__ = [
    "Binaries",
    "BinariesMissing",
    "ControlPlane",
    "ControlPlaneError",
    "ProcessKubelet",
    "locate",
    "wait_for",
]
