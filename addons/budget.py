"""Chain link 3: reserve the worst-case cost before anything leaves the gateway.

What to reserve, or why to refuse, is ``pouch.rules.admission``; one atomic conditional update
admits it or not. The usage link closes the reservation; reservations a crashed gateway left
open are charged in full on restart.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from datetime import timedelta

from mitmproxy import ctx, http
from mitmproxy.proxy.mode_specs import ProxyMode

from pouch.domain.errors import BudgetExhausted, StoreUnavailable
from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.rules import admission
from pouch.services import chain, prompt
from pouch.services.exchange import Reservation
from pouch.services.prices import price_table
from pouch.services.store_thread import store_thread
from pouch.store import instances, ledger

log = logging.getLogger(__name__)

RECOVERY_INTERVAL = 60.0


def exhausted_message(name: str, refusal: ledger.Refusal, period: str, needed: Money) -> str:
    resets = f"{refusal.window_end:%Y-%m-%d %H:%M}" if refusal.window_end else None
    return admission.exhausted_message(name, refusal.spent, refusal.reserved, refusal.budget, period, resets, needed)


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
        # read once here, not on every request
        self.cap_output, self.hold = ctx.options.pouch_cap_output, timedelta(seconds=ctx.options.pouch_hold)
        self.allow_unmetered = ctx.options.pouch_unmetered == "allow"
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
        store_thread.drain()  # the gateway addon drains it too; settlements must run before the release
        if self._claim is not None:  # after the drain: settlements still pending ran under our name
            try:
                instances.release(self._claim)
            except Exception:
                log.exception("pouch: releasing the instance name failed (it frees itself when stale)")
            self._claim = None

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
                ledger.reserve, found.key.id, window, amount, now, owner=self.owner, hold=self.hold,
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
