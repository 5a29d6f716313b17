"""``GET /metrics``: the Prometheus exposition (DESIGN.md, "Metrics").

Read with a viewer (or admin) token, or without one when the gateway runs with
``pouch_metrics_public=true``. What it shows:

- the store's gauges, read at each scrape (``StoreGauges``): each live key's current budget
  window (``pouch_key_budget_usd`` and ``pouch_key_budget_remaining_usd`` only for keys with a
  budget; remaining is budget - spent - held, below zero after an overrun), and the reservations
  open on the store (every gateway's). Every process on one store shows the same figures;
- the gateway's own traffic (``pouch.metrics.traffic``): requests, tokens, spend, latencies, the
  gateway's overhead. Only the gateway has those: its ``addons/metrics.py`` calls
  ``serve_traffic``; a standalone ``pouch admin`` serves the store's gauges alone;
- ``process_*``: the serving process's CPU, memory and file descriptors.

Store reads and the encoding run on the admin API's store threads, never on the event loop. A
store that does not answer drops its gauges from the scrape (logged), not the traffic counters:
they matter most then (``refused_store``).
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from pouch.admin.handler import STORE_ERRORS, Handler
from pouch.domain.money import PICO_PER_USD
from pouch.domain.periods import utcnow
from pouch.store import keys as key_store
from pouch.store import ledger

log = logging.getLogger(__name__)

public = False  # pouch_metrics_public: answered without a token (addons/metrics.py sets it)
_sources: list = [ProcessCollector(registry=None)]  # collectors besides the store's: the gateway adds its traffic


def serve_traffic(collector) -> None:
    """Serve ``collector`` (the gateway's traffic) at /metrics from now on; once, however often called."""
    if collector not in _sources:
        _sources.append(collector)


def store_figures() -> tuple[list[tuple[str, int | None, int, int]], int]:
    """(each live key's (name, budget, spent, held) in picodollars in its current window, the
    reservations open), read from the store (blocking)."""
    now = utcnow()
    keys = []
    for key in key_store.all_keys():
        if key.revoked:
            continue
        spent, held = ledger.window_totals(key, now)  # as `pouch keys show` reads them
        keys.append((key.name, key.budget.pico if key.budget is not None else None, spent.pico, held.pico))
    return keys, ledger.open_reservations()


def _usd(pico: int) -> float:
    return pico / PICO_PER_USD  # int / int: the float nearest the exact amount


class StoreGauges:
    """A collector of the figures one scrape read from the store (``store_figures``)."""

    def __init__(self, figures):
        self.keys, self.open = figures

    def collect(self):
        budget = GaugeMetricFamily("pouch_key_budget_usd", "The key's budget per period, in USD (keys with a "
                                   "budget only).", labels=["key"])
        spent = GaugeMetricFamily("pouch_key_spent_usd", "What the key spent in its current budget window, in "
                                  "USD (read from the store: every gateway's requests).", labels=["key"])
        held = GaugeMetricFamily("pouch_key_reserved_usd", "What requests in flight hold of the key's budget "
                                 "now, in USD (their worst cases).", labels=["key"])
        remaining = GaugeMetricFamily("pouch_key_budget_remaining_usd", "Budget left in the key's current window, "
                                      "in USD: budget - spent - reserved (below zero after an overrun; keys with a "
                                      "budget only).", labels=["key"])
        for name, budget_pico, spent_pico, held_pico in self.keys:
            spent.add_metric([name], _usd(spent_pico))
            held.add_metric([name], _usd(held_pico))
            if budget_pico is not None:
                budget.add_metric([name], _usd(budget_pico))
                remaining.add_metric([name], _usd(budget_pico - spent_pico - held_pico))
        yield from (budget, spent, held, remaining)
        yield GaugeMetricFamily("pouch_reservations_open", "Budget reservations open on the store now (requests "
                                "in flight, on every gateway that shares it).", value=self.open)


def exposition(figures, accept: str | None) -> tuple[bytes, str]:
    """(the body, its content type) for a scrape that accepts ``accept``."""
    registry = CollectorRegistry(auto_describe=False)
    for source in _sources:
        registry.register(source)
    if figures is not None:
        registry.register(StoreGauges(figures))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class Metrics(Handler):
    def needs_token(self) -> bool:
        return not public

    async def get(self):
        try:
            figures = await self.store(store_figures)
        except STORE_ERRORS as e:
            log.warning("pouch admin: /metrics without the store's gauges: the store does not answer: %s", e)
            figures = None
        body, content_type = await self.store(exposition, figures, self.request.headers.get("Accept"))
        self.set_header("Content-Type", content_type)
        self.finish(body)
