"""What the chain's links share: the ``flow.metadata`` names, the one way a link answers a
client, and the guard that makes a failing link refuse instead of forwarding unaccounted.

Metadata values are plain JSON-like data (mitmproxy copies and saves them with the flow).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import logging
import math
import weakref
from collections.abc import Callable

from mitmproxy import ctx, exceptions, http

from pouch.domain.errors import GatewayError, PouchError
from pouch.domain.keys import Key
from pouch.pricing.price import Price, Retirement
from pouch.providers.base import Endpoint, Provider
from pouch.providers.registry import PROVIDERS, for_host

log = logging.getLogger(__name__)

PROVIDER = "pouch.provider"  # provider name, set for every flow to an LLM host
ENDPOINT = "pouch.endpoint"  # {"name", "metering", "api"}
KEY = "pouch.key"  # the pouch key: {"id", "name", "prefix", "mock", limits, "period", "anchor"}
OBSERVED = "pouch.observed"  # fingerprint of a non-pouch credential let through (observe mode)
OWN_CREDENTIAL = "pouch.own_credential"  # True: charged to KEY, but the client's own credential goes upstream
CALL = "pouch.call"  # {"model", "stream", "max_output", "choices", "hidden_input", "tool_calls", "input_tokens", "exact"}
BODY = "pouch.body"  # the parsed request JSON while the request is in the chain (then dropped)
BODY_CHANGED = "pouch.body_changed"
INJECTED_USAGE = "pouch.injected_usage"  # pouch asked the provider for stream usage
RESERVATION = "pouch.reservation"  # {"id", "amount_usd", "remaining_usd"}
CAPPED = "pouch.output_cap"  # output cap pouch set on a request that had none
TOOLS_CAPPED = "pouch.tools_cap"  # bound on server-side tool calls pouch set on a request that had none
MOCK = "pouch.mock"  # {"usage": {...}, "text_tokens": n}: a mock response was served
REFUSED = "pouch.refused"  # {"kind", "code", "status", "message"}: pouch answered with an error
RESULT = "pouch.usage"  # what was recorded: tokens, cost, remaining budget
CLIENT_PATH = "pouch.client_path"  # the path as the client sent it, once a route changed it


@dataclasses.dataclass(slots=True, eq=False)
class Exchange:
    """What the links find out once about an LLM call and read after: the provider (looked up
    by the host the client called), the endpoint (classified by the path the client sent), and
    what the price table says of the model when the request was made."""

    provider: Provider
    endpoint: Endpoint | None = None
    key: Key | None = None  # the pouch key the request is charged to, as checked (renewed) by the keys link
    entry: Price | Retirement | None = None
    priced: bool = False  # entry was looked up (it may be None: unpriced)


# One per flow to an LLM host (None cached for other flows: the host is looked up once).
_exchanges: weakref.WeakKeyDictionary[http.HTTPFlow, Exchange | None] = weakref.WeakKeyDictionary()


def exchange(flow: http.HTTPFlow) -> Exchange | None:
    """The flow's exchange, or None when the host the client called is not an LLM host."""
    try:
        return _exchanges[flow]
    except KeyError:
        provider = for_host(flow.request.host, flow.request.port)
        found = _exchanges[flow] = Exchange(provider) if provider is not None else None
        return found


def price_entry(flow: http.HTTPFlow, table, model: str, provider: str) -> Price | Retirement | None:
    """What ``table`` says of ``model`` at the request's time, looked up once per flow."""
    found = exchange(flow)
    if found is None:
        return table.lookup(model, provider, requested_at(flow))
    if not found.priced:
        found.entry, found.priced = table.lookup(model, provider, requested_at(flow)), True
    return found.entry


# Once a metered flow is measured, what it really used goes to those that admitted it on a
# guess: the rate limiter counts a worst case against tokens/min, then settles to this.
_on_measured: weakref.WeakKeyDictionary[http.HTTPFlow, Callable[[int | None], None]] = weakref.WeakKeyDictionary()


def when_measured(flow: http.HTTPFlow, callback: Callable[[int | None], None]) -> None:
    _on_measured[flow] = callback


def measured(flow: http.HTTPFlow, tokens: int | None) -> None:
    """The flow was billed ``tokens`` tokens (None: unknown, the worst case stands)."""
    callback = _on_measured.pop(flow, None)
    if callback is not None:
        callback(tokens)


def provider_of(flow: http.HTTPFlow) -> Provider | None:
    name = flow.metadata.get(PROVIDER)
    return PROVIDERS.get(name) if name else None


def endpoint_of(flow: http.HTTPFlow) -> Endpoint | None:
    """The endpoint the client called, also after ``pouch_route`` prefixed the request's path."""
    found = _exchanges.get(flow)
    if found is not None and found.endpoint is not None:
        return found.endpoint
    path = flow.metadata.get(CLIENT_PATH, flow.request.path)
    return provider_of(flow).endpoint(flow.request.method, path)


def requested_at(flow: http.HTTPFlow) -> datetime.datetime:
    """When the client made the request: it is priced by the prices in effect then, also when
    it settles after a price change."""
    return datetime.datetime.fromtimestamp(flow.request.timestamp_start, datetime.UTC)


def metered(flow: http.HTTPFlow) -> bool:
    endpoint = flow.metadata.get(ENDPOINT)
    return bool(endpoint) and endpoint["metering"] == "metered"


def refuse(flow: http.HTTPFlow, error: PouchError) -> None:
    """Answer the client with ``error`` in its provider's shape; nothing goes upstream."""
    provider = provider_of(flow)
    if provider is None:
        raise RuntimeError("refuse() needs a flow to an LLM host")
    reply = provider.error(error)
    flow.response = http.Response.make(reply.status, reply.body, reply.headers)
    flow.metadata[REFUSED] = {"kind": error.kind, "code": error.code, "status": error.status, "message": error.message}


def seconds(option: str) -> float:
    """A duration option's value. Durations are string options because mitmproxy cannot
    parse a float given with --set."""
    text = getattr(ctx.options, option)
    try:
        value = float(text)
    except ValueError:
        raise exceptions.OptionsError(f"{option} must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise exceptions.OptionsError(f"{option} must be a number of seconds, got {text!r}")
    return value


def fail_closed(hook):
    """Hook guard. In the request phase a PouchError becomes that refusal and any other
    exception a GatewayError refusal: never a silent forward of an unaccounted request.
    In the response phase exceptions are logged (the usage link settles conservatively)."""

    @functools.wraps(hook)
    async def guarded(self, flow: http.HTTPFlow):
        try:
            return await hook(self, flow)
        except PouchError as e:
            if hook.__name__ != "request" or flow.response:
                raise
            if provider_of(flow):
                refuse(flow, e)
            else:
                log.error("pouch: %s on %s (no provider to answer in shape): killed", e, flow.request.host)
                flow.kill()
        except Exception:
            # host and path only: a query string may still hold a credential at this point
            log.exception("pouch: %s.%s failed on %s %s%s", type(self).__name__, hook.__name__,
                          flow.request.method, flow.request.host, flow.request.path.split("?")[0])
            if hook.__name__ != "request" or flow.response:
                return
            if provider_of(flow):
                refuse(flow, GatewayError(f"pouch could not process this request ({type(self).__name__} "
                                          "failed); it was not forwarded"))
            else:
                flow.kill()

    return guarded
