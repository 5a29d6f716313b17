"""A webhook receiver on loopback for the alert tests: records every POST it gets and answers
500 while told to refuse (everything, or one path), or for the first ``fail_each`` POSTs of each
body, else 200."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclasses.dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int  # what the receiver answered

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    def signed_by(self, secret: str) -> bool:
        expected = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("x-pouch-signature", ""), expected)


class Receiver:
    def __init__(self):
        self.refusing = False
        self.refused_path: str | None = None
        self.fail_each = 0
        self.delay = 0.0
        self._received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                time.sleep(receiver.delay)
                status = receiver._answer(self.path, body)
                with receiver._lock:
                    receiver._received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                       body, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def _answer(self, path: str, body: bytes) -> int:
        if self.refusing or path == self.refused_path:
            return 500
        if self.fail_each:
            with self._lock:
                earlier = sum(r.body == body for r in self._received)
            if earlier < self.fail_each:
                return 500
        return 200

    def __enter__(self) -> Receiver:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def accepted(self, path: str | None = None) -> list[Received]:
        return [r for r in self.received if r.status == 200 and (path is None or r.path == path)]

    def wait_for(self, condition, timeout: float = 20.0) -> None:
        """Wait until ``condition(self)`` holds (the gateway delivers in the background)."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver: condition not met; received {self.received}")
            time.sleep(0.02)
