"""What the chain's links share: the flow's ``Exchange`` (``pouch.services.exchange``), the
one way a link answers a client, and the guard that makes a failing link refuse instead of
forwarding unaccounted."""

from __future__ import annotations

import datetime
import functools
import logging
import math

from mitmproxy import ctx, exceptions, http

from pouch.domain.errors import GatewayError, PouchError
from pouch.pricing.price import Price, Retirement
from pouch.providers.base import Endpoint, Provider
from pouch.services.exchange import Exchange, exchange, existing

log = logging.getLogger(__name__)

__all__ = ["Exchange", "exchange", "existing"]


def price_entry(flow: http.HTTPFlow, table, model: str, provider: str) -> Price | Retirement | None:
    """What ``table`` says of ``model`` at the request's time, looked up once per flow."""
    found = exchange(flow)
    if found is None:
        return table.lookup(model, provider, requested_at(flow))
    if not found.priced:
        found.entry, found.priced = table.lookup(model, provider, found.requested_at), True
    return found.entry


def provider_of(flow: http.HTTPFlow) -> Provider | None:
    found = exchange(flow)
    return found.provider if found is not None else None


def endpoint_of(flow: http.HTTPFlow) -> Endpoint | None:
    """The endpoint the client called (classified once, by the path the client sent)."""
    found = existing(flow)
    return found.endpoint if found is not None else None


def requested_at(flow: http.HTTPFlow) -> datetime.datetime:
    """When the client made the request: it is priced by the prices in effect then, also when
    it settles after a price change."""
    return datetime.datetime.fromtimestamp(flow.request.timestamp_start, datetime.UTC)


def metered(flow: http.HTTPFlow) -> bool:
    found = existing(flow)
    return found is not None and found.metered


def refuse(flow: http.HTTPFlow, error: PouchError) -> None:
    """Answer the client with ``error`` in its provider's shape; nothing goes upstream."""
    found = exchange(flow)
    if found is None:
        raise RuntimeError("refuse() needs a flow to an LLM host")
    reply = found.provider.error(error)
    flow.response = http.Response.make(reply.status, reply.body, reply.headers)
    found.refusal = {"kind": error.kind, "code": error.code, "status": error.status, "message": error.message}


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
