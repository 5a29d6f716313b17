"""What every fake provider shares: a threaded HTTP/1.1 server on loopback (HTTPS with its own CA
unless plain), request recording, obeying the ``x-fake-*`` controls (``controls``), chunked
streaming with mid-stream aborts, and the ``python -m tests.fakes.<name>_fake`` command line.

A provider's fake subclasses ``FakeServer`` and implements ``answer`` (what to send) and
``error`` (its error shape); its ``*_shapes`` module builds the bodies as pure functions.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Self

from . import websocket
from .controls import Controls, parse_controls
from .tls import PROVIDER_HOSTS, write_tls_files


class Event(NamedTuple):
    data: bytes  # one piece of a streamed body, written as one chunk (an SSE event, blank line included)
    is_content: bool  # counts towards Controls.abort_after


class Request(NamedTuple):
    """What a fake's ``answer`` gets."""

    method: str
    path: str  # without the query
    query: dict[str, str]  # the last value of each parameter
    headers: dict[str, str]  # lower-case names
    body: object  # the parsed JSON, or the raw bytes when it is not JSON (b"" for none)
    id: str  # fresh hex per request, for request-id headers and the error bodies that repeat them


class JSON(NamedTuple):
    body: object
    status: int = 200


class Stream(NamedTuple):
    events: list[Event]
    content_type: str = "text/event-stream; charset=utf-8"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-case names
    body: object  # the parsed JSON, or the raw bytes when it is not JSON (b"" for none)
    timestamp: float  # time.time() when the body had been read


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' and mitmproxy's pools expect
    disable_nagle_algorithm = True  # small SSE writes would otherwise wait for delayed ACKs
    server: _Server

    def log_message(self, format, *args):
        pass  # fake.requests is the log; stderr noise would bury test output

    def do_GET(self):
        self._serve()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def _serve(self):
        started = time.monotonic()
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else b""
        except ValueError:
            body = raw
        headers = {name.lower(): value for name, value in self.headers.items()}
        path, _, query = self.path.partition("?")
        request = Request(self.command, path, dict(urllib.parse.parse_qsl(query)), headers, body, uuid.uuid4().hex)
        fake = self.server.fake
        fake._record(RecordedRequest(self.command, self.path, headers, body, time.time()))
        try:
            controls = parse_controls(headers, fake.behaviour)
        except ValueError as e:
            return self._send(fake.error(request, 400, str(e)), request, started)
        time.sleep(controls.delay)
        if controls.status and controls.status >= 400:
            message = f"fake: HTTP {controls.status} as requested by x-fake-status"
            return self._send(fake.error(request, controls.status, message), request, started)
        if websocket.is_upgrade(self.command, headers) and fake.serves_websocket(path):
            self.close_connection = True  # the connection is the socket's until it closes
            return fake.websocket(websocket.Session(self, headers, fake.response_headers(request, started)), request)
        try:
            answer = fake.answer(request, controls)
        except ValueError as e:  # what the provider would refuse: a malformed body
            answer = fake.error(request, 400, str(e))
        self._send(answer, request, started, controls)

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _send(self, answer: JSON | Stream, request: Request, started: float, controls: Controls = Controls()):
        if isinstance(answer, Stream):
            return self._send_stream(answer, request, started, controls)
        data = json.dumps(answer.body).encode()
        self._send_head(answer.status, self.server.fake.json_type, request, started, len(data))
        self.wfile.write(data)

    def _send_head(self, status: int, content_type: str, request: Request, started: float, length: int | None):
        self.send_response(status)
        self.send_header("content-type", content_type)
        for name, value in self.server.fake.response_headers(request, started).items():
            self.send_header(name, value)
        if length is None:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(length))
        self.end_headers()

    def _send_stream(self, stream: Stream, request: Request, started: float, controls: Controls):
        # Chunked, not Connection: close: clients keep streaming connections alive too.
        self._send_head(200, stream.content_type, request, started, None)
        sent_content = 0
        for index, event in enumerate(stream.events):
            if controls.abort_after is not None and sent_content >= controls.abort_after:
                # An upstream dying mid-stream: no terminating chunk, no TLS close_notify.
                # socket.socket.shutdown, because SSLSocket.shutdown would first drop TLS state.
                socket.socket.shutdown(self.connection, socket.SHUT_RDWR)
                self.close_connection = True
                return
            if index and controls.chunk_delay:
                time.sleep(controls.chunk_delay)
            self.wfile.write(f"{len(event.data):x}\r\n".encode() + event.data + b"\r\n")
            sent_content += event.is_content
        self.wfile.write(b"0\r\n\r\n")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a connection thread must never keep the test process alive
    block_on_close = False  # stop() must not wait for idle keep-alive connections
    request_queue_size = 256  # bursts of 100+ concurrent connections

    def __init__(self, fake: FakeServer, address, ssl_context: ssl.SSLContext | None):
        self.fake = fake
        self.ssl_context = ssl_context
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, on the connection's own thread, so a slow or failing
        # handshake never stalls accept() for the other connections.
        with contextlib.suppress(OSError):  # a client that gave up (or distrusts our CA)
            if self.ssl_context:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            with self.connections_lock:
                self.connections.add(request)
            try:
                super().finish_request(request, client_address)
            finally:
                with self.connections_lock:
                    self.connections.discard(request)
                self.shutdown_request(request)

    def close_connections(self):
        with self.connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(connection, socket.SHUT_RDWR)  # wakes its blocked thread


