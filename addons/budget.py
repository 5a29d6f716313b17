"""Chain link 3: reserve the worst-case cost before anything leaves the gateway.

What to reserve, or why to refuse, is ``pouch.rules.admission``; one atomic conditional update
admits it or not. The usage link closes the reservation; reservations a crashed gateway left
open are charged in full on restart (the gateway addon, ``addons/gateway.py``).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from mitmproxy import ctx, http

from pouch.domain.errors import BudgetExhausted, StoreUnavailable
from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.rules import admission
from pouch.services import chain, prompt
from pouch.services.exchange import Reservation
from pouch.services.instance import instance
from pouch.services.prices import price_table
from pouch.services.store_thread import store_thread
from pouch.store import ledger

log = logging.getLogger(__name__)


def exhausted_message(name: str, refusal: ledger.Refusal, period: str, needed: Money) -> str:
    resets = f"{refusal.window_end:%Y-%m-%d %H:%M}" if refusal.window_end else None
    return admission.exhausted_message(name, refusal.spent, refusal.reserved, refusal.budget, period, resets, needed)


class Budget:
    def load(self, loader):
        loader.add_option("pouch_cap_output", bool, True,
                          "A request with no output cap whose worst case does not fit the key's remaining "
                          "budget is capped to the output the budget covers (header x-pouch-output-capped) "
                          "instead of refused.")
        loader.add_option("pouch_hold", int, 900,
                          "Seconds a reservation may stay open. After that, unless the gateway holding it is "
                          "alive (its heartbeat; it then settles it itself, within a day), any gateway charges it "
                          "in full: spend is never silently lost.")

    def configure(self, updated):
        # read once here, not on every request
        self.cap_output, self.hold = ctx.options.pouch_cap_output, timedelta(seconds=ctx.options.pouch_hold)
        self.allow_unmetered = ctx.options.pouch_unmetered == "allow"

    @chain.fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        found = chain.existing(flow)
        if flow.response or flow.error or found is None or not found.metered or found.key is None:
            return
        key, call, provider = found.key, found.call, found.provider.name
        entry = chain.price_entry(flow, price_table(), call.model, provider)
        plan = admission.plan(entry, call.model, provider, await prompt.bounds(flow),
                              allow_unmetered=self.allow_unmetered)
        price, needed = plan.price, plan.amount
        now = utcnow()
        window = key.window(now)
        result = await self._reserve(found, window, needed, now)
        if isinstance(result, ledger.Refusal):
            cap = admission.capped(plan, result.budget - result.spent - result.reserved,
                                   has_cap=bool(call.max_output), may_cap=self.cap_output)
            if cap is not None:
                found.provider.cap_output(found.endpoint, found.body, cap)
                found.body_changed, found.output_capped = True, cap
                needed = admission.with_cap(plan, cap).amount
                result = await self._reserve(found, window, needed, now)
        if isinstance(result, ledger.Refusal):
            raise BudgetExhausted(exhausted_message(key.name, result, str(key.period), needed),
                                  {"x-should-retry": "false"})
        found.reservation = Reservation(result.id, result.amount, result.remaining, price.model)

    async def _reserve(self, found, window, amount, now):
        try:
            return await store_thread.run(
                ledger.reserve, found.key.id, window, amount, now, owner=instance.name, hold=self.hold,
                provider=found.provider.name, model=found.call.model, endpoint=found.endpoint.name)
        except Exception as e:
            log.error("pouch: reservation failed: %s", e)
            raise StoreUnavailable("the gateway cannot reach its budget store; nothing was sent, "
                                   "try again shortly") from e

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        found = chain.existing(flow)
        reservation = found.reservation if found else None
        if reservation and flow.response is not None:
            if reservation.remaining is not None:
                # Sent before the request settles: what is left while this request's worst case
                # (x-pouch-request-reserved) is still held. The flow comment says what is left after it.
                flow.response.headers["x-pouch-budget-remaining"] = reservation.remaining.json()
                flow.response.headers["x-pouch-request-reserved"] = reservation.amount.json()
            if found.output_capped is not None:
                flow.response.headers["x-pouch-output-capped"] = str(found.output_capped)
            if found.tools_capped is not None:
                flow.response.headers["x-pouch-tool-calls-capped"] = str(found.tools_capped)
