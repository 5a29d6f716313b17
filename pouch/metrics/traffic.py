"""The gateway's traffic as Prometheus counters and histograms (names, labels and outcome values:
DESIGN.md, "Metrics").

Label values a client could choose are bounded, so that no client can grow the registry without
end: ``model`` is the name of the price-table entry the request's model resolved to (a dated
snapshot counts as its family), else ``other``; ``key`` is the pouch key's name (keys are the
operator's), empty when there is none (a refused unknown key, a foreign credential let through
in observe mode); ``provider`` comes from pouch's registry.
"""

from __future__ import annotations

import logging
import threading

import prometheus_client
from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily

from pouch.domain.money import PICO_PER_USD, Money
from pouch.pricing.price import Price, Retirement
from pouch.services.prices import price_table

log = logging.getLogger(__name__)

# Not the ``*_created`` series beside every counter: twice the series, and nothing a dashboard reads.
prometheus_client.disable_created_metrics()

OTHER = "other"  # the model label of a model the price table does not know

# A settlement's outcome (pouch.rules.settlement) as DESIGN names it. A stream cut after the
# provider's usage arrived is charged that usage exactly: ok. Usage pouch failed to read is
# charged the reservation, as a missing one is: no_usage. "refused" is not here: the refusal
# log counts every refusal, also one the usage link settles.
OUTCOMES = {
    "ok": "ok", "cut_after_usage": "ok", "overrun": "overrun", "cut_short": "cut_short", "abandoned": "abandoned",
    "no_usage": "no_usage", "measure_failed": "no_usage", "upstream_error": "upstream_error",
    "not_sent": "not_sent", "mock": "mock",
}
# A refusal's kind (pouch.domain.errors) as DESIGN names it. An unmeterable endpoint or tool is
# a refusal of what the request asks; a link that failed closed is, like the store, the gateway
# refusing for a fault of its own (5xx). "upstream" (the provider could not be reached) is not
# here: nothing was refused, and the usage link counts a metered one as not_sent.
REFUSALS = {
    "auth": "refused_auth", "model": "refused_model", "rate": "refused_rate_limit", "budget": "refused_budget",
    "price": "refused_price", "request": "refused_request", "endpoint": "refused_request",
    "store": "refused_store", "gateway": "refused_store",
}
# Outcomes of requests that went to the provider: their durations are the provider's and the network's.
FORWARDED = frozenset({"ok", "overrun", "cut_short", "abandoned", "no_usage", "upstream_error"})
TOKEN_TYPES = ("input", "cached_input", "cache_write", "output", "reasoning")

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
OVERHEAD_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

OVERHEAD_HELP = (
    "Time pouch's chain of links held a request the provider answered, in seconds: the chain's request "
    "hook (from the request read in full until it may go upstream; waiting for the store's budget "
    "reservation included), its responseheaders hook, and its response hook (from the response read in "
    "full until it is sent on to the client; for a stream, after its last chunk). Timed with a monotonic "
    "clock from each hook entering the chain's first link to its leaving the last. Not included: the "
    "network, connecting upstream, mitmproxy's own parsing and queueing, and the metering of each chunk of "
    "a stream as it passes.")


def model_label(model: str | None, provider: str | None, entry: Price | Retirement | None = None) -> str:
    """The ``model`` label: the price-table entry ``model`` resolves to (``entry`` when
    admission looked it up already), else ``other``; empty when the request named none."""
    if not model:
        return ""
    if entry is None:
        try:
            entry = price_table().lookup(model, provider)
        except Exception:  # a label is never worth failing a flow for
            entry = None
    return entry.model if isinstance(entry, Price | Retirement) else OTHER


class Spend:
    """``pouch_spend_usd_total``, summed in exact picodollars and shown as the float nearest the
    exact sum: a float counter would add every request's rounding error to it."""

    labels = ("key", "provider", "model")

    def __init__(self):
        self._pico: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()

    def add(self, key: str, provider: str, model: str, amount: Money) -> None:
        with self._lock:
            self._pico[(key, provider, model)] = self._pico.get((key, provider, model), 0) + amount.pico

    def family(self) -> CounterMetricFamily:
        return CounterMetricFamily("pouch_spend_usd", "What requests were charged, in USD (a mock answer charges "
                                   "nothing; a request whose usage pouch cannot know, its reservation).",
                                   labels=self.labels)

    def describe(self):
        yield self.family()

    def collect(self):
        family = self.family()
        with self._lock:
            sums = list(self._pico.items())
        for labels, pico in sums:
            family.add_metric(labels, pico / PICO_PER_USD)  # int / int: correctly rounded
        yield family


