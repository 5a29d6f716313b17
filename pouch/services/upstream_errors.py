"""An LLM request whose upstream cannot be reached gets a 502 in its provider's shape that
names the cause, instead of mitmproxy's HTML error page.

No addon hook can answer such a request: mitmproxy opens the upstream connection after the
``request`` hooks, and when that fails its protocol layer writes its own error page. So
``install`` wraps ``HttpStream.make_server_connection`` (mitmproxy 12.3): when the connection
fails for a flow the chain handles, whose request body is complete, the flow gets a refusal
(``chain.refuse``) and is answered the way mitmproxy answers a response an addon set in the
``request`` hook. Every other flow, and every connection that opens, goes through mitmproxy's
own code unchanged. The chain then sees a refused flow: its reservation is released, its
tokens/min given back, nothing charged.
"""

from __future__ import annotations

import logging
import re
import time

from mitmproxy import http
from mitmproxy.proxy.layers.http import GetHttpConnection, HttpStream
from mitmproxy.proxy.layers.http._hooks import HttpResponseHeadersHook

from pouch.domain.errors import UpstreamUnreachable
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
        flow.metadata.pop(chain.REFUSED, None)
        return False


# mitmproxy's own, also when this module is imported again (a script reload).
_original = getattr(HttpStream.make_server_connection, "__wrapped__", HttpStream.make_server_connection)


def make_server_connection(self: HttpStream):
    """mitmproxy's, driven step by step: its first command asks for the connection; on a
    failure pouch answers (see ``answers``) instead of letting it write its error page."""
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
        return done.value


make_server_connection.__wrapped__ = _original


def install() -> None:
    """Idempotent: a script reload installs it again over the same class."""
    HttpStream.make_server_connection = make_server_connection
