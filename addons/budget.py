"""Chain link 3: reserve the worst-case cost before anything leaves the gateway.

Worst case (``pouch.pricing.reserve``) = input tokens (exact for OpenAI models, an upper
bound otherwise) at the dearest input-side price + every output token the request may
produce at the dearest output price + each paid server-side tool call it allows, with the
context its round may re-read. One atomic conditional update admits it or not. A request without an output
cap that does not fit may be capped to what the budget still covers. The usage link closes
the reservation; reservations a crashed gateway left open are charged in full on restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta

from mitmproxy import ctx, http
from mitmproxy.proxy.mode_specs import ProxyMode

from pouch.domain.errors import (BudgetExhausted, ContextTooLong, ModelNotPriced, ModelRetired, StoreUnavailable,
                                 ToolNotMetered)
from pouch.domain.money import Money
from pouch.domain.periods import Period, utcnow
from pouch.pricing import reserve
from pouch.pricing.price import Retirement
from pouch.services import chain, prompt
from pouch.services.prices import price_table
from pouch.services.store_thread import store_thread
from pouch.store import instances, ledger

log = logging.getLogger(__name__)

RECOVERY_INTERVAL = 60.0


def exhausted_message(name: str, refusal: ledger.Refusal, period: str, needed: Money) -> str:
    held = f" and {refusal.reserved} held by requests in flight" if refusal.reserved else ""
    resets = f", resets {refusal.window_end:%Y-%m-%d %H:%M} UTC" if refusal.window_end else ""
    return (f"budget of key '{name}' exhausted: {refusal.spent} spent{held} of {refusal.budget} "
            f"(period {period}{resets}); this request may cost up to {needed}")


def instance_name(host: str, modes: Sequence[str], listen_port: int | None) -> str:
    """The default instance name: the host and every port the gateway listens on, e.g.
    ``box:8081+8082``. Two gateways on one host cannot listen on the same port, so they get
    different names."""
    ports = set()
    for spec in modes:
        try:
            port = ProxyMode.parse(spec).listen_port(listen_port)
        except ValueError:
            continue  # mitmproxy refuses the mode itself
        if port is not None:
            ports.add(port)
    return f"{host}:{'+'.join(map(str, sorted(ports)))}" if ports else host


class Budget:
    def __init__(self):
        self._recovery: asyncio.Task | None = None
        self._heartbeat: asyncio.Task | None = None
        self._name: str | None = None
        self._claim: instances.Holder | None = None  # our hold on the name, from running() to done()

    def load(self, loader):
        loader.add_option("pouch_cap_output", bool, True,
                          "A request with no output cap whose worst case does not fit the key's remaining "
                          "budget is capped to the output the budget covers (header x-pouch-output-capped) "
                          "instead of refused.")
        loader.add_option("pouch_hold", int, 900,
                          "Seconds a reservation may stay open. After that, unless the gateway holding it is "
                          "alive (its heartbeat; it then settles it itself, within a day), any gateway charges it "
                          "in full: spend is never silently lost.")
        loader.add_option("pouch_instance", str, "",
                          "This gateway's name in the store (default: host name and every listen port, e.g. "
                          "box:8081+8082). On start it charges what a previous run under the same name left open; "
                          "it refuses to start while a live gateway holds the name.")

    def configure(self, updated):
        if not updated & {"pouch_instance", "mode", "listen_port"}:
            return
        if self._claim is None:
            self._name = self._configured_name()
        elif self._configured_name() != self._name:
            log.warning("pouch: this gateway keeps the instance name %r until it restarts", self._name)

    @staticmethod
    def _configured_name() -> str:
        return ctx.options.pouch_instance or instance_name(socket.gethostname(), ctx.options.mode,
                                                           ctx.options.listen_port)

    @property
    def owner(self) -> str:
        """This gateway's name in the store, which its reservations carry (fixed once claimed)."""
        if self._name is None:
            self._name = self._configured_name()
        return self._name

    def running(self):
        try:
            self._claim = instances.claim(self.owner, utcnow())
        except instances.NameTaken as e:
            # Starting anyway would charge the other gateway's requests in flight as "left open".
            log.error("pouch: not starting: %s. Two gateways under one name charge each other's requests in "
                      "flight: give this one its own name with --set pouch_instance=NAME, or stop the other "
                      "first (a holder silent for %d s, or gone from this host, frees the name).",
                      e, instances.STALE_AFTER.total_seconds())
            ctx.master.shutdown()
            return
        prompt.warm()
        recovered = ledger.recover(utcnow(), owner=self.owner)
        if recovered:
            log.warning("pouch: charged %d reservation(s) a previous run left open", recovered)
        self._recovery = asyncio.create_task(self._recover_periodically())
        self._heartbeat = asyncio.create_task(self._heartbeat_periodically())

    async def _heartbeat_periodically(self):
        while True:
            await asyncio.sleep(instances.HEARTBEAT_INTERVAL)
            try:
                if not await store_thread.run(instances.heartbeat, self._claim, utcnow()):
                    log.error("pouch: another gateway took over the instance name %r (this one was silent too "
                              "long); claiming it back", self._name)
                    self._claim = await store_thread.run(instances.claim, self._name, utcnow())
            except instances.NameTaken as e:
                log.error("pouch: %s: two gateways now share one name; restart this one with its own name "
                          "(--set pouch_instance=NAME)", e)
            except Exception:
                log.exception("pouch: instance heartbeat failed")

    async def _recover_periodically(self):
        while True:
            await asyncio.sleep(RECOVERY_INTERVAL)
            try:
                await store_thread.run(ledger.recover, utcnow())
            except Exception:
                log.exception("pouch: reservation recovery failed")

    def done(self):
        for task in (self._recovery, self._heartbeat):
            if task:
                task.cancel()
        store_thread.drain()
        if self._claim is not None:  # after the drain: settlements still pending ran under our name
            try:
                instances.release(self._claim)
            except Exception:
                log.exception("pouch: releasing the instance name failed (it frees itself when stale)")
            self._claim = None

    @chain.fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not chain.metered(flow) or chain.KEY not in flow.metadata:
            return
        key, call = flow.metadata[chain.KEY], flow.metadata[chain.CALL]
        provider = flow.metadata[chain.PROVIDER]
        price = price_table().lookup(call["model"], provider, chain.requested_at(flow))
        if isinstance(price, Retirement):
            raise ModelRetired(f"{price.message} (pouch refuses it rather than send a request the provider "
                               "no longer answers)", {"x-should-retry": "false"})
        if price is None:
            raise ModelNotPriced(
                f"pouch has no price for model '{call['model']}', so it cannot budget it: ask the operator "
                "to add one (pouch prices import, or $POUCH_HOME/prices.json)")
        bounds = await prompt.bounds(flow)
        if why := reserve.unpriced_context(price, bounds):
            raise ContextTooLong(f"{why}: pouch refuses it rather than price it at the short-context rate")
        price = price.of_provider(provider)
        try:
            worst = reserve.worst_case(price, bounds)
        except ValueError as e:  # a server tool this provider's price list has no fee for
            if ctx.options.pouch_unmetered != "allow":
                raise ToolNotMetered(f"pouch has {e} of {provider}, so this request is refused (the operator "
                                     "can allow it with pouch_unmetered=allow)") from None
            worst = reserve.worst_case(price, dataclasses.replace(bounds, tool_calls=()))
        needed = worst.total
        now = utcnow()
        window = Period.parse(key["period"]).window(now, datetime.fromisoformat(key["anchor"]))
        result = await self._reserve(flow, key, window, needed, now)
        if isinstance(result, ledger.Refusal) and not call["max_output"] and ctx.options.pouch_cap_output:
            affordable = reserve.affordable_output(worst, result.budget - result.spent - result.reserved)
            if affordable >= 1:
                chain.provider_of(flow).cap_output(chain.endpoint_of(flow), flow.metadata[chain.BODY], affordable)
                flow.metadata[chain.BODY_CHANGED] = True
                flow.metadata[chain.CAPPED] = affordable
                needed = dataclasses.replace(worst, max_output=affordable).total
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
                # Sent before the request settles: what is left while this request's worst case
                # (x-pouch-request-reserved) is still held. The flow comment says what is left after it.
                flow.response.headers["x-pouch-budget-remaining"] = reservation["remaining_usd"]
                flow.response.headers["x-pouch-request-reserved"] = reservation["amount_usd"]
            if chain.CAPPED in flow.metadata:
                flow.response.headers["x-pouch-output-capped"] = str(flow.metadata[chain.CAPPED])
            if chain.TOOLS_CAPPED in flow.metadata:
                flow.response.headers["x-pouch-tool-calls-capped"] = str(flow.metadata[chain.TOOLS_CAPPED])
