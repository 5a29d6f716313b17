"""Chain link 2: requests/min, tokens/min and requests in flight, per key, per team, and
requests/min per end user of a key (``--user-rpm``): a request must fit every level.

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
from pouch.domain.ratelimit import WINDOW_SECONDS, Hold, KeyLimits, admit_all
from pouch.pricing import reserve
from pouch.pricing.price import Price
from pouch.providers.base import SIDE
from pouch.services import chain, prompt
from pouch.services.prices import price_table

MAX_IDLE_USERS = 10_000  # end users' limits kept before idle ones are dropped


class RateLimit:
    def __init__(self):
        self.limits: dict[int, KeyLimits] = {}
        self.team_limits: dict[int, KeyLimits] = {}
        self.user_limits: dict[tuple[int, str], KeyLimits] = {}
        # flow -> (hold, release): the finalizer also frees the slot of a flow that ends
        # without a response or error hook, so a key can never be stuck at its limit.
        self._slots: weakref.WeakKeyDictionary[http.HTTPFlow, tuple[Hold, weakref.finalize]] = (
            weakref.WeakKeyDictionary())

    @staticmethod
    def _kept(table: dict, ident, rpm, tpm, max_concurrent, whose: str) -> KeyLimits | None:
        if not (rpm or tpm or max_concurrent):
            return None
        limits = table.get(ident)
        if limits is None:
            limits = table[ident] = KeyLimits(rpm, tpm, max_concurrent, whose)
        elif not limits.matches(rpm, tpm, max_concurrent):
            limits.reconfigure(rpm, tpm, max_concurrent)
        return limits

    def limits_for(self, key: Key, end_user: str | None = None) -> list[tuple[str, KeyLimits]]:
        """The limits a request of ``key`` (for ``end_user``) must fit: the key's, its team's and
        its end user's requests/min, each with who they are."""
        found = []
        if limits := self._kept(self.limits, key.id, key.rpm, key.tpm, key.max_concurrent, "the key's"):
            found.append((f"key '{key.name}'", limits))
        if (team := key.team) is not None and (
                limits := self._kept(self.team_limits, team.id, team.rpm, team.tpm, team.max_concurrent, "the team's")):
            found.append((f"team '{team.name}'", limits))
        if end_user is not None and key.user_rpm:
            if len(self.user_limits) >= MAX_IDLE_USERS:
                self._drop_idle_users()
            limits = self._kept(self.user_limits, (key.id, end_user), key.user_rpm, None, None, "the end user's")
            found.append((f"end user '{end_user}' of key '{key.name}'", limits))
        return found

    def _drop_idle_users(self) -> None:
        """An end user with nothing in the last minute has nothing to count: forget it."""
        idle_since = time.monotonic() - WINDOW_SECONDS
        for ident in [i for i, limits in self.user_limits.items() if limits.last_used <= idle_since]:
            del self.user_limits[ident]

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
        levels = self.limits_for(key, found.attribution.end_user)
        if not levels:
            return
        tokens = 0
        if found.metered and any(limits.tokens for _, limits in levels):
            entry = chain.price_entry(flow, price_table(), found.call.model, found.provider.name)
            price = entry if isinstance(entry, Price) else None
            tokens = reserve.worst_tokens(price, await prompt.bounds(flow))
        hold, verdict = admit_all(levels, time.monotonic(), tokens)
        if hold is None:
            headers = dict(verdict.headers)
            if not math.isinf(verdict.retry_after):
                headers["retry-after"] = str(math.ceil(verdict.retry_after))
                headers["retry-after-ms"] = str(math.ceil(verdict.retry_after * 1000))
            else:
                headers["x-should-retry"] = "false"
            reason = verdict.reason
            if math.isinf(verdict.retry_after) and tokens and found.call.max_output is None:
                reason += " (the request sets no output cap, so the model's maximum output counts: set one)"
            chain.refuse(flow, RateLimited(reason, headers))
            return
        self._slots[flow] = (hold, weakref.finalize(flow, hold.release))
        if tokens:
            chain.when_measured(flow, lambda used: used is None or hold.settle_tokens(used))

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
