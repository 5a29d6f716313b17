"""Chain link: the Responses API over WebSocket (``wss://api.openai.com/v1/responses``, what
Codex CLI opens first), metered like its HTTP form.

The handshake is a request like any other: the keys link admits it (``responses.websocket``,
a ``WEBSOCKET`` endpoint), the upstream link swaps its credential (a mock key's goes to pouch's
own silent server, ``pouch.services.local_websocket``). An upgrade mitmproxy would not relay as a
WebSocket is refused here, and a 101 it would relay as raw TCP, unseen, is killed
(``socket_upgrade``). Then, message by message:

- a client's ``response.create`` is admitted before it goes on (``socket_admission``: the key,
  the model, rate limits, the price, a reservation of its worst case); refused, it is dropped
  and the client gets the error event the API sends (``{"type": "error", "status": 429,
  "error": {...}}``) at once, and the socket stays usable. On a mock socket pouch answers it
  with mock events; nothing goes on.
- the server's events are followed per response (``response_socket``) and each response is
  settled from its ``response.completed`` usage, or by the cut-short rules when the socket
  closes first (``socket_settlement``): one usage row each.
- other client messages: acknowledgements of a response the socket saw go on; what pouch cannot
  meter (steering a response, injecting input) is refused unless the operator allows unmetered
  use (``pouch_unmetered``).
- a socket pouch does not follow (one opened before the gateway's script was reloaded) or no
  longer may (its key became a mock key): its messages are dropped and pouch closes it; the
  client's next socket is admitted as things are now.

Every client message is read by ``json_body``'s strict rules before anything else; a create goes
on as the very bytes pouch read unless pouch changed it (an output cap, a bound on tool calls):
read strictly, those bytes mean to any server what they meant to pouch, and they are what the
client sent (re-serialising would also rewrite numbers and escapes pouch has no reason to touch).
A message above ``json_body.MAX_DECODED_BYTES`` is refused unread, one above
``prompt.OFF_LOOP_BYTES`` is read off the event loop, and a socket keeps its last ``KEEP_MESSAGES``
messages for mitmweb (a long socket would otherwise hold every message it ever carried).
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
from pouch.providers import json_body, registry
from pouch.providers.openai import mock as openai_mock
from pouch.providers.openai import websocket as protocol
from pouch.rules.settlement import Ending
from pouch.services import chain, prompt, response_socket, socket_admission, socket_settlement, socket_upgrade
from pouch.services.local_websocket import answerer
from pouch.services.refusal_log import refusal_log
from pouch.services.response_socket import Response, Socket
from pouch.services.secrets import redact_text

log = logging.getLogger(__name__)
METADATA = "pouch_websocket"  # flow.metadata[METADATA]: the socket as JSON (response_socket.snapshot)
# Messages a socket's flow keeps (mitmweb lists them); older ones are let go, a few at a time.
KEEP_MESSAGES = 1000


def inject_to_client(flow: http.HTTPFlow, data: bytes) -> None:
    ctx.master.commands.call("inject.websocket", flow, True, data, True)


def _levels():
    """The budget link's levels of a key's request (the ceiling, the team, the end user)."""
    budget = ctx.master.addons.get("budget")
    if budget is not None:
        return budget.levels
    return socket_admission.Settings.levels


class ResponsesWebSocket:
    def __init__(self, inject: Callable[[http.HTTPFlow, bytes], None] = inject_to_client):
        self._inject = inject
        self._sockets: weakref.WeakKeyDictionary[http.HTTPFlow, Socket] = weakref.WeakKeyDictionary()
        self._closing: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()  # sockets pouch is closing
        self.settings = socket_admission.Settings()
        self.mock_reply, self.mock_latency = "", 0.0

    def configure(self, updated):
        # The options of the links whose rules a socket's messages follow, read once here.
        options = ctx.options
        self.settings = socket_admission.Settings(
            tool_calls=getattr(options, "pouch_tool_calls", 3),
            allow_unmetered=getattr(options, "pouch_unmetered", "refuse") == "allow",
            cap_output=getattr(options, "pouch_cap_output", True),
            hold=timedelta(seconds=getattr(options, "pouch_hold", 900)),
            mock_all=getattr(options, "pouch_mock", "off") == "all",
            levels=_levels())
        self.mock_reply = getattr(options, "pouch_mock_reply", "")
        self.mock_latency = chain.seconds("pouch_mock_latency") if "pouch_mock_latency" in options else 0.0

    @chain.fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        found = chain.existing(flow)
        if found is not None and (refused := socket_upgrade.refusal(flow.request, found.endpoint,
                                                                   ctx.options.websocket)):
            raise refused

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response.status_code == 101:
            self._unfollowed(flow, socket_upgrade.follows(flow))

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.response.status_code == 101:
            # mitmproxy sets flow.websocket just before this hook when it relays the 101 as a WebSocket
            self._unfollowed(flow, flow.websocket is not None)

    @staticmethod
    def _unfollowed(flow: http.HTTPFlow, followed: bool) -> None:
        """Kill a 101 pouch would not see through (mitmproxy checks right after this hook)."""
        try:
            why = socket_upgrade.unfollowed(flow, chain.existing(flow), followed)
        except Exception:
            log.exception("pouch: checking a response's upgrade failed")
            why = "pouch could not check it"
        if why and flow.killable:
            log.warning("pouch: killed %s %s%s: %s", flow.request.method, flow.request.pretty_host,
                        flow.request.path.split("?")[0], why)
            flow.kill()

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        found = chain.existing(flow)
        if found is None or not socket_upgrade.ours(found):
            return
        socket = Socket(found.provider, found.endpoint, found.key, found.observed, found.attribution,
                        found.own_credential, mock=answerer.answers(flow))
        self._sockets[flow] = socket
        self._show(flow, socket)

    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        messages = flow.websocket.messages
        message = messages[-1] if messages else None
        if len(messages) > KEEP_MESSAGES + KEEP_MESSAGES // 10:
            del messages[:-KEEP_MESSAGES]  # mitmproxy holds the message it relays, not this list
        if message is None or message.injected:
            return  # pouch's own answer
        socket = self._sockets.get(flow)
        if socket is None:
            if chain.existing(flow) is not None:
                self._orphan(flow, message)
            return  # not an LLM host's socket
        try:
            if message.from_client:
                await self._from_client(flow, socket, message)
            elif message.is_text:  # the API sends no binary messages; none carries usage
                now = time.time()
                if len(message.content) > prompt.OFF_LOOP_BYTES:  # a big final event: parsed off the loop
                    ended = await asyncio.to_thread(socket.follow, message.text, now)
                else:
                    ended = socket.follow(message.text, now)
                self._settle(flow, socket, ended)
        except Exception:
            # Fail closed: a client message pouch could not account for does not go on.
            log.exception("pouch: handling a WebSocket message of %s failed", socket.who)
            if message.from_client and not message.dropped:
                self._refuse(flow, socket, message, errors.GatewayError(
                    "pouch could not process this message (the websocket link failed); it was not forwarded"))

    def _orphan(self, flow: http.HTTPFlow, message) -> None:
        """A socket of an LLM host that this link does not follow (opened before the gateway's
        script was reloaded: the link that followed it is gone): nothing on it is metered, so
        nothing goes on, and pouch closes it."""
        message.drop()
        try:
            found = chain.existing(flow)
            if message.from_client and found is not None:
                error = socket_admission.Reconnect(
                    "pouch no longer follows this WebSocket (the gateway was reloaded while it was open), so it "
                    "closes it; nothing was sent: open a new one")
                self._inject(flow, protocol.error_event(found.provider.error(error)))
        finally:
            self._close_connection(flow, "a socket pouch does not follow")

    def _close_connection(self, flow: http.HTTPFlow, why: str) -> None:
        if flow in self._closing:
            return
        self._closing.add(flow)
        log.warning("pouch: closing the WebSocket %s%s: %s", flow.request.pretty_host,
                    flow.request.path.split("?")[0], why)
        socket_upgrade.close(flow)
        if flow.killable:
            flow.kill()  # mitmweb shows it killed; the close above is what ends it

    async def _from_client(self, flow, socket: Socket, message) -> None:
        lane, body = None, None
        try:
            if socket.closing:
                raise socket_admission.Reconnect(socket.closing)
            if not message.is_text:
                raise errors.BadRequest("the Responses WebSocket takes JSON text messages, not binary ones")
            size = len(message.content)
            if size > json_body.MAX_DECODED_BYTES:
                raise errors.BadRequest(f"a Responses WebSocket message may be at most "
                                        f"{json_body.MAX_DECODED_BYTES // 2**20} MiB; this one is {size:,} bytes")
            if size > prompt.OFF_LOOP_BYTES:  # reading it must not stall other flows
                kind, body = await asyncio.to_thread(protocol.read_client_message, message.content)
            else:
                kind, body = protocol.read_client_message(message.content)
            lane = protocol.lane_of(body)
            if kind != protocol.CREATE:
                self._other(socket, message, kind, body)
                return
            response, changed = await socket_admission.admit(
                socket, socket.endpoint, body, message.timestamp, self.settings)
        except errors.PouchError as e:
            model = body.get("model") if isinstance(body, dict) else None
            self._refuse(flow, socket, message, e, lane, model if isinstance(model, str) else None)
            if isinstance(e, socket_admission.Reconnect):
                socket.closing = e.message
                self._close_connection(flow, e.message)
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

    def _other(self, socket: Socket, message, kind: str, body: dict) -> None:
        if kind in protocol.FREE:
            if socket.mock:
                message.drop()  # an acknowledgement of a mock response: nothing upstream to tell
                return
            if not socket.knows(protocol.acknowledged(body)):
                # the server would answer with an error pouch could take for a create's refusal
                raise errors.BadRequest("this response.processed names a response this WebSocket never carried")
            socket.forwarded_other()
            return
        if socket.mock or not self.settings.allow_unmetered:
            raise errors.EndpointNotMetered(
                f"'{kind}' messages make the provider bill in ways pouch cannot bound, so this one is refused "
                "(the operator can allow it with pouch_unmetered=allow)")
        log.warning("pouch: passing an unmetered '%s' message of %s (pouch_unmetered=allow)", kind, socket.who)
        socket.forwarded_other()

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
            "message": redact_text(error.message), "team": socket.attribution.columns(socket.key)["team"],
            "end_user": socket.attribution.end_user}, error.kind, socket.key.name if socket.key else "")
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
