"""Which upgrades of an LLM host's connection pouch lets happen, and closing a socket.

pouch meters a WebSocket message by message, so a connection to an LLM host may only become a
WebSocket that mitmproxy relays as one (the websocket_* hooks run for it) on the endpoint pouch
meters that way. mitmproxy treats a ``101 Switching Protocols`` as a WebSocket only when the
response says ``Upgrade: websocket``, the request's ``Sec-WebSocket-Version`` is exactly ``13``
(several such headers are joined: ``13, 13`` is not) and its ``websocket`` option is on
(``mitmproxy/proxy/layers/http/__init__.py``, ``send_response``); any other 101 is relayed as
raw TCP (``rawtcp``, on by default), where pouch sees nothing of what goes through. So:

- ``refusal``: an upgrade request mitmproxy would not follow, or on another endpoint, is refused
  before anything goes upstream;
- ``unfollowed``: a 101 that still comes (a server upgrading anyway, another protocol) kills the
  flow in the response hooks: mitmproxy checks for a killed flow right after ``responseheaders``
  and ``response``, before it relays the 101 and the connection after it.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, http

from pouch.domain import errors
from pouch.providers.base import WEBSOCKET, Endpoint
from pouch.services.exchange import Exchange

log = logging.getLogger(__name__)
VERSION = "13"  # RFC 6455's, the only one mitmproxy (wsproto) follows


def refusal(request: http.Request, endpoint: Endpoint | None, websocket_on: bool) -> errors.PouchError | None:
    """Why an upgrade request must not go on (None: it is no upgrade, or one pouch follows)."""
    upgrade = request.headers.get_all("upgrade")
    if not upgrade:
        return None
    if endpoint is None or endpoint.metering != WEBSOCKET:
        where = endpoint.name if endpoint else "this path"
        return errors.BadRequest(f"{where} is not a WebSocket endpoint: send the request without an Upgrade header")
    if [value.strip().lower() for value in upgrade] != ["websocket"]:
        return errors.BadRequest("the Upgrade header of a WebSocket handshake must say websocket, once")
    if request.headers.get_all("sec-websocket-version") != [VERSION]:
        return errors.BadRequest(
            f"a WebSocket handshake must carry exactly one Sec-WebSocket-Version: {VERSION} (RFC 6455)")
    if not websocket_on:
        return errors.EndpointNotMetered(
            "this gateway runs with mitmproxy's websocket option off, so it cannot meter a WebSocket: use the "
            "HTTP API (or the operator sets websocket=true)")
    return None


def follows(flow: http.HTTPFlow) -> bool:
    """Whether mitmproxy will relay ``flow``'s 101 as a WebSocket: its own test, before it sets
    ``flow.websocket`` (just before the ``response`` hook)."""
    response = flow.response
    return (response is not None and response.status_code == 101
            and response.headers.get("upgrade", "").lower() == "websocket"
            and flow.request.headers.get("sec-websocket-version", "") == VERSION
            and bool(ctx.options.websocket))


def unfollowed(flow: http.HTTPFlow, found: Exchange | None, followed: bool) -> str | None:
    """Why ``flow``'s response must not be relayed: a 101 of an LLM host that is not a WebSocket
    mitmproxy follows (``followed``) on the endpoint pouch meters that way, for a key or an
    observed credential pouch admitted. None: not a 101, or one pouch follows."""
    if flow.response is None or flow.response.status_code != 101 or found is None:
        return None
    if not followed:
        return "a 101 that mitmproxy would relay as raw TCP, unmetered"
    if not ours(found):
        return "a WebSocket on an endpoint pouch does not meter message by message"
    return None


def ours(found: Exchange) -> bool:
    """Whether the websocket link follows a socket of this exchange."""
    endpoint = found.endpoint
    return (endpoint is not None and endpoint.metering == WEBSOCKET and not found.refusal
            and (found.key is not None or found.observed is not None))


def close(flow: http.HTTPFlow) -> bool:
    """Close a relayed WebSocket's client connection; mitmproxy's WebSocket layer then closes the
    server's side and runs ``websocket_end``, as when a client goes away. mitmproxy 12 has no
    public way to do this (mitmproxy#4773: ``flow.kill()`` is not read once a WebSocket is
    relayed), so this is what the proxy server does on a CloseConnection command. False: there
    is no live connection to close (the caller still drops what comes on it)."""
    server = ctx.master.addons.get("proxyserver")
    handler = getattr(server, "connections", {}).get(flow.client_conn.id)
    if handler is None or not hasattr(handler, "close_connection"):
        return False
    try:
        handler.close_connection(flow.client_conn)
    except Exception:  # already closing: its transport is gone
        log.debug("pouch: closing a WebSocket's connection failed", exc_info=True)
        return False
    return True
