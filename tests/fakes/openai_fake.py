"""A fake api.openai.com on loopback, for end-to-end tests of the gateway and for benchmarks.

    with FakeOpenAI(tls_dir=tmp_path) as fake:
        client = openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-test",
                               http_client=httpx2.Client(verify=ssl.create_default_context(cafile=fake.ca_path)))

Each request is recorded in ``fake.requests`` and answered per its ``x-fake-*`` headers, else
per ``fake.behaviour`` (see ``Controls``); what it answers lives in ``openai_shapes``.

As a process (benchmarks): ``python -m tests.fakes.openai_fake --port 0 --plain --print-url``.
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
import uuid
from dataclasses import dataclass, fields
from pathlib import Path

from .openai_shapes import ROUTES, Controls, Event, error_body
from .tls import PROVIDER_HOSTS, write_tls_files

_FLAGS_OFF = ("", "0", "false", "no")


def parse_controls(headers: dict[str, str], behaviour: dict) -> Controls:
    """``Controls`` from ``x-fake-<name>`` headers (``chunk_delay``: ``x-fake-chunk-delay``), each
    overriding ``behaviour[name]``. Raises ``ValueError`` for a value that does not parse."""
    unknown = set(behaviour) - {f.name for f in fields(Controls)}
    if unknown:
        raise ValueError(f"fake: unknown behaviour keys {sorted(unknown)}")
    values = dict(behaviour)
    for f in fields(Controls):
        name = "x-fake-" + f.name.replace("_", "-")
        header = headers.get(name)
        if header is None:
            continue
        try:
            if f.name == "usage":
                values[f.name] = json.loads(header)
            elif f.name == "no_usage":
                values[f.name] = header.strip().lower() not in _FLAGS_OFF
            elif f.name == "reply":
                values[f.name] = header
            else:
                values[f.name] = (float if "delay" in f.name else int)(header)
        except ValueError as e:
            raise ValueError(f"fake: bad {name} header {header!r}: {e}") from e
    if values.get("usage") is not None and not isinstance(values["usage"], dict):
        raise ValueError("fake: usage must be a JSON object")
    if min(values.get("delay", 0), values.get("chunk_delay", 0)) < 0:
        raise ValueError("fake: delays must not be negative")
    return Controls(**values)


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
        path = self.path.split("?", 1)[0]
        fake = self.server.fake
        fake._record(RecordedRequest(self.command, self.path, headers, body, time.time()))
        try:
            controls = parse_controls(headers, fake.behaviour)
        except ValueError as e:
            return self._send_json(400, error_body(400, str(e)), started)
        time.sleep(controls.delay)
        if controls.status and controls.status >= 400:
            message = f"fake: HTTP {controls.status} as requested by x-fake-status"
            return self._send_json(controls.status, error_body(controls.status, message), started)
        route = ROUTES.get((self.command, path))
        if route is None:
            return self._send_json(404, error_body(404, f"Invalid URL ({self.command} {path})"), started)
        try:
            answer = route(body, controls)
        except ValueError as e:  # what OpenAI would refuse: a malformed body
            return self._send_json(400, error_body(400, str(e)), started)
        if isinstance(answer, dict):
            return self._send_json(200, answer, started)
        self._send_stream(answer, controls, started)

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

    def _send_head(self, status: int, content_type: str, started: float, length: int | None = None):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        self.send_header("openai-processing-ms", str(int((time.monotonic() - started) * 1000)))
        self.send_header("openai-version", "2020-10-01")
        if length is None:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(length))
        self.end_headers()

    def _send_json(self, status: int, obj: dict, started: float):
        data = json.dumps(obj).encode()
        self._send_head(status, "application/json", started, len(data))
        self.wfile.write(data)

    def _send_stream(self, events: list[Event], controls: Controls, started: float):
        # Chunked, not Connection: close: clients keep streaming connections alive too.
        self._send_head(200, "text/event-stream; charset=utf-8", started)
        sent_content = 0
        for index, event in enumerate(events):
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

    def __init__(self, fake: FakeOpenAI, address, ssl_context: ssl.SSLContext | None):
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


class FakeOpenAI:
    """A threaded HTTP/1.1 fake of api.openai.com; HTTPS with its own CA unless ``plain``.

    The port is bound on construction (``port=0``: an ephemeral one); ``start()`` (or ``with``)
    serves, ``stop()`` closes the listener and every open connection.
    """

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
                self._tempdir = tempfile.TemporaryDirectory(prefix="fake-openai-tls-")
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

    def start(self) -> FakeOpenAI:
        # A short poll interval makes stop() prompt: shutdown() waits for the serve loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
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

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Serve a fake api.openai.com until killed.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (the default): an ephemeral port")
    parser.add_argument("--plain", action="store_true", help="plain HTTP instead of HTTPS")
    parser.add_argument("--tls-dir", help="where to write ca.pem, cert.pem, key.pem (default: a temp dir)")
    parser.add_argument(
        "--print-url", action="store_true", help="print the base URL on stdout (then, with TLS, the CA's path)"
    )
    args = parser.parse_args(argv)
    fake = FakeOpenAI(tls_dir=args.tls_dir, plain=args.plain, host=args.host, port=args.port, record=False)
    # Exit through `with` on SIGTERM too, so a temporary TLS directory is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with fake:
        if args.print_url:
            print(fake.url, *([fake.ca_path] if fake.ca_path else []), sep="\n", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
