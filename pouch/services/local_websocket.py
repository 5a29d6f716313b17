"""Where a mock key's Responses WebSocket goes instead of the provider: a WebSocket server on
loopback, in the gateway's own process, that accepts every handshake and says nothing.

mitmproxy relays a WebSocket only between two live connections (an addon cannot answer the
upgrade itself: the frames it forwards would have nowhere to go), so the upstream link sends a
mock socket's handshake here, without any credential. The websocket link drops every message
the client sends on such a socket and answers each ``response.create`` with mock events it
injects; this server only completes the handshake, answers pings and closes when asked. Nothing
of a mock key's socket reaches the provider, not even the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref

from mitmproxy import http
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request
from wsproto.utilities import RemoteProtocolError

log = logging.getLogger(__name__)


class LocalAnswerer:
    def __init__(self):
        self._server: asyncio.Server | None = None
        self._starting: asyncio.Lock | None = None
        self._flows: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()

    async def take(self, flow: http.HTTPFlow) -> tuple[str, int]:
        """Answer ``flow``'s handshake here: the address to send it to."""
        self._flows.add(flow)
        return await self.address()

    def answers(self, flow: http.HTTPFlow) -> bool:
        """Whether ``flow`` is a socket answered here (its messages are pouch's to answer)."""
        return flow in self._flows

    async def address(self) -> tuple[str, int]:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._server is None:
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[:2]

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._starting = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        socket = WSConnection(ConnectionType.SERVER)
        try:
            while not writer.is_closing():
                data = await reader.read(65536)
                try:
                    socket.receive_data(data or None)
                    for event in socket.events():
                        if isinstance(event, Request):
                            writer.write(socket.send(AcceptConnection()))
                        elif isinstance(event, Ping):
                            writer.write(socket.send(event.response()))
                        elif isinstance(event, CloseConnection):
                            writer.write(socket.send(event.response()))
                            writer.close()
                except RemoteProtocolError as e:  # not a WebSocket handshake: refused as the server would
                    if e.event_hint is not None:
                        writer.write(socket.send(e.event_hint))
                    writer.close()
                if not data:
                    break
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        except Exception:
            log.exception("pouch: the local WebSocket answerer failed")
        finally:
            with contextlib.suppress(Exception):
                writer.close()


answerer = LocalAnswerer()  # one per gateway process
