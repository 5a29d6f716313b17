"""Chain link 3: reserve the worst-case cost before anything leaves the gateway.

What to reserve, or why to refuse, is ``pouch.rules.admission``; one atomic conditional update
admits it or not. The usage link closes the reservation; reservations a crashed gateway left
open are charged in full on restart (the gateway addon, ``addons/gateway.py``).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from mitmproxy import ctx, exceptions, http

from pouch.domain.errors import InvalidInput
from pouch.domain.keys import parse_budget
from pouch.domain.periods import Period, utcnow
from pouch.rules import admission
from pouch.services import chain, prompt, reserving
from pouch.services.exchange import Reservation
from pouch.services.levels import levels
from pouch.services.prices import price_table

log = logging.getLogger(__name__)


class Budget:
    def load(self, loader):
        loader.add_option("pouch_cap_output", bool, True,
                          "A request with no output cap whose worst case does not fit the key's remaining "
                          "budget is capped to the output the budget covers (header x-pouch-output-capped) "
                          "instead of refused.")
        loader.add_option("pouch_budget_total", str, "",
                          "The gateway's ceiling in USD (e.g. 500): every key's requests together fit it, reserved "
                          "in the same transaction as the key's budget. Empty: no ceiling.")
        loader.add_option("pouch_budget_total_period", str, "monthly",
                          "The ceiling's period: none, daily, weekly, monthly (UTC calendar) or rolling 12h/30d.")
        loader.add_option("pouch_hold", int, 900,
                          "Seconds a reservation may stay open. After that, unless the gateway holding it is "
                          "alive (its heartbeat; it then settles it itself, within a day), any gateway charges it "
                          "in full: spend is never silently lost.")

    def configure(self, updated):
        # read once here, not on every request
        self.cap_output, self.hold = ctx.options.pouch_cap_output, timedelta(seconds=ctx.options.pouch_hold)
        self.allow_unmetered = ctx.options.pouch_unmetered == "allow"
        self.mock_all = getattr(ctx.options, "pouch_mock", "off") == "all"  # the mock link's option
        try:
            self.total = parse_budget(ctx.options.pouch_budget_total or None)
            self.total_period = Period.parse(ctx.options.pouch_budget_total_period)
        except InvalidInput as e:
            raise exceptions.OptionsError(f"pouch_budget_total: {e}") from None

    @chain.fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        found = chain.existing(flow)
        if flow.response or flow.error or found is None or not found.metered or found.key is None:
            return
        key, call, provider = found.key, found.call, found.provider.name
        entry = chain.price_entry(flow, price_table(), call.model, provider)
        plan = admission.plan(entry, call.model, provider, await prompt.bounds(flow),
                              allow_unmetered=self.allow_unmetered)
        now = utcnow()

        def cap(tokens: int) -> None:
            found.provider.cap_output(found.endpoint, found.body, tokens)
            found.body_changed, found.output_capped = True, tokens

        result, _ = await reserving.reserve(
            key, self.levels(key, found.attribution.end_user, now), plan, now, hold=self.hold,
            has_cap=bool(call.max_output), may_cap=self.cap_output, cap=cap,
            provider=provider, model=call.model, endpoint=found.endpoint.name,
            limits=found.limits, tokens=found.limit_tokens, choices=call.choices, mock=key.mock or self.mock_all)
        found.reservation = Reservation(result.id, result.amount, result.remaining, plan.price.model)
        found.limit_headers = result.headers or None

    def levels(self, key, end_user: str | None, now) -> tuple:
        return levels(key, end_user, now, self.total, self.total_period)

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
