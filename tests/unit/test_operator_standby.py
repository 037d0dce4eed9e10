"""A standby replica answers the liveness probe on kopf's endpoint, and frees it for kopf."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from schemashift.operator.standby import serving_liveness


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_standby_serves_the_probe_path_only_and_then_frees_the_port() -> None:
    port = free_port()
    with serving_liveness(f"http://127.0.0.1:{port}/healthz"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        assert missing.value.code == 404
    with socket.socket() as again:  # kopf (aiohttp, SO_REUSEADDR as on every Unix) binds it next
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()


def test_no_endpoint_serves_nothing() -> None:
    with serving_liveness(None):
        pass
