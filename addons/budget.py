"""Chain link 3: reserve the worst-case cost before anything leaves the gateway.

Worst case = input tokens (exact for OpenAI models, an upper bound otherwise) at the
dearest input-side price + every output token the request may produce at the dearest
output price. One atomic conditional update admits it or not. A request without an output
cap that does not fit may be capped to what the budget still covers. The usage link closes
the reservation; reservations a crashed gateway left open are charged in full on restart.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import datetime, timedelta

from mitmproxy import ctx, http

from pouch.domain.errors import BudgetExhausted, ModelNotPriced, StoreUnavailable
from pouch.domain.money import Money
from pouch.domain.periods import Period, utcnow
from pouch.pricing.table import Price
from pouch.services import chain, prompt
from pouch.services.prices import price_table
from pouch.services.store_thread import store_thread
from pouch.store import ledger

log = logging.getLogger(__name__)

DEFAULT_MAX_OUTPUT = 32_768  # when neither the request nor the price table caps output
DEFAULT_MAX_INPUT = 1_000_000  # a model's context window, when the price table does not say
RECOVERY_INTERVAL = 60.0


def worst_case(price: Price, input_tokens: int, max_output: int, choices: int) -> tuple[Money, Money]:
    """(input cost, output cost per generated token) in the worst case."""
    tier = price.for_input(input_tokens)
    dearest_input = max(p for p in (tier.input, tier.cache_write_5m, tier.cache_write_1h) if p is not None)
    return dearest_input * input_tokens, price.highest_output * choices


def exhausted_message(name: str, refusal: ledger.Refusal, period: str, needed: Money) -> str:
    held = f" and {refusal.reserved} held by requests in flight" if refusal.reserved else ""
    resets = f", resets {refusal.window_end:%Y-%m-%d %H:%M} UTC" if refusal.window_end else ""
    return (f"budget of key '{name}' exhausted: {refusal.spent} spent{held} of {refusal.budget} "
            f"(period {period}{resets}); this request may cost up to {needed}")


class Budget:
    def __init__(self):
        self._recovery: asyncio.Task | None = None

    def load(self, loader):
        loader.add_option("pouch_cap_output", bool, True,
                          "A request with no output cap whose worst case does not fit the key's remaining "
                          "budget is capped to the output the budget covers (header x-pouch-output-capped) "
                          "instead of refused.")
        loader.add_option("pouch_hold", int, 900,
                          "Seconds a reservation may stay open. After that (the gateway holding it crashed) "
                          "any gateway charges it in full: spend is never silently lost.")
        loader.add_option("pouch_instance", str, "",
                          "This gateway's name in the store (default: host name and listen port). On start it "
                          "charges what a previous run under the same name left open.")

    @property
    def owner(self) -> str:
        return ctx.options.pouch_instance or f"{socket.gethostname()}:{ctx.options.listen_port or 8080}"

    def running(self):
        prompt.warm()
        recovered = ledger.recover(utcnow(), owner=self.owner)
        if recovered:
            log.warning("pouch: charged %d reservation(s) a previous run left open", recovered)
        self._recovery = asyncio.create_task(self._recover_periodically())

    async def _recover_periodically(self):
        while True:
            await asyncio.sleep(RECOVERY_INTERVAL)
            try:
                await store_thread.run(ledger.recover, utcnow())
            except Exception:
                log.exception("pouch: reservation recovery failed")

    def done(self):
        if self._recovery:
            self._recovery.cancel()
        store_thread.drain()

    @chain.fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not chain.metered(flow) or chain.KEY not in flow.metadata:
            return
        key, call = flow.metadata[chain.KEY], flow.metadata[chain.CALL]
        price = price_table().resolve(call["model"], flow.metadata[chain.PROVIDER])
        if price is None:
            raise ModelNotPriced(
                f"pouch has no price for model '{call['model']}', so it cannot budget it: ask the operator "
                "to add one (pouch prices import, or $POUCH_HOME/prices.json)")
        input_tokens = await prompt.input_tokens(flow)
        if call.get("hidden_input"):  # stored context the body does not show is billed as input
            input_tokens = max(input_tokens, price.max_input_tokens or DEFAULT_MAX_INPUT)
        max_output = call["max_output"] or price.max_output_tokens or DEFAULT_MAX_OUTPUT
        input_cost, per_output = worst_case(price, input_tokens, max_output, call["choices"])
        needed = input_cost + per_output * max_output
        now = utcnow()
        window = Period.parse(key["period"]).window(now, datetime.fromisoformat(key["anchor"]))
        result = await self._reserve(flow, key, window, needed, now)
        if isinstance(result, ledger.Refusal) and not call["max_output"] and ctx.options.pouch_cap_output:
            left = result.budget - result.spent - result.reserved - input_cost
            affordable = left.pico // per_output.pico if per_output.pico else 0
            if affordable >= 1:
                chain.provider_of(flow).cap_output(chain.endpoint_of(flow), flow.metadata[chain.BODY], affordable)
                flow.metadata[chain.BODY_CHANGED] = True
                flow.metadata[chain.CAPPED] = affordable
                needed = input_cost + per_output * affordable
                result = await self._reserve(flow, key, window, needed, now)
        if isinstance(result, ledger.Refusal):
            raise BudgetExhausted(exhausted_message(key["name"], result, key["period"], needed),
                                  {"x-should-retry": "false"})
        flow.metadata[chain.RESERVATION] = {
            "id": result.id, "amount_usd": result.amount.json(), "price_model": price.model,
            "remaining_usd": None if result.remaining is None else result.remaining.json(),
        }

    async def _reserve(self, flow, key, window, amount, now):
        try:
            return await store_thread.run(
                ledger.reserve, key["id"], window, amount, now, owner=self.owner,
                hold=timedelta(seconds=ctx.options.pouch_hold), provider=flow.metadata[chain.PROVIDER],
                model=flow.metadata[chain.CALL]["model"], endpoint=flow.metadata[chain.ENDPOINT]["name"])
        except Exception as e:
            log.error("pouch: reservation failed: %s", e)
            raise StoreUnavailable("the gateway cannot reach its budget store; nothing was sent, "
                                   "try again shortly") from e

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        reservation = flow.metadata.get(chain.RESERVATION)
        if reservation and flow.response is not None:
            if reservation["remaining_usd"] is not None:
                flow.response.headers["x-pouch-budget-remaining"] = reservation["remaining_usd"]
            if chain.CAPPED in flow.metadata:
                flow.response.headers["x-pouch-output-capped"] = str(flow.metadata[chain.CAPPED])
