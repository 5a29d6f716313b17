"""The gateway's traffic counters (pouch.metrics.traffic) without a gateway: DESIGN's outcome
names and nothing else, bounded label values however many model names clients make up, spend
summed exactly; then fed by the real links (the usage link settles, the refusal log refuses,
the chain's clock times a flow) in a taddons context."""

import json
import random
import string

import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from addons.metrics import Metrics, MetricsStart
from pouch.admin import metrics as admin_metrics
from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.metrics.traffic import OTHER, OUTCOMES, REFUSALS, Traffic, model_label, traffic
from pouch.rules import settlement
from pouch.services import chain
from tests import addon_helpers
from tests.addon_helpers import HELLO, MODEL, chat_body, create_key, openai_flow
from tests.fakes.openai_shapes import Controls, chat_completions

DESIGN_OUTCOMES = {"ok", "cut_short", "abandoned", "no_usage", "upstream_error", "not_sent", "mock", "overrun",
                   "refused_auth", "refused_model", "refused_rate_limit", "refused_budget", "refused_price",
                   "refused_request", "refused_store"}
ERROR_KINDS = {"auth", "model", "rate", "budget", "price", "request", "endpoint", "store", "gateway", "upstream"}


def row(outcome="ok", model=MODEL, key="alice", **fields) -> dict:
    """A usage row as the usage link makes it (the fields the counters read)."""
    return {"key": 1 if key else None, "key_name": key or "observed:ab12", "provider": "openai", "model": model,
            "outcome": outcome, "input_tokens": 100, "cached_tokens": 20, "cache_write_5m_tokens": 3,
            "cache_write_1h_tokens": 4, "output_tokens": 50, "reasoning_tokens": 10, "latency_ms": 1500,
            "ttft_ms": 250, **fields}


def samples(collector) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value, of everything ``collector`` shows."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in collector.collect() for s in family.samples}


def label_values(collector, label: str) -> set[str]:
    return {dict(labels)[label] for (_, labels) in samples(collector) if label in dict(labels)}


def requests(collector, **labels) -> float:
    """pouch_requests_total summed over the series that carry ``labels``."""
    return sum(value for (name, found), value in samples(collector).items()
               if name == "pouch_requests_total" and labels.items() <= dict(found).items())


def test_every_outcome_and_refusal_is_counted_under_a_design_name():
    settled_outcomes = {"ok", "cut_after_usage", "overrun", "cut_short", "abandoned", "no_usage", "measure_failed",
                        "upstream_error", "not_sent", "mock"}
    assert set(OUTCOMES) == settled_outcomes and set(OUTCOMES.values()) <= DESIGN_OUTCOMES
    assert set(REFUSALS) == ERROR_KINDS - {"upstream"} and set(REFUSALS.values()) <= DESIGN_OUTCOMES
    assert DESIGN_OUTCOMES == set(OUTCOMES.values()) | set(REFUSALS.values()), "each DESIGN outcome can happen"


def test_the_settlements_outcomes_are_the_ones_mapped():
    """What pouch.rules.settlement can answer is in OUTCOMES (or is a refusal, counted apart)."""
    endings = [settlement.Ending(refused="budget"), settlement.Ending(refused="upstream"),
               settlement.Ending(mock=Usage(input_tokens=1)), settlement.Ending(status=500),
               settlement.Ending(status=200, usage=Usage(input_tokens=1)),
               settlement.Ending(status=200, followed=True, error="cut", usage=Usage(input_tokens=1)),
               settlement.Ending(status=200), settlement.Ending(status=200, followed=True, error="cut"),
               settlement.Ending(sent=False), settlement.Ending(error="client disconnected"),
               settlement.Ending(error="server disconnected", streamed=True)]
    seen = {settlement.measure(ending).outcome for ending in endings}
    assert seen - {"refused"} <= set(OUTCOMES)


@pytest.mark.parametrize("outcome, counted", [("ok", "ok"), ("cut_after_usage", "ok"), ("measure_failed", "no_usage"),
                                              ("overrun", "overrun"), ("not_sent", "not_sent")])
def test_a_settled_request_counts_once_with_its_tokens_and_charge(outcome, counted):
    metrics = Traffic()
    metrics.settled(row(outcome), Money.usd("0.0000123"))
    found = samples(metrics)
    labels = (("key", "alice"), ("model", MODEL), ("provider", "openai"))
    assert found[("pouch_requests_total", tuple(sorted(labels + (("outcome", counted),))))] == 1
    tokens = {dict(l)["type"]: v for (name, l), v in found.items() if name == "pouch_tokens_total"}
    assert tokens == {"input": 100, "cached_input": 20, "cache_write": 7, "output": 50, "reasoning": 10}
    assert found[("pouch_spend_usd_total", labels)] == 0.0000123
    timed = 0 if outcome == "not_sent" else 1  # nothing went to the provider: no duration of its
    assert found.get(("pouch_request_duration_seconds_count", labels[1:]), 0) == timed
    if timed:
        assert found[("pouch_request_duration_seconds_sum", labels[1:])] == 1.5
        assert found[("pouch_time_to_first_token_seconds_sum", labels[1:])] == 0.25


def test_a_mock_counts_no_tokens_nor_latency_and_a_refused_settlement_is_left_to_the_refusal_log():
    metrics = Traffic()
    metrics.settled(row("mock"), Money(0))
    metrics.settled(row("refused"), Money(0))
    assert requests(metrics) == 1 and requests(metrics, outcome="mock") == 1
    found = samples(metrics)
    assert not [name for name, _ in found if name in ("pouch_tokens_total", "pouch_request_duration_seconds_count")]
    assert found[("pouch_spend_usd_total", (("key", "alice"), ("model", MODEL), ("provider", "openai")))] == 0


