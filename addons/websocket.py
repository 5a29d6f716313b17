"""Chain link: the Responses API over WebSocket (``wss://api.openai.com/v1/responses``, what
Codex CLI opens first), metered like its HTTP form.

The handshake is a request like any other: the keys link admits it (``responses.websocket``,
a ``WEBSOCKET`` endpoint), the upstream link swaps its credential (a mock key's goes to pouch's
own silent server, ``pouch.services.local_websocket``). Then, message by message:

- a client's ``response.create`` is admitted before it goes on (``socket_admission``: the key,
  the model, rate limits, the price, a reservation of its worst case); refused, it is dropped
  and the client gets the error event the API sends (``{"type": "error", "status": 429,
  "error": {...}}``) at once, and the socket stays usable. On a mock socket pouch answers it
  with mock events; nothing goes on.
- the server's events are followed per response (``response_socket``) and each response is
  settled from its ``response.completed`` usage, or by the cut-short rules when the socket
  closes first (``socket_settlement``): one usage row each.
- other client messages: acknowledgements go on; what pouch cannot meter (steering a response,
  injecting input) is refused unless the operator allows unmetered use (``pouch_unmetered``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from mitmproxy import ctx, http

from addons.inspect import MARKERS
from addons.mock import fit
from addons.usage import billed
from pouch.domain import errors
from pouch.domain.usage import Usage
from pouch.providers import registry
from pouch.providers.base import WEBSOCKET
from pouch.providers.openai import mock as openai_mock
from pouch.providers.openai import websocket as protocol
from pouch.rules.settlement import Ending
from pouch.services import chain, response_socket, socket_admission, socket_settlement
from pouch.services.local_websocket import answerer
from pouch.services.refusal_log import refusal_log
from pouch.services.response_socket import Response, Socket
from pouch.services.secrets import redact_text

log = logging.getLogger(__name__)
METADATA = "pouch_websocket"  # flow.metadata[METADATA]: the socket as JSON (response_socket.snapshot)


def inject_to_client(flow: http.HTTPFlow, data: bytes) -> None:
    ctx.master.commands.call("inject.websocket", flow, True, data, True)


class ResponsesWebSocket:
    def __init__(self, inject: Callable[[http.HTTPFlow, bytes], None] = inject_to_client):
        self._inject = inject
        self._sockets: weakref.WeakKeyDictionary[http.HTTPFlow, Socket] = weakref.WeakKeyDictionary()
        self.settings = socket_admission.Settings()
        self.mock_reply, self.mock_latency = "", 0.0

    def configure(self, updated):
        # The options of the links whose rules a socket's messages follow, read once here.
        options = ctx.options
        self.settings = socket_admission.Settings(
            tool_calls=getattr(options, "pouch_tool_calls", 3),
            allow_unmetered=getattr(options, "pouch_unmetered", "refuse") == "allow",
            cap_output=getattr(options, "pouch_cap_output", True),
            hold=timedelta(seconds=getattr(options, "pouch_hold", 900)))
        self.mock_reply = getattr(options, "pouch_mock_reply", "")
        self.mock_latency = chain.seconds("pouch_mock_latency") if "pouch_mock_latency" in options else 0.0

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        found = chain.existing(flow)
        if found is None or found.endpoint is None or found.endpoint.metering != WEBSOCKET or found.refusal:
            return
        socket = Socket(found.provider, found.endpoint, found.key, found.observed, found.own_credential,
                        mock=answerer.answers(flow))
        self._sockets[flow] = socket
        self._show(flow, socket)

    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        socket = self._sockets.get(flow)
        message = flow.websocket.messages[-1] if socket is not None else None
        if message is None or message.injected:
            return  # not a socket of pouch's, or pouch's own answer
        try:
            if message.from_client:
                await self._from_client(flow, socket, message)
            elif message.is_text:  # the API sends no binary messages; none carries usage
                self._settle(flow, socket, socket.follow(message.text, time.time()))
        except Exception:
            # Fail closed: a client message pouch could not account for does not go on.
            log.exception("pouch: handling a WebSocket message of %s failed", socket.who)
            if message.from_client and not message.dropped:
                self._refuse(flow, socket, message, errors.GatewayError(
                    "pouch could not process this message (the websocket link failed); it was not forwarded"))

    async def _from_client(self, flow, socket: Socket, message) -> None:
        lane, body = None, None
        try:
            if not message.is_text:
                raise errors.BadRequest("the Responses WebSocket takes JSON text messages, not binary ones")
            kind, body = protocol.read_client_message(message.text)
            lane = protocol.lane_of(body)
            if kind != protocol.CREATE:
                self._other(socket, message, kind)
                return
            limits = ctx.master.addons.get("ratelimit")
            response, changed = await socket_admission.admit(
                socket, socket.endpoint, body, message.timestamp, self.settings,
                limits.limits_for if limits else lambda key: None)
        except errors.PouchError as e:
            model = body.get("model") if isinstance(body, dict) else None
            self._refuse(flow, socket, message, e, lane, model if isinstance(model, str) else None)
            return
        if socket.mock:
            message.drop()
            if self.mock_latency > 0:
                await asyncio.sleep(self.mock_latency)
            self._answer(flow, socket, response, body)
            return
        if changed:
            message.content = protocol.create_message(body)
        socket.admitted(response)
        self._show(flow, socket)

    def _other(self, socket: Socket, message, kind: str) -> None:
        if kind in protocol.FREE:
            if socket.mock:
                message.drop()  # an acknowledgement of a mock response: nothing upstream to tell
            return
        if socket.mock or not self.settings.allow_unmetered:
            raise errors.EndpointNotMetered(
                f"'{kind}' messages make the provider bill in ways pouch cannot bound, so this one is refused "
                "(the operator can allow it with pouch_unmetered=allow)")
        log.warning("pouch: passing an unmetered '%s' message of %s (pouch_unmetered=allow)", kind, socket.who)

    def _answer(self, flow, socket: Socket, response: Response, body: dict) -> None:
        """A mock socket's create: answered with mock events, settled as a mock (nothing charged)."""
        call = response.call
        said = self.mock_reply or registry.api("responses").echo_text(body) or "(mock reply)"
        # "generate": false (Codex's prewarm) asks the server to take the input in and write nothing
        text, output_tokens = ("", 0) if body.get("generate") is False else fit(call.model, said, call.max_output)
        usage = response.mock = Usage(input_tokens=response.input_tokens, output_tokens=output_tokens)
        try:
            for event in openai_mock.response_events(call, body, usage, text):
                if response.first_event is None:
                    response.first_event = time.time()
                self._inject(flow, protocol.event_message(event, response.lane))
        finally:  # its reservation is closed whatever happened
            self._settle(flow, socket, [(response, Ending(mock=usage, streamed=True))])

    def _refuse(self, flow, socket: Socket, message, error: errors.PouchError, lane: str | None = None,
                model: str | None = None) -> None:
        message.drop()
        socket.refused += 1
        socket.last_refusal = {"kind": error.kind, "code": error.code, "status": error.status, "message": error.message}
        refusal_log.note_row({  # for `pouch usage --refused`, as an HTTP request's refusal is
            "ts": datetime.fromtimestamp(message.timestamp, UTC), "key": socket.key.id if socket.key else None,
            "provider": socket.provider.name, "model": model[:200] if model else None,
            "endpoint": socket.endpoint.name, "status": error.status, "reason": error.code or error.kind,
            "message": redact_text(error.message)})
        log.info("pouch: refused a WebSocket message of %s: %s", socket.who, error.message)
        self._inject(flow, protocol.error_event(socket.provider.error(error), lane))
        flow.marked = MARKERS.get(error.kind, ":x:")
        self._show(flow, socket)

    def _settle(self, flow, socket: Socket, ended: list[tuple[Response, Ending]]) -> None:
        for response, ending in ended:
            try:
                socket_settlement.settle(socket, response, ending, billed)
            except Exception:  # one response's failure must not keep the others open
                log.exception("pouch: settling a WebSocket response of %s failed", socket.who)
        if ended:
            self._show(flow, socket)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        self._close(flow, "the WebSocket closed "
                          + ("by the client" if flow.websocket.closed_by_client else "by the server")
                          + f" (code {flow.websocket.close_code})")

    def error(self, flow: http.HTTPFlow) -> None:
        self._close(flow, f"the connection failed: {flow.error.msg if flow.error else '?'}")

    def _close(self, flow: http.HTTPFlow, reason: str) -> None:
        socket = self._sockets.pop(flow, None)
        if socket is not None:
            self._settle(flow, socket, socket.close(reason))
            self._show(flow, socket)

    @staticmethod
    def _show(flow: http.HTTPFlow, socket: Socket) -> None:
        """The socket's story in mitmweb's flow list, its JSON with the flow."""
        flow.metadata[METADATA] = snapshot = response_socket.snapshot(socket)
        flow.comment = snapshot["story"]
