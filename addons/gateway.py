"""Not a link: what every link shares, owned here so that any link can be removed or
reordered without breaking it — the store (opened from ``pouch_db``) and its thread (drained
when the gateway stops), the tokenizers (loaded before the first request), and the options
more than one link reads (``pouch_unmetered``).

It comes first in the chain: its ``configure`` opens the store before any link's, and its
``done`` drains the store thread before a link releases what settlements still need (the
budget link's instance name)."""

from __future__ import annotations

from mitmproxy import ctx, exceptions

from pouch.services import chain, key_cache, prompt
from pouch.services.store_thread import store_thread
from pouch.store import database


class Gateway:
    def load(self, loader):
        loader.add_option("pouch_db", str, "", "Store URL: sqlite:///path.db or postgresql://user:pass@host/db. "
                          "Default: $POUCH_DB, else a SQLite file under $POUCH_HOME (./data).")
        loader.add_option("pouch_store_timeout", str, "5",
                          "Seconds a request may wait for the store (a lock held elsewhere) before it is "
                          "refused with 503: the gateway fails closed rather than hanging.")
        loader.add_option("pouch_unmetered", str, "refuse",
                          "Paid endpoints pouch cannot price (images, audio, files, batches, fine-tuning, "
                          "realtime...): 'refuse' (403) or 'allow' (forwarded unbudgeted).")

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

    def running(self):
        prompt.warm()

    def done(self):
        store_thread.drain()
