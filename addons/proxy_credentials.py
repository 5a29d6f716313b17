"""Proxy credentials (not a chain link): ``Proxy-Authorization`` never stays in a flow.

It carries the pouch key as the proxy password. The perimeter takes it off the requests it
authenticates, in their ``request`` hook; but mitmproxy may answer a request before any
script sees it (its certificate page, http://mitm.it), or a request may fail before it has a
``request`` hook, and such a flow would be shown, saved and logged with the header. So it
comes off every request as soon as its headers arrive, and is given back, just before the
perimeter's ``request`` hook, only to a request nobody answered, in a mode where the perimeter
reads it. Listed right before the perimeter.
"""

from __future__ import annotations

import weakref

from mitmproxy import http

from addons.perimeter import PROXY_MODES

HEADER = "proxy-authorization"


class ProxyCredentials:
    def __init__(self):
        self.held: weakref.WeakKeyDictionary[http.HTTPFlow, list[str]] = weakref.WeakKeyDictionary()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        values = flow.request.headers.get_all(HEADER)
        if values:
            del flow.request.headers[HEADER]
            if isinstance(flow.client_conn.proxy_mode, PROXY_MODES):
                self.held[flow] = values

    def request(self, flow: http.HTTPFlow) -> None:
        values = self.held.pop(flow, None)
        if values and not flow.response and not flow.error:
            flow.request.headers.set_all(HEADER, values)  # the perimeter, next, reads it and takes it off

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response:  # answered by mitmproxy (its own proxyauth): the perimeter does not look at it
            flow.request.headers.pop(HEADER, None)
