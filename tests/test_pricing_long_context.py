"""Long context is priced by its own tier or refused, never at the short-context rate; and a
per-request fee is reserved and charged."""

from __future__ import annotations

import json
from datetime import date

import pytest

import addons.budget
from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.pricing.price import Price, Tier, cost
from pouch.pricing.price_file import parse_prices
from pouch.pricing.reserve import Bounds, context_window, unpriced_context, worst_case
from pouch.pricing.table import PriceTable
from pouch.services import chain
from tests.addon_helpers import chat_body, create_key, error_of, facts, gateway, openai_flow

M = Money.per_million
SHORT = Price(model="short", provider="anthropic", mode="chat", input=M("3"), output=M("15"), source="t",
              as_of=date(2026, 11, 27), max_input_tokens=200_000)
# Claude Sonnet 4.5 with the context-1m beta: above 200K input tokens, $6 / $22.50 for the whole request
LONG = Price(model="long", provider="anthropic", mode="chat", input=M("3"), output=M("15"), source="t",
             as_of=date(2026, 11, 27), max_input_tokens=200_000,
             tiers=(Tier(above_input_tokens=200_000, input=M("6"), output=M("22.50")),))
WIDE = Price(model="wide", provider="anthropic", mode="chat", input=M("3"), output=M("15"), source="t",
             as_of=date(2026, 11, 27), max_input_tokens=1_000_000)


@pytest.mark.parametrize("price, bounds, refused", [
    (SHORT, Bounds(200_000, 10), False),  # the window itself
    (SHORT, Bounds(200_001, 10), True),  # exactly counted above it: the provider would refuse it too
    (SHORT, Bounds(300_000, 10, exact=False), False),  # an upper bound above it proves nothing
    (LONG, Bounds(300_000, 10), False),  # above the window, but the long-context tier prices it
    (SHORT, Bounds(1_000, 10, long_context=True), True),  # context-1m opened, no price above 200K
    (LONG, Bounds(1_000, 10, long_context=True), False),
    (WIDE, Bounds(1_000, 10, long_context=True), False),  # 1M at one price already
])
def test_unpriced_context(price, bounds, refused):
    assert (unpriced_context(price, bounds) is not None) == refused


def test_the_long_context_tier_prices_the_whole_request():
    usage = Usage(input_tokens=300_000, output_tokens=1_000)
    assert cost(LONG, usage) == Money.usd("1.8225")  # 300,000 x $6/M + 1,000 x $22.50/M
    assert cost(LONG, Usage(input_tokens=200_000, output_tokens=1_000)) == Money.usd("0.615")  # 0.6 + 0.015


def test_a_long_context_request_reserves_a_long_context_window():
    """With the beta, a server tool's round may re-read up to 1M tokens of context, not 200K."""
    assert context_window(LONG, Bounds(1_000, 10, long_context=True)) == 1_000_000
    assert context_window(LONG, Bounds(1_000, 10)) == 200_000
    # stored context the provider adds (hidden input) counts the whole long window, at the tier's price
    hidden = worst_case(LONG, Bounds(1_000, 0, hidden_input=True, long_context=True))
    assert hidden.total == Money.usd("6")  # 1,000,000 x $6/M


def test_a_per_request_fee_is_charged_and_reserved():
    search = Price(model="search", provider="openai", mode="chat", input=M("1.25"), output=M("10"), source="t",
                   as_of=date(2026, 11, 27), per_request=Money.usd("0.01"))
    assert cost(search, Usage(input_tokens=1_000, output_tokens=100)) == Money.usd("0.01225")  # 0.00125 + 0.001 + 0.01
    assert worst_case(search, Bounds(1_000, 100)).total == Money.usd("0.01225")
    parsed = parse_prices({"models": [{"model": "s", "provider": "openai", "input": "1", "output": "1",
                                       "per_request": "0.01", "source": "t", "as_of": "2026-11-27"}]}, "t")
    assert parsed[0].per_request == Money.usd("0.01")


def entry(model, **fields):
    return {"model": model, "provider": "anthropic", "input": "3", "output": "15", "source": "t",
            "as_of": "2026-11-27"} | fields


@pytest.fixture
def gw(monkeypatch):
    prices = PriceTable(parse_prices({"models": [
        entry("short-model", max_input_tokens=200_000),
        entry("long-model", max_input_tokens=200_000,
              tiers=[{"above_input_tokens": 200_000, "input": "6", "output": "22.50"}]),
        entry("gpt-4o-tiny", provider="openai", max_input_tokens=5),
    ]}, "test"))
    monkeypatch.setattr(addons.budget, "price_table", lambda: prices)
    with gateway(pouch_instance="long-context-test") as gw:
        yield gw


def messages(gw, secret, model, beta=None):
    headers = {"anthropic-beta": beta} if beta else {}
    body = {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    return gw.request(openai_flow("/v1/messages", body, secret=secret, host="api.anthropic.com", headers=headers),
                      until=gw.budget)


def test_the_context_1m_beta_without_a_long_context_price_is_refused(gw):
    _, secret = create_key(budget=Money.usd("5"))
    flow = messages(gw, secret, "short-model", beta="context-1m-2025-08-07,interleaved-thinking-2025-05-14")
    body = json.loads(flow.response.content)
    assert flow.response.status_code == 400 and body["error"]["type"] == "invalid_request_error"
    assert "no price for its input above 200,000 tokens" in body["error"]["message"]
    assert "short-context rate" in body["error"]["message"]


def test_the_context_1m_beta_with_a_long_context_price_is_reserved_at_it(gw):
    _, secret = create_key(budget=Money.usd("50"))
    flow = messages(gw, secret, "long-model", beta="context-1m-2025-08-07")
    assert flow.response is None and facts(flow)["reservation"] is not None
    plain = messages(gw, secret, "long-model")
    assert plain.response is None  # without the beta: the short context, the same model


def test_an_exactly_counted_prompt_above_the_window_is_refused(gw):
    _, secret = create_key(budget=Money.usd("5"))
    flow = gw.request(openai_flow(body=chat_body(model="gpt-4o-tiny"), secret=secret), until=gw.budget)
    assert flow.response.status_code == 400 and error_of(flow)["code"] == "context_length_exceeded"
    assert "more than the 5 model 'gpt-4o-tiny' takes" in error_of(flow)["message"]


def test_a_provider_billing_beyond_the_known_window_is_logged(monkeypatch, caplog):
    """The table says 200K; the provider served and billed more (a beta, a stale table): the
    operator is told, by model, so the table gets its long-context price."""
    import logging

    import addons.usage as usage_link

    prices = PriceTable(parse_prices({"models": [entry("short-model", max_input_tokens=200_000)]}, "test"))
    monkeypatch.setattr(usage_link, "price_table", lambda: prices)
    with caplog.at_level(logging.WARNING):
        usage_link.billed(Usage(input_tokens=200_000, output_tokens=1), "short-model", (), "anthropic", None)
        assert not caplog.records
        usage_link.billed(Usage(input_tokens=250_000, output_tokens=1), "short-model", (), "anthropic", None)
    assert "anthropic billed 250000 input tokens of short-model, above the 200000-token window" in caplog.text
