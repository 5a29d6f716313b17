"""Chain link 6: send the request on. Swaps the pouch key for the real provider credential
(from the gateway's environment), applies ``pouch_route``, and writes back a body the chain
changed. The last line of defence: a flow to an LLM host that no earlier link accounted
for is refused, never forwarded.

A mock key's Responses WebSocket goes to pouch's own silent WebSocket server instead, with no
credential at all (``pouch.services.local_websocket``): its messages are the websocket link's.

Credentials never sit in a flow that anything can see: the client's credential is replaced
by a placeholder here, and the one to send upstream goes only into the request mitmproxy
sends once the upstream connection is open (``LateCredential``), after every hook, mitmweb
update and interception of the request.
"""

from __future__ import annotations

import copy
import json
import os
import typing
import weakref
from collections.abc import Sequence
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions, http

from pouch.domain.errors import GatewayError, StoreUnavailable
from pouch.providers import side_paths
from pouch.providers.base import WEBSOCKET
from pouch.services import chain, perimeter, upstream_connection
from pouch.services.local_websocket import answerer
from pouch.services.secrets import placeholder, replace_in_request, stray_pouch_keys


class Route(typing.NamedTuple):
    host: str
    scheme: str
    target_host: str
    port: int
    path_prefix: str


def parse_route(spec: str) -> Route:
    """``api.openai.com=http://127.0.0.1:8000/v1-proxy`` -> Route."""
    host, sep, url = spec.partition("=")
    parts = urlsplit(url.strip())
    if not sep or not host.strip() or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"bad route {spec!r}: use HOST=URL, e.g. api.openai.com=http://127.0.0.1:8000")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Route(host.strip().lower(), parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


class LateCredential:
    """Puts the upstream credential in the request mitmproxy sends, at the last moment."""

    def __init__(self):
        # flow -> {placeholder: credential}; never in flow.metadata, which is saved and shown
        self.pending: weakref.WeakKeyDictionary[http.HTTPFlow, dict[str, str]] = weakref.WeakKeyDictionary()

    def sending(self, flow: http.HTTPFlow) -> http.Request | None:
        """``upstream_connection.when_connected``'s callback: the flow's request with the
        credential, a copy, so that the flow itself keeps the placeholder."""
        swaps = self.pending.get(flow)
        if not swaps:
            return None
        # A shallow copy with headers of its own is all replace_in_request needs (it sets the
        # headers' fields and the path, never changes a shared value in place); Request.copy
        # rebuilds the whole message through its serialised state, ~20 us per request.
        sent = copy.copy(flow.request)
        sent.data = copy.copy(flow.request.data)
        sent.data.headers = http.Headers(flow.request.headers.fields)
        replace_in_request(sent, swaps)
        return sent

    def hide(self, flow: http.HTTPFlow) -> None:
        """Forget the flow's credential; and should its request ever hold it, the placeholder."""
        swaps = self.pending.pop(flow, None)
        if swaps:
            replace_in_request(flow.request, {secret: shown for shown, secret in swaps.items()})

    def done(self) -> None:
        for flow in list(self.pending):  # in flight at shutdown: hide before flows are saved
            self.hide(flow)


class Upstream:
    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.late = LateCredential()
        self.mock_all = False

    def load(self, loader):
        # a failed upstream connection: a 502 in the provider's shape, not mitmproxy's page;
        # an open one: the request is sent with its credential
        upstream_connection.install()
        upstream_connection.when_connected(self.late.sending)
        loader.add_option("pouch_route", Sequence[str], [],
                          "Send a provider host to another base URL: HOST=URL (repeatable), e.g. "
                          "api.openai.com=https://my-azure.example or api.openai.com=http://127.0.0.1:8000 "
                          "(a local vLLM, a test fake).")

    def configure(self, updated):
        # the mock link's option, read here too: a mock socket never reaches the provider
        self.mock_all = "pouch_mock" in ctx.options and ctx.options.pouch_mock == "all"
        if "pouch_route" in updated:
            try:
                self.routes = {r.host: r for r in map(parse_route, ctx.options.pouch_route)}
            except ValueError as e:
                raise exceptions.OptionsError(str(e)) from e
            perimeter.routed_hosts = frozenset(self.routes)

    def done(self):
        # Before mitmproxy's Save, whose done() writes the flows still in flight.
        self.late.done()
        answerer.close()

    @chain.fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        found = chain.exchange(flow)
        if found is None:
            return
        body, found.body = found.body, None  # read in the chain: not kept for the flow's lifetime
        if found.body_changed and not flow.response:
            flow.request.content = json.dumps(body, ensure_ascii=False).encode()
        provider = found.provider
        sent = provider.credential(flow.request.headers, flow.request.query)
        replace_in_request(flow.request, {secret: placeholder(secret) for secret in sent}
                           | stray_pouch_keys(flow.request))
        if flow.response or flow.error:
            return
        public = side_paths.public(provider, found.endpoint)  # goes with no credential, perhaps without a key
        if not (found.key or found.observed or public):
            raise GatewayError("pouch did not account for this request, so it was not forwarded")
        if found.metered and found.key and found.reservation is None:
            raise StoreUnavailable("this request holds no budget reservation, so it was not forwarded")
        if found.endpoint and found.endpoint.metering == WEBSOCKET and (found.key and found.key.mock or self.mock_all):
            await self._answer_locally(flow, found)
            return
        own = found.own_credential
        if public and found.key and not own:
            provider.authorize(flow.request.headers, flow.request.query, "")  # neither the pouch key nor the real one
        elif found.key and not own and not provider.credential_env:
            provider.authorize(flow.request.headers, flow.request.query, "")  # a keyless self-hosted server
        elif found.key and not own:
            if not perimeter.credential_may_go(provider, flow.request.host, flow.request.port):
                raise GatewayError(f"{flow.request.host} is not a host this gateway sends its {provider.name} "
                                   "credential to")
            secret = next((os.environ[v] for v in provider.credential_env if os.environ.get(v)), None)
            if not secret:
                raise GatewayError(f"the gateway has no {provider.name} credential: set "
                                   f"{' or '.join(provider.credential_env)} in its environment")
            # What the UI shows instead: which real key went upstream, for which pouch key.
            who = " ".join(map(placeholder, sent)) or f"proxy-authenticated key {found.key.prefix}"
            shown = f"<{provider.credential_env[0]} for {who}>"
            provider.authorize(flow.request.headers, flow.request.query, shown)
            self.late.pending[flow] = {shown: secret}
        else:  # observed, or charged to a key but with the client's own credential: it goes upstream untouched
            self.late.pending[flow] = {placeholder(secret): secret for secret in sent}
        for name in [n for n in flow.request.headers if n.lower().startswith("x-pouch-")]:
            del flow.request.headers[name]
        # Bodies must be readable to meter them: no compression from the provider.
        flow.request.headers["accept-encoding"] = "identity"
        route = self.routes.get(flow.request.host.lower())
        if route:
            flow.request.scheme, flow.request.port = route.scheme, route.port
            flow.request.host = route.target_host
            if route.path_prefix:
                found.client_path = flow.request.path  # credentials already hidden
                flow.request.path = route.path_prefix + flow.request.path
        perimeter.expect(flow.client_conn, (flow.request.host, flow.request.port))

    async def _answer_locally(self, flow: http.HTTPFlow, found) -> None:
        """A mock socket's handshake goes to pouch's own silent WebSocket server, without any
        credential; the websocket link answers its messages (``pouch.services.local_websocket``)."""
        found.provider.authorize(flow.request.headers, flow.request.query, "")
        for name in [n for n in flow.request.headers if n.lower().startswith("x-pouch-")]:
            del flow.request.headers[name]
        host, port = await answerer.take(flow)
        flow.request.scheme, flow.request.host, flow.request.port = "http", host, port
        perimeter.expect(flow.client_conn, (host, port))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self.late.hide(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self.late.hide(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.late.hide(flow)