class Traffic:
    """The counters and histograms of one gateway process; a collector for a registry."""

    def __init__(self):
        self.requests = Counter(
            "pouch_requests", "Requests by how they ended: ok, cut_short, abandoned, no_usage, upstream_error, "
            "not_sent, mock, overrun (settled), refused_<reason> (refused by pouch).",
            ("key", "provider", "model", "outcome"), registry=None)
        self.tokens = Counter(
            "pouch_tokens", "Tokens the provider reported, by type: input (all of it, cached and cache writes "
            "included), cached_input, cache_write, output (reasoning included), reasoning. Mock answers' are not "
            "counted.", ("key", "provider", "model", "type"), registry=None)
        self.spend = Spend()
        self.duration = Histogram(
            "pouch_request_duration_seconds", "From the client's request (its first byte) to the provider's "
            "answer's last byte, for requests sent to the provider.", ("provider", "model"), buckets=DURATION_BUCKETS,
            registry=None)
        self.first_token = Histogram(
            "pouch_time_to_first_token_seconds", "From the client's request (its first byte) to the provider's "
            "first byte: its first body chunk for a stream, its response headers otherwise.", ("provider", "model"),
            buckets=FIRST_TOKEN_BUCKETS, registry=None)
        self.overhead_seconds = Histogram("pouch_gateway_overhead_seconds", OVERHEAD_HELP, buckets=OVERHEAD_BUCKETS,
                                          registry=None)
        self._metrics = (self.requests, self.tokens, self.spend, self.duration, self.first_token,
                         self.overhead_seconds)
        # Series looked up once (labels() costs a lock and a validation per call), as bounded as
        # their labels: (key, provider, model) -> one per TOKEN_TYPES; (provider, model) ->
        # (duration, first token).
        self._tokens: dict[tuple[str, str, str], tuple] = {}
        self._latency: dict[tuple[str, str], tuple] = {}

    def describe(self):
        for metric in self._metrics:
            yield from metric.describe()

    def collect(self):
        for metric in self._metrics:
            yield from metric.collect()

    def settled(self, row: dict, charge: Money, entry: Price | Retirement | None = None) -> None:
        """A request settled with its usage ``row`` (the one written to the store), charged
        ``charge``; ``entry``: the price its model resolved to at admission, if it was looked up.
        Never raises: it is called on the way to closing the request's books."""
        try:
            self._settled(row, charge, entry)
        except Exception:
            log.exception("pouch: counting a settled request for /metrics failed")

    def _settled(self, row: dict, charge: Money, entry: Price | Retirement | None) -> None:
        outcome = OUTCOMES.get(row["outcome"])
        if outcome is None:
            return  # refused: the refusal log counts it
        key = row["key_name"] if row["key"] is not None else ""
        provider, model = row["provider"], model_label(row["model"], row["provider"], entry)
        self.requests.labels(key, provider, model, outcome).inc()
        self.spend.add(key, provider, model, charge)
        if outcome != "mock":
            tokens = self._tokens.get((key, provider, model))
            if tokens is None:
                tokens = self._tokens[(key, provider, model)] = tuple(
                    self.tokens.labels(key, provider, model, kind) for kind in TOKEN_TYPES)
            input_, cached, cache_write, output, reasoning = tokens
            input_.inc(row["input_tokens"])
            cached.inc(row["cached_tokens"])
            cache_write.inc(row["cache_write_5m_tokens"] + row["cache_write_1h_tokens"])
            output.inc(row["output_tokens"])
            reasoning.inc(row["reasoning_tokens"])
        if outcome in FORWARDED:
            latency = self._latency.get((provider, model))
            if latency is None:
                latency = self._latency[(provider, model)] = (self.duration.labels(provider, model),
                                                              self.first_token.labels(provider, model))
            latency[0].observe(row["latency_ms"] / 1000)
            if row["ttft_ms"] is not None:
                latency[1].observe(row["ttft_ms"] / 1000)

    def refused(self, key: str, provider: str | None, model: str | None, kind: str) -> None:
        """pouch refused a request (of ``key``'s name, "" for none) for a reason of ``kind``. Never raises."""
        if kind == "upstream":
            return
        try:
            self.requests.labels(key, provider or "", model_label(model, provider),
                                 REFUSALS.get(kind, "refused_request")).inc()
        except Exception:
            log.exception("pouch: counting a refusal for /metrics failed")

    def overhead(self, seconds: float) -> None:
        self.overhead_seconds.observe(seconds)


traffic = Traffic()