def test_refusals_count_by_reason_and_a_failed_delivery_is_not_one():
    metrics = Traffic()
    for kind in ("auth", "budget", "budget", "rate", "endpoint", "gateway", "upstream"):
        metrics.refused("alice" if kind != "auth" else "", "openai", MODEL if kind != "auth" else None, kind)
    assert requests(metrics) == 6
    assert requests(metrics, key="", model="", outcome="refused_auth") == 1
    assert requests(metrics, key="alice", outcome="refused_budget") == 2
    assert requests(metrics, outcome="refused_rate_limit") == 1
    assert requests(metrics, outcome="refused_request") == 1 and requests(metrics, outcome="refused_store") == 1


def test_a_flood_of_model_names_adds_no_label_values():
    metrics = Traffic()
    made_up = {"".join(random.choices(string.ascii_lowercase, k=12)) for _ in range(3000)}
    dated = {f"{MODEL}-2024-{month:02d}-{day:02d}" for month in range(1, 13) for day in range(1, 29)}
    for model in made_up | dated:
        metrics.settled(row(model=model), Money(1))
        metrics.refused("", "openai", model, "auth")
        metrics.refused("alice", "openai", model, "price")
    assert label_values(metrics, "model") == {OTHER, MODEL}
    series = [labels for name, labels in samples(metrics) if name == "pouch_requests_total"]
    assert len(series) == 6, "(ok, refused_auth, refused_price) x (gpt-4o-mini, other)"
    assert requests(metrics) == 3 * len(made_up | dated)


def test_observed_credentials_share_the_empty_key_label():
    metrics = Traffic()
    for n in range(100):
        metrics.settled(row(key=None) | {"key_name": f"observed:{n:04x}"}, Money(1))
    assert label_values(metrics, "key") == {""}


def test_the_model_label_is_the_price_entry_the_name_resolves_to():
    assert model_label(MODEL, "openai") == MODEL
    assert model_label(f"{MODEL}-2024-07-18", "openai") == MODEL
    assert model_label("no-such-model", "openai") == OTHER
    assert model_label(None, "openai") == "" and model_label("", None) == ""


def test_spend_is_summed_exactly():
    metrics = Traffic()
    for _ in range(10):
        metrics.settled(row(), Money.usd("0.1"))
    for _ in range(3):
        metrics.settled(row(model="no-such-model"), Money.usd("0.00000015"))
    spend = {dict(l)["model"]: v for (name, l), v in samples(metrics).items() if name == "pouch_spend_usd_total"}
    assert spend == {MODEL: 1.0, OTHER: 0.00000045}
    added = 0.0
    for _ in range(10):
        added += 0.1  # what a float counter (Counter.inc) adds up to
    assert added != 1.0


def test_a_bad_row_is_logged_not_raised(caplog):
    metrics = Traffic()
    metrics.settled({"outcome": "ok"}, Money(0))
    assert "counting a settled request for /metrics failed" in caplog.text


# The real links feed the process's counters: deltas of ``traffic``.

def test_the_usage_link_counts_a_settled_request_once_and_the_refusal_log_a_refusal(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-provider-key")
    before_ok, before_auth = requests(traffic, key="alice", outcome="ok"), requests(traffic, outcome="refused_auth")
    with addon_helpers.gateway() as gw:
        _, secret = create_key("alice", budget=Money.usd("1"))
        flow = gw.request(openai_flow(body=chat_body(max_tokens=5), secret=secret))
        answer = chat_completions(json.loads(flow.request.content), Controls())
        gw.respond(flow, http.Response.make(200, json.dumps(answer), {"content-type": "application/json"}))
        gw.hook("error", flow)  # the client gone after its answer: still counted once
        refused = gw.request(openai_flow(body=chat_body(), secret="sk-not-a-key"))
        gw.respond(refused, refused.response)
    assert requests(traffic, key="alice", outcome="ok") == before_ok + 1
    assert requests(traffic, outcome="refused_auth") == before_auth + 1


def forwarded_flow() -> http.HTTPFlow:
    flow = openai_flow(body={"model": MODEL, "messages": HELLO})
    chain.exchange(flow)
    return flow


def overhead_count() -> float:
    return samples(traffic)[("pouch_gateway_overhead_seconds_count", ())]


@pytest.mark.parametrize("answered_by", [None, "refusal", "local", "mock"])
def test_the_chain_clock_times_flows_the_provider_answered(answered_by):
    start, end = MetricsStart(), Metrics()
    flow = forwarded_flow()
    found = chain.existing(flow)
    before = overhead_count()
    for hook in ("request", "responseheaders"):
        getattr(start, hook)(flow)
        getattr(end, hook)(flow)
    if answered_by == "refusal":
        found.refusal = {"kind": "budget", "code": "insufficient_quota", "status": 429, "message": "no"}
    elif answered_by == "local":
        found.local = "telemetry blocked"
    elif answered_by == "mock":
        found.mock = Usage(input_tokens=1)
    start.response(flow)
    end.response(flow)
    assert overhead_count() == before + (answered_by is None)
    end.response(flow)  # a second response hook (none should come) is not counted twice
    assert overhead_count() == before + (answered_by is None)


def test_the_option_opens_metrics_without_a_token(monkeypatch):
    monkeypatch.setattr(admin_metrics, "_sources", list(admin_metrics._sources))
    addon = Metrics()
    with taddons.context(addon) as tctx:
        assert admin_metrics.public is False
        tctx.configure(addon, pouch_metrics_public=True)
        assert admin_metrics.public is True
        tctx.configure(addon, pouch_metrics_public=False)
        assert admin_metrics.public is False
    assert traffic in admin_metrics._sources, "the gateway serves its traffic at /metrics"
