"""pytest fixtures and the failure-report hook of the test bed (see tests/e2e/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
from kubernetes import client

from . import binaries
from .controlplane import ControlPlane
from .kubelet import ProcessKubelet

# Set in CI: a missing build is an error there, not a skip.
REQUIRE_ENV = "SCHEMASHIFT_REQUIRE_TESTBED"

_diagnostics: list[Callable[[], str]] = []


def add_diagnostics(collect: Callable[[], str]) -> None:
    """Have a failed test's report include `collect()` (e.g. the tail of a process's log)."""
    _diagnostics.append(collect)


def remove_diagnostics(collect: Callable[[], str]) -> None:
    if collect in _diagnostics:
        _diagnostics.remove(collect)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager for the whole session."""
    try:
        found = binaries.locate()
    except binaries.BinariesMissing as exc:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    plane = ControlPlane(tmp_path_factory.mktemp("testbed"), found)
    plane.start()
    add_diagnostics(plane.logs)
    try:
        yield plane
    finally:
        remove_diagnostics(plane.logs)
        plane.stop()


@pytest.fixture(scope="session")
def kubelet(control_plane: ControlPlane) -> Iterator[ProcessKubelet]:
    """The process kubelet; set `kubelet.extra_env[...]` to give every later pod a variable."""
    runner = ProcessKubelet(control_plane)
    runner.start()
    add_diagnostics(runner.logs)
    try:
        yield runner
    finally:
        remove_diagnostics(runner.logs)
        runner.stop()


@pytest.fixture(scope="session")
def admin_api(control_plane: ControlPlane) -> client.ApiClient:
    """A kubernetes ApiClient authenticated as the admin (system:masters)."""
    return control_plane.admin_api()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace (with its `default` ServiceAccount) per test, deleted afterwards."""
    safe = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = control_plane.create_namespace(f"t-{safe}-{os.urandom(3).hex()}")
    yield name
    client.CoreV1Api(control_plane.admin_api()).delete_namespace(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, Any, None]:
    """On failure, attach the servers' and the kubelet's log tails to the test report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _diagnostics:
        for collect in _diagnostics:
            report.sections.append(("test bed logs", collect()))
