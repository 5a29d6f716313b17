"""Chain link 2: requests/min, tokens/min and requests in flight, per key.

A request counts against tokens/min with the same worst case the budget reserves (its output
cap, else the model's maximum; the context its server-side tool rounds may re-read), and is
settled to the tokens the provider reports once it is measured.

Limits live in this process's memory (the event loop is their only writer, so they are
exact under any concurrency). With several gateways sharing one store each enforces the
limits on its own share of the traffic.
"""

from __future__ import annotations

import math
import time
import weakref

from mitmproxy import http

from pouch.domain.errors import RateLimited
from pouch.domain.keys import Key
from pouch.domain.ratelimit import KeyLimits
from pouch.pricing import reserve
from pouch.pricing.price import Price
from pouch.providers.base import SIDE
from pouch.services import chain, prompt
from pouch.services.prices import price_table

class RateLimit:
    def __init__(self):
        self.limits: dict[int, KeyLimits] = {}
        # flow -> (limits, release): the finalizer also frees the slot of a flow that ends
        # without a response or error hook, so a key can never be stuck at its limit.
        self._slots: weakref.WeakKeyDictionary[http.HTTPFlow, tuple[KeyLimits, weakref.finalize]] = (
            weakref.WeakKeyDictionary())

    def limits_for(self, key: Key) -> KeyLimits | None:
        if not (key.rpm or key.tpm or key.max_concurrent):
            return None
        limits = self.limits.get(key.id)
        if limits is None:
            limits = self.limits[key.id] = KeyLimits(key.rpm, key.tpm, key.max_concurrent)
        elif not limits.matches(key.rpm, key.tpm, key.max_concurrent):
            limits.reconfigure(key.rpm, key.tpm, key.max_concurrent)
        return limits

    @chain.fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        found = chain.existing(flow)
        key = found.key if found else None
        # Side paths (settings, telemetry) are the client's housekeeping, not the key's traffic: they
        # cost nothing, and counting them would spend a small requests/min on a client's start-up
        # calls, or refuse its settings (pouch.providers.side_paths).
        if not key or (found.endpoint and found.endpoint.metering == SIDE) or (limits := self.limits_for(key)) is None:
            return
        tokens = 0
        if key.tpm and found.metered:
            entry = chain.price_entry(flow, price_table(), found.call.model, found.provider.name)
            price = entry if isinstance(entry, Price) else None
            tokens = reserve.worst_tokens(price, await prompt.bounds(flow))
        verdict = limits.admit(time.monotonic(), tokens)
        if verdict.retry_after:
            headers = dict(verdict.headers)
            if not math.isinf(verdict.retry_after):
                headers["retry-after"] = str(math.ceil(verdict.retry_after))
                headers["retry-after-ms"] = str(math.ceil(verdict.retry_after * 1000))
            else:
                headers["x-should-retry"] = "false"
            reason = verdict.reason
            if math.isinf(verdict.retry_after) and tokens and found.call.max_output is None:
                reason += " (the request sets no output cap, so the model's maximum output counts: set one)"
            chain.refuse(flow, RateLimited(f"key '{key.name}' is rate limited: {reason}", headers))
            return
        self._slots[flow] = (limits, weakref.finalize(flow, limits.release))
        if verdict.tokens_entry is not None:
            entry = verdict.tokens_entry
            chain.when_measured(flow, lambda used: used is None or limits.settle_tokens(entry, used))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        held = self._slots.get(flow)
        if held is not None and flow.response is not None:
            flow.response.headers.update(held[0].headers(time.monotonic()))

    def response(self, flow: http.HTTPFlow) -> None:
        self._release(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._release(flow)

    def _release(self, flow: http.HTTPFlow) -> None:
        found = chain.existing(flow)
        if found is not None and found.refusal:  # a later link refused it: nothing was billed
            chain.measured(flow, 0)
        held = self._slots.pop(flow, None)
        if held is not None:
            held[1]()  # runs release once
