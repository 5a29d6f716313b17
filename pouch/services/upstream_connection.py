"""What pouch does at the one moment mitmproxy opens a request's upstream connection: there
is no addon hook there, so ``install`` wraps ``HttpStream.make_server_connection``
(mitmproxy 12.3) and every flow goes through mitmproxy's own code, except in three cases.

- The connection fails, for a flow the chain handles whose request body is complete: the
  flow gets a refusal (``chain.refuse``), a 502 in its provider's shape that names the cause,
  answered the way mitmproxy answers a response an addon set in the ``request`` hook,
  instead of mitmproxy's HTML error page. The chain then sees a refused flow: its reservation
  is released, its tokens/min given back, nothing charged.
- The connection opens: the callback given to ``when_connected`` may give the request to send
  instead of the flow's (the upstream credential in it). mitmproxy sends the request headers
  right after this returns, with no hook in between, and the flow holds that request only
  until the event loop's next turn: no hook, mitmweb update or web API call can see it.
- An LLM request whose body mitmproxy streams (``stream_large_bodies``) connects before any
  ``request`` hook ran, so before the chain metered it or swapped its key: it is not sent.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

from mitmproxy import http
from mitmproxy.proxy.layers.http import ErrorCode, GetHttpConnection, HttpStream, ResponseProtocolError
from mitmproxy.proxy.layers.http._hooks import HttpResponseHeadersHook

from pouch.domain.errors import UpstreamUnreachable
from pouch.providers.registry import for_host
from pouch.services import chain

log = logging.getLogger(__name__)

_TLS_HINT = ("if it uses a CA of its own, start the gateway with --set ssl_verify_upstream_trusted_ca=/path/ca.pem, "
             "a PEM file that holds that CA")
# (pattern in mitmproxy's error text, what it means, whether retrying can help)
_CAUSES = (
    (r"certificate verify failed", "TLS: the gateway does not trust its certificate ({err}); " + _TLS_HINT, False),
    (r"does not speak TLS", "TLS: it does not speak TLS ({err}); route to http:// if it serves plain HTTP", False),
    (r"cannot agree on a TLS version", "TLS: no TLS version in common ({err})", False),
    (r"temporary failure in name resolution|\[Errno -3\]", "DNS: the lookup failed for now ({err})", True),
    (r"name or service not known|nodename nor servname|no address associated|getaddrinfo"
     r"|\[Errno -[25]\]|\[Errno 11001\]", "DNS: the host name does not resolve ({err})", False),
    (r"connection refused|connect call failed|errno 111\b|errno 61\b",
     "connection refused: nothing listens there ({err})", True),
    (r"timed out|timeout", "the connection timed out ({err})", True),
    (r"network is unreachable|no route to host", "no route to it ({err})", True),
    (r"^Connection killed", "the gateway's connection rules stopped it ({err})", False),
)


def explain(provider: str, address: tuple[str, int], err: str) -> UpstreamUnreachable:
    """The client's error for a connection to ``provider``'s upstream at ``address`` (a
    ``pouch_route`` target or the provider's own host) that failed with mitmproxy's ``err``."""
    where = f"{provider} upstream {address[0]}:{address[1]}"
    for pattern, cause, retry in _CAUSES:
        if re.search(pattern, err, re.IGNORECASE):
            break
    else:
        cause, retry = "{err}", True
    message = (f"pouch could not reach the {where}: {cause.format(err=err)}. "
               "The request was not sent and nothing was charged.")
    return UpstreamUnreachable(message, {} if retry else {"x-should-retry": "false"})


def answers(stream: HttpStream) -> bool:
    """Whether pouch answers a failed connection of this stream itself: a flow of the chain's
    (a provider's host) whose request body was read in full (not streamed upstream)."""
    flow = stream.flow
    return (flow is not None and flow.response is None and chain.provider_of(flow) is not None
            and stream.client_state == stream.state_done)


def _refused(flow: http.HTTPFlow, command: GetHttpConnection, err: str) -> bool:
    try:
        chain.refuse(flow, explain(chain.provider_of(flow).name, command.address, err))
        return True
    except Exception:  # mitmproxy's error page then, rather than a broken connection
        log.exception("pouch: could not answer the failed connection to %s", command.address)
        flow.response = None
        if (found := chain.existing(flow)) is not None:
            found.refusal = None
        return False


# mitmproxy's own, also when this module is imported again (a script reload).
_original = getattr(HttpStream.make_server_connection, "__wrapped__", HttpStream.make_server_connection)

_on_connected: Callable[[http.HTTPFlow], http.Request | None] | None = None


def when_connected(callback: Callable[[http.HTTPFlow], http.Request | None] | None) -> None:
    """``callback(flow)`` runs once the flow's upstream connection is open, right before its
    request headers are sent, and returns the request to send instead, or None for the flow's
    own. One callback: a later call (a script reload) replaces the earlier."""
    global _on_connected
    _on_connected = callback


def make_server_connection(self: HttpStream):
    """mitmproxy's, driven step by step: its first command asks for the connection; on a
    failure pouch answers (see ``answers``) instead of letting it write its error page; once
    it is open, the ``when_connected`` callback gives the request to send. A streamed LLM
    request never gets that far."""
    flow = self.flow
    if self.client_state != self.state_done and for_host(flow.request.host, flow.request.port) is not None:
        return (yield from _fail(self, "pouch does not forward an LLM request whose body mitmproxy streams "
                                       "(larger than stream_large_bodies): the chain has not seen it"))
    steps = _original(self)
    command = next(steps)
    reply = yield command
    if isinstance(command, GetHttpConnection) and reply[1] and answers(self) and _refused(self.flow, command, reply[1]):
        steps.close()
        # What mitmproxy does for a response an addon set in the request hook.
        self.flow.response.timestamp_start = time.time()
        yield HttpResponseHeadersHook(self.flow)
        if (yield from self.check_killed(True)):
            return False
        yield from self.send_response()
        return False
    try:
        command = steps.send(reply)
        while True:
            command = steps.send((yield command))
    except StopIteration as done:
        if not done.value:
            return False
    if not _send_instead(flow):
        return (yield from _fail(self, "pouch could not prepare the request for its upstream"))
    return True


def _send_instead(flow: http.HTTPFlow) -> bool:
    """Puts the callback's request in the flow until the event loop's next turn (mitmproxy
    reads ``flow.request`` for the headers it sends now, and keeps that object for any it
    sends later, e.g. an HTTP/2 stream queued for a free slot). False if the callback failed."""
    try:
        sent = _on_connected(flow) if _on_connected else None
    except Exception:
        log.exception("pouch: preparing the request to %s failed", flow.request.host)
        return False
    if sent is not None:
        shown, flow.request = flow.request, sent
        asyncio.get_running_loop().call_soon(_restore, flow, sent, shown)
    return True


def _restore(flow: http.HTTPFlow, sent: http.Request, shown: http.Request) -> None:
    if flow.request is sent:
        flow.request = shown


def _fail(stream: HttpStream, message: str):
    """Nothing goes upstream: the client gets mitmproxy's 502 page, the flow an error."""
    yield from stream.handle_protocol_error(ResponseProtocolError(stream.stream_id, message, ErrorCode.CONNECT_FAILED))
    return False


make_server_connection.__wrapped__ = _original


def install() -> None:
    """Idempotent: a script reload installs it again over the same class."""
    HttpStream.make_server_connection = make_server_connection