class FakeServer:
    """A threaded HTTP/1.1 fake provider; HTTPS with its own CA unless ``plain``.

    The port is bound on construction (``port=0``: an ephemeral one); ``start()`` (or ``with``)
    serves, ``stop()`` closes the listener and every open connection.
    """

    name = "provider"  # names its thread and temporary TLS directory
    plays = "a provider"  # the host it stands in for, for the command line's help
    json_type = "application/json"

    def __init__(self, *, tls_dir: Path | str | None = None, plain: bool = False, host: str = "127.0.0.1",
                 port: int = 0, behaviour: dict | None = None, hosts=PROVIDER_HOSTS, record: bool = True):
        self.record = record  # off for long benchmarks, whose request log would only grow
        self.behaviour: dict = dict(behaviour or {})  # Controls field -> value, when no header says
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._tempdir = None
        self.tls = None
        context = None
        if not plain:
            if tls_dir is None:
                self._tempdir = tempfile.TemporaryDirectory(prefix=f"fake-{self.name}-tls-")
                tls_dir = self._tempdir.name
            self.tls = write_tls_files(tls_dir, hosts)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.tls.cert, self.tls.key)
            context.set_alpn_protocols(["http/1.1"])  # a client offering h2 must fall back
        self._server = _Server(self, (host, port), context)
        self.host, self.port = self._server.server_address[:2]
        self.url = f"{'http' if plain else 'https'}://{self.host}:{self.port}"
        self.ca_path: Path | None = self.tls.ca_cert if self.tls else None
        self._thread: threading.Thread | None = None

    def answer(self, request: Request, controls: Controls) -> JSON | Stream:
        """The answer to ``request``; raise ``ValueError`` for a body the provider refuses (400)."""
        raise NotImplementedError

    def error(self, request: Request, status: int, message: str) -> JSON:
        """An error answer in the provider's shape."""
        raise NotImplementedError

    def response_headers(self, request: Request, started: float) -> dict[str, str]:
        """Headers the provider adds to every answer (``started``: ``time.monotonic()``)."""
        return {}

    def serves_websocket(self, path: str) -> bool:
        """Whether an upgrade to WebSocket at ``path`` is accepted (``websocket`` serves it)."""
        return False

    def websocket(self, session: websocket.Session, request: Request) -> None:
        """Serve an accepted WebSocket until the client closes it (on the connection's thread)."""
        raise NotImplementedError

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def _record(self, request: RecordedRequest):
        if not self.record:
            return
        with self._lock:
            self._requests.append(request)

    def reset(self):
        """Forget recorded requests and ``behaviour``."""
        with self._lock:
            self._requests.clear()
        self.behaviour.clear()

    def start(self) -> Self:
        # A short poll interval makes stop() prompt: shutdown() waits for the serve loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self):
        if self._thread:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self._server.close_connections()
        if self._tempdir:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def run_cli(fake_class: type[FakeServer], argv=None):
    """``python -m tests.fakes.<name>_fake``: serve until killed, recording nothing, so a long
    benchmark does not grow its memory."""
    parser = argparse.ArgumentParser(description=f"Serve a fake {fake_class.plays} until killed.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (the default): an ephemeral port")
    parser.add_argument("--plain", action="store_true", help="plain HTTP instead of HTTPS")
    parser.add_argument("--tls-dir", help="where to write ca.pem, cert.pem, key.pem (default: a temp dir)")
    parser.add_argument(
        "--print-url", action="store_true", help="print the base URL on stdout (then, with TLS, the CA's path)"
    )
    args = parser.parse_args(argv)
    fake = fake_class(tls_dir=args.tls_dir, plain=args.plain, host=args.host, port=args.port, record=False)
    # Exit through `with` on SIGTERM too, so a temporary TLS directory is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with fake:
        if args.print_url:
            print(fake.url, *([fake.ca_path] if fake.ca_path else []), sep="\n", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
