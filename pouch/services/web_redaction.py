"""What mitmweb sends to a browser holds no pouch key and no proxy credentials.

mitmweb shows a flow from its first hook on (``requestheaders``), before the chain replaces
the client's pouch key with a placeholder, and a plain-HTTP proxied request carries
``Proxy-Authorization`` (the pouch key as the proxy password) until the perimeter takes it
off. Every flow mitmweb serialises for its UI, pushed over its websocket or served by
``GET /flows`` (and the static viewer), goes through ``flow_to_json``; ``install`` wraps it
so the request it describes shows pouch keys by their placeholder and no
``Proxy-Authorization``. The flow itself is not changed: the chain still reads the key.
"""

from __future__ import annotations

import functools
import sys

from pouch.services.secrets import hide_pouch_keys

# mitmweb's modules that serialise flows with it (imported by mitmweb itself, never here:
# mitmdump has no web UI).
_USERS = ("mitmproxy.tools.web.app", "mitmproxy.tools.web.static_viewer")


def redact(shown: dict) -> dict:
    """A flow as ``flow_to_json`` describes it, with its request fit to show."""
    request = shown.get("request")
    if isinstance(request, dict) and "headers" in request:  # HTTP (a DNS request has no headers)
        request["headers"] = tuple((name, hide_pouch_keys(value)) for name, value in request["headers"]
                                   if name.lower() != "proxy-authorization")
        request["path"] = hide_pouch_keys(request["path"])
    return shown


def install() -> None:
    """Idempotent: a script reload wraps mitmproxy's own function again, not the wrapper."""
    for name in _USERS:
        module = sys.modules.get(name)
        if module is not None:
            module.flow_to_json = _redacting(getattr(module.flow_to_json, "__wrapped__", module.flow_to_json))


def _redacting(original):
    @functools.wraps(original)  # sets __wrapped__: mitmproxy's own
    def flow_to_json(flow):
        return redact(original(flow))

    return flow_to_json
