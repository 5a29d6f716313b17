"""The server side of a WebSocket on one of a fake's connections (a GET with ``Upgrade:
websocket``), for fakes of APIs served over WebSocket as well as HTTP (the Responses API).

The handshake is answered by hand and the frames are ``wsproto``'s (mitmproxy's own WebSocket
library); no extension is negotiated, so no message is compressed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
from collections.abc import Iterator

from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455


def is_upgrade(method: str, headers: dict[str, str]) -> bool:
    return method == "GET" and headers.get("upgrade", "").lower() == "websocket"


class Session:
    """One accepted WebSocket: ``messages()`` yields the client's text messages until it closes."""

    def __init__(self, handler, headers: dict[str, str], response_headers: dict[str, str]):
        self._handler = handler
        self._ws = Connection(ConnectionType.SERVER)
        self.closed = False
        accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + _GUID).digest()).decode()
        handler.send_response(101, "Switching Protocols")
        for name, value in {"upgrade": "websocket", "connection": "Upgrade", "sec-websocket-accept": accept,
                            **response_headers}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.flush()

    def messages(self) -> Iterator[str | bytes]:
        parts: list = []
        while not self.closed:
            data = self._read()
            self._ws.receive_data(data or None)
            for event in self._ws.events():
                if isinstance(event, TextMessage | BytesMessage):
                    parts.append(event.data)
                    if event.message_finished:
                        yield ("" if isinstance(event, TextMessage) else b"").join(parts)
                        parts = []
                elif isinstance(event, Ping):
                    self._write(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    with contextlib.suppress(Exception):
                        self._write(self._ws.send(event.response()))
                    self.closed = True
            if not data:
                self.closed = True

    def send(self, text: str) -> bool:
        """Send a text message; False once the client is gone."""
        try:
            self._write(self._ws.send(TextMessage(text)))
            return True
        except (OSError, ValueError):
            self.closed = True
            return False

    def abort(self) -> None:
        """Cut the connection as a server dying would: no close frame, no TLS close."""
        self.closed = True
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self._handler.connection, socket.SHUT_RDWR)

    def _read(self) -> bytes:
        try:
            return self._handler.rfile.read1(65536)
        except (OSError, ValueError):
            return b""

    def _write(self, data: bytes) -> None:
        self._handler.wfile.write(data)
        self._handler.wfile.flush()
