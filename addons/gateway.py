"""Not a link: what every link shares, owned here so that any link can be removed or
reordered without breaking it — the store (opened from ``pouch_db``) and its thread (drained
when the gateway stops), this gateway's name in the store (claimed, kept alive, released) and
the recovery of reservations left open, the tokenizers (loaded before the first request), and
the options more than one link reads (``pouch_unmetered``).

It comes first in the chain: its ``configure`` opens the store before any link's, and its
``done`` drains the store thread before a link releases what settlements still need (the
budget link's instance name)."""

from __future__ import annotations

import asyncio
import time
import gc
import logging
import socket
from collections.abc import Sequence

from mitmproxy import ctx, exceptions
from mitmproxy.proxy.mode_specs import ProxyMode

from pouch.domain.periods import utcnow
from pouch.services import chain, key_cache, prompt
from pouch.services.instance import instance
from pouch.services.store_thread import store_thread
from pouch.store import database, instances, ledger

log = logging.getLogger(__name__)

RECOVERY_INTERVAL = 60.0


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


class Gateway:
    def __init__(self, *, freeze_heap: bool = False):
        # The process's own gateway (addons/pouch.py) freezes what is alive once it runs; one made
        # inside another program (a test) leaves that program's collector alone.
        self.freeze_heap = freeze_heap
        self._recovery: asyncio.Task | None = None
        self._heartbeat: asyncio.Task | None = None
        self._name: str | None = None
        self._claim: instances.Holder | None = None  # our hold on the name, from running() to done()

    def load(self, loader):
        loader.add_option("pouch_db", str, "", "Store URL: sqlite:///path.db or postgresql://user:pass@host/db. "
                          "Default: $POUCH_DB, else a SQLite file under $POUCH_HOME (./data).")
        loader.add_option("pouch_store_timeout", str, "5",
                          "Seconds a request may wait for the store (a lock held elsewhere) before it is "
                          "refused with 503: the gateway fails closed rather than hanging.")
        loader.add_option("pouch_unmetered", str, "refuse",
                          "Paid endpoints pouch cannot price (images, audio, files, batches, fine-tuning, "
                          "realtime...): 'refuse' (403) or 'allow' (forwarded unbudgeted).")
        loader.add_option("pouch_instance", str, "",
                          "This gateway's name in the store (default: host name and every listen port, e.g. "
                          "box:8081+8082). On start it charges what a previous run under the same name left open; "
                          "it refuses to start while a live gateway holds the name.")

    def configure(self, updated):
        if "pouch_unmetered" in updated and ctx.options.pouch_unmetered not in ("refuse", "allow"):
            raise exceptions.OptionsError("pouch_unmetered must be 'refuse' or 'allow'")
        if "pouch_db" in updated or "pouch_store_timeout" in updated:
            timeout = chain.seconds("pouch_store_timeout")
            try:
                database.open_store(ctx.options.pouch_db or None, timeout)
            except Exception as e:
                raise exceptions.OptionsError(f"pouch_db: cannot open the store: {e}") from e
            key_cache.keys.cache.clear()  # keys read from another store are not this one's
        if not updated & {"pouch_instance", "mode", "listen_port"}:
            return
        if self._claim is None:
            self._name = instance.name = self._configured_name()
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
        instance.name = self._name
        return self._name

    def running(self):
        prompt.warm()
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
        if self.freeze_heap:
            # What is alive now (mitmproxy, the tokenizers, the price table, the store) lives as long
            # as the process. Frozen, the collector stops walking its ~100k objects on every full
            # collection: that walk was ~130 us of every request under load (scripts/profile).
            gc.collect()
            gc.freeze()

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
                await store_thread.run(ledger.prune_rates, time.time())  # the minutes no limit counts any more
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

