"""The process kubelet's HTTPS API: the container-log endpoint the API server's pods/log proxies to.

``GET /containerLogs/{namespace}/{pod}/{container}`` with the query the API server forwards:
``tailLines``, ``limitBytes``, ``follow`` (streams until the process exits), ``previous`` (the
instance before the last restart). ``timestamps``, ``sinceSeconds`` and ``sinceTime`` need a
timestamp per line, which a process writing straight into its log file does not give: they are
refused with 400 rather than silently ignored.

As a kubelet started with ``--client-ca-file`` and webhook authorization would, the server
requires a client certificate signed by the test bed's CA; of those it serves only the API
server's kubelet client identity (anyone else: 403).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

from .certs import KeyPair

FOLLOW_POLL_S = 0.1
HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 60.0
CHUNK_BYTES = 64 * 1024
UNMODELLED_QUERY = ("timestamps", "sinceSeconds", "sinceTime")
_PATH = re.compile(r"/containerLogs/([^/]+)/([^/]+)/([^/]+)")
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}  # Go's strconv.ParseBool

log = logging.getLogger("schemashift.testbed.kubelet")


class LogUnavailable(Exception):
    """The kubelet cannot serve this log: an HTTP status and the message a kubelet gives."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ContainerLog:
    """Bytes `start`..`end` of `path` are one container instance's output; `end` is None while
    that instance may still write (`running()`)."""

    path: Path
    start: int
    end: int | None
    running: Callable[[], bool]


def instance_log(
    path: Path,
    starts: Sequence[int],
    running: Callable[[], bool],
    *,
    container: str,
    pod: str,
    previous: bool,
) -> ContainerLog:
    """The current (or previous) instance of a container whose instances append to one file,
    instance i starting at byte `starts[i]`."""
    if previous:
        if len(starts) < 2:
            raise LogUnavailable(
                400, f'previous terminated container "{container}" in pod "{pod}" not found'
            )
        return ContainerLog(path, starts[-2], starts[-1], lambda: False)
    if not starts:
        raise LogUnavailable(
            400, f'container "{container}" in pod "{pod}" is waiting to start: ContainerCreating'
        )
    return ContainerLog(path, starts[-1], None, running)


LogLookup = Callable[[str, str, str, bool], ContainerLog]
"""(namespace, pod, container, previous) -> its log; raises LogUnavailable."""


@dataclass(frozen=True)
class LogQuery:
    follow: bool = False
    previous: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None

    @classmethod
    def parse(cls, query: str) -> LogQuery:
        values = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        for name in UNMODELLED_QUERY:
            if name in values:
                raise LogUnavailable(400, f"{name} is not modelled by the process kubelet")
        return cls(
            follow=values.get("follow") in _TRUE,
            previous=values.get("previous") in _TRUE,
            tail_lines=_non_negative(values, "tailLines"),
            limit_bytes=_non_negative(values, "limitBytes"),
        )


def _non_negative(values: dict[str, str], name: str) -> int | None:
    if name not in values:
        return None
    try:
        number = int(values[name])
    except ValueError:
        number = -1
    if number < 0:
        raise LogUnavailable(400, f"{name} must be a non-negative integer")
    return number


def _tail_start(source: ContainerLog, lines: int) -> int:
    """The offset where the last `lines` lines of the instance begin (a partial last line
    counts as a line, as for the kubelet)."""
    with source.path.open("rb") as f:
        f.seek(source.start)
        data = f.read() if source.end is None else f.read(source.end - source.start)
    kept = data.splitlines(keepends=True)[-lines:] if lines else []
    return source.start + len(data) - sum(len(line) for line in kept)


def stream_log(
    source: ContainerLog, query: LogQuery, out: io.BufferedIOBase, abandoned: Callable[[], bool]
) -> None:
    """Write the instance's output to `out`; with `follow`, until the process exits (or
    `abandoned()`: the server stops or the reader went away)."""
    position = source.start if query.tail_lines is None else _tail_start(source, query.tail_lines)
    budget = query.limit_bytes
    with source.path.open("rb") as f:
        f.seek(position)
        while budget is None or budget > 0:
            alive = source.running()  # sampled before reading: an empty read after exit is EOF
            want = CHUNK_BYTES if budget is None else min(CHUNK_BYTES, budget)
            if source.end is not None:
                want = min(want, source.end - f.tell())
            chunk = f.read(want) if want > 0 else b""
            if chunk:
                out.write(chunk)
                out.flush()
                budget = None if budget is None else budget - len(chunk)
            elif not (query.follow and alive) or abandoned():
                return
            else:
                time.sleep(FOLLOW_POLL_S)


class _Handler(BaseHTTPRequestHandler):
    server: KubeletServer
    server_version = "process-kubelet"

    def do_GET(self) -> None:
        user = _common_name(self.connection)
        if user != self.server.allowed_user:
            self._error(
                403, f"Forbidden (user={user}, verb=get, resource=nodes, subresource=proxy)"
            )
            return
        url = urlsplit(self.path)
        match = _PATH.fullmatch(url.path)
        if match is None:
            self._error(404, "404 page not found")
            return
        namespace, pod, container = (unquote(part) for part in match.groups())
        try:
            query = LogQuery.parse(url.query)
            source = self.server.lookup(namespace, pod, container, query.previous)
        except LogUnavailable as exc:
            self._error(exc.status, str(exc))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        # HTTP/1.0 without Content-Length: the body ends when the connection closes.
        with contextlib.suppress(OSError):
            stream_log(source, query, self.wfile, self._abandoned)

    def _abandoned(self) -> bool:
        """The server stops, or the peer closed: after its request it sends nothing, so
        anything readable is the end of the connection."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        return self.server.stopping.is_set() or bool(readable)

    def _error(self, status: int, message: str) -> None:
        body = message.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("kubelet api: %s", format % args)


def _common_name(connection: object) -> str | None:
    """The client certificate's CN: the user, as Kubernetes reads certificates."""
    der = (
        connection.getpeercert(binary_form=True) if isinstance(connection, ssl.SSLSocket) else None
    )
    if der is None:
        return None
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


class KubeletServer(ThreadingHTTPServer):
    """The kubelet API on 127.0.0.1:`port`, served from a daemon thread."""

    daemon_threads = True

    def __init__(
        self,
        *,
        serving: KeyPair,
        client_ca: Path,
        allowed_user: str,
        lookup: LogLookup,
    ) -> None:
        self.allowed_user = allowed_user
        self.lookup = lookup
        self.stopping = threading.Event()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_cert_chain(serving.cert, serving.key)
        super().__init__(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, name="kubelet-api", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread.is_alive():  # shutdown() waits for a serve_forever() that must be running
            self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS handshake in the request's own thread, so a slow client blocks no other."""
        assert isinstance(request, socket.socket)
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except OSError as exc:  # ssl.SSLError included: no or an untrusted client certificate
            log.info("kubelet api: refused %s: %s", client_address[0], exc)
            return
        try:
            tls.settimeout(IDLE_TIMEOUT_S)  # a peer that stops reading cannot hold a thread
            super().finish_request(tls, client_address)
        finally:
            with contextlib.suppress(OSError):
                tls.close()
