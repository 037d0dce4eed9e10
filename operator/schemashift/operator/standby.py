"""While a replica waits for the Lease, it is alive: it answers the liveness probe itself (kopf's
endpoint only exists once kopf runs), so the kubelet does not restart healthy standbys."""

from __future__ import annotations

import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager


class _Healthz(http.server.BaseHTTPRequestHandler):
    path_served = "/healthz"

    def do_GET(self) -> None:
        ok = self.path.split("?", 1)[0] == self.path_served
        body = b'{"standby": true}' if ok else b"{}"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None  # probes every few seconds are not news


@contextmanager
def serving_liveness(endpoint: str | None) -> Iterator[None]:
    """Serve `endpoint` (kopf's --liveness URL) until the block ends, then free its port."""
    if not endpoint:
        yield
        return
    url = urllib.parse.urlsplit(endpoint)
    handler = type("Healthz", (_Healthz,), {"path_served": url.path or "/"})
    server = http.server.ThreadingHTTPServer((url.hostname or "0.0.0.0", url.port or 80), handler)
    thread = threading.Thread(target=server.serve_forever, name="standby-liveness", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
