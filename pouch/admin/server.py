"""The admin API's listener: ``HOST:PORT`` parsed, served on the running event loop, stopped."""

from __future__ import annotations

import ipaddress
import logging
from typing import NamedTuple

import tornado.httpserver
import tornado.netutil

from pouch.admin.app import make_app
from pouch.admin.auth import Authenticator

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # bytes: a key's JSON is well under a kilobyte


class Listen(NamedTuple):
    host: str
    port: int

    def url(self, port: int | None = None) -> str:
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port if port is None else port}"

    def bound(self, port: int | None = None) -> str:
        """Where it really listens, as an operator should read it: ``0.0.0.0:8082 (every
        interface)``, ``127.0.0.1:8082``."""
        port = self.port if port is None else port
        if self.host in ("", "0.0.0.0", "::"):
            return f"{'[::]' if self.host == '::' else '0.0.0.0'}:{port} (every interface)"
        return f"{f'[{self.host}]' if ':' in self.host else self.host}:{port}"

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


def parse_listen(text: str) -> Listen | None:
    """``HOST:PORT`` (``[::1]:8082`` for IPv6, port 0 for any free one), or ``off`` (None)."""
    text = text.strip()
    if text.lower() == "off":
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r}: give HOST:PORT (127.0.0.1:8082, [::1]:8082, 0.0.0.0:8082) or off")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return Listen(host, int(port))


class AdminServer:
    """One listener at a time; ``start`` must run on the event loop that will serve it."""

    def __init__(self, auth: Authenticator | None = None):
        self.auth = auth  # None: a fresh one (with its own count of wrong tokens) per start
        self._server: tornado.httpserver.HTTPServer | None = None
        self.listen: Listen | None = None
        self.port: int | None = None  # the port bound (port 0 picks one)

    def start(self, listen: Listen) -> None:
        sockets = tornado.netutil.bind_sockets(listen.port, listen.host or None)
        app = make_app(self.auth)
        app.settings["loopback_only"] = listen.loopback  # then the Host header must name loopback too
        self._server = tornado.httpserver.HTTPServer(app, max_body_size=MAX_BODY)
        self._server.add_sockets(sockets)
        self.listen, self.port = listen, sockets[0].getsockname()[1]
        if not listen.loopback:
            log.warning("pouch admin: listening on %s, beyond this host, on plain HTTP: admin tokens cross the "
                        "network unencrypted; put a TLS proxy in front of it or listen on 127.0.0.1", self.bound)

    @property
    def url(self) -> str:
        """How this host reaches it (127.0.0.1 for every interface)."""
        return self.listen.url(self.port) if self.listen else ""

    @property
    def bound(self) -> str:
        """Where it listens (``0.0.0.0:8082 (every interface)``)."""
        return self.listen.bound(self.port) if self.listen else ""

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
            self.listen = self.port = None
