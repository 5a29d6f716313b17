"""Chain link 2: requests/min, tokens/min and requests in flight of the key, of its team, and
requests/min of the key's end user (``--user-rpm``): a request must fit every level.

The limits live in the store (``pouch.store.limits``), so they are exact across every gateway
on one store and survive a restart. A metered request is taken at its limits in the very
transaction that reserves its worst case (the budget link): this link only works out what it
counts — the same worst case the budget reserves, in tokens — and the settlement puts the
tokens the provider billed in its place. A free request (a model list) counts against
requests/min here, in a transaction of its own, and holds no slot in flight.
"""

from __future__ import annotations

from mitmproxy import http

from pouch.pricing import reserve
from pouch.pricing.price import Price
from pouch.providers.base import SIDE
from pouch.services import chain, prompt, reserving
from pouch.services.levels import limits
from pouch.services.prices import price_table
from pouch.store import ledger
from pouch.store import limits as limit_store


class RateLimit:
    @chain.fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        found = chain.existing(flow)
        key = found.key if found else None
        # Side paths (settings, telemetry) are the client's housekeeping, not the key's traffic: they
        # cost nothing, and counting them would spend a small requests/min on a client's start-up
        # calls, or refuse its settings (pouch.providers.side_paths).
        if not key or (found.endpoint and found.endpoint.metering == SIDE):
            return
        found.limits = limits(key, found.attribution.end_user)
        if not found.limits:
            return
        if found.metered:
            if any(limit.tpm for limit in found.limits):
                entry = chain.price_entry(flow, price_table(), found.call.model, found.provider.name)
                price = entry if isinstance(entry, Price) else None
                found.limit_tokens = reserve.worst_tokens(price, await prompt.bounds(flow))
            return  # taken with its reservation (addons/budget.py)
        counted = await reserving.store(ledger.count, found.limits, limit_store.clock())
        if isinstance(counted, ledger.RateRefusal):
            raise reserving.rate_limited(counted, 0, has_cap=True)
        found.limit_headers = counted

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        found = chain.existing(flow)
        if found is not None and found.limit_headers and flow.response is not None:
            flow.response.headers.update(found.limit_headers)
