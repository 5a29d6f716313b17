"""Models their provider stopped serving: refused with the date and the replacement."""

from __future__ import annotations

import datetime
import json

import pytest

import addons.budget
from pouch.domain.errors import InvalidInput
from pouch.domain.money import Money
from pouch.pricing.price import Price, Retirement
from pouch.pricing.price_file import parse_prices
from pouch.pricing.table import PriceTable
from tests.addon_helpers import chat_body, create_key, error_of, gateway, openai_flow

UTC = datetime.UTC
BEFORE = datetime.datetime(2026, 11, 29, 23, 59, tzinfo=UTC)
ON_THE_DAY = datetime.datetime(2026, 11, 30, tzinfo=UTC)


def price(model="old-model", **fields):
    return {"model": model, "provider": "openai", "input": "1", "output": "2", "source": "test",
            "as_of": "2026-11-27"} | fields


def retired(model="old-model", **fields):
    return {"model": model, "provider": "openai", "retired": "2026-11-30", "use": "new-model",
            "source": "https://developers.openai.com/api/docs/deprecations", "as_of": "2026-11-27"} | fields


def table(*entries, overrides=()):
    return PriceTable(parse_prices({"models": list(entries)}, "test"),
                      overrides=parse_prices({"models": list(overrides)}, "override"))


def test_priced_until_the_day_then_retired():
    prices = table(price(), retired())
    assert prices.resolve("old-model", "openai", BEFORE).input == Money.per_million("1")
    gone = prices.lookup("old-model", "openai", ON_THE_DAY)
    assert isinstance(gone, Retirement) and prices.resolve("old-model", "openai", ON_THE_DAY) is None
    assert gone.message == "model 'old-model' was retired by openai on 2026-11-30: use new-model instead"


def test_snapshots_and_aliases_of_a_retired_model_are_retired_too():
    prices = table(retired(aliases=["old-model-0"]))
    for name in ("old-model-2024-05-13", "old-model-0613", "old-model-0", "openai/old-model"):
        assert isinstance(prices.lookup(name, "openai", ON_THE_DAY), Retirement), name


def test_a_model_known_only_as_retired_has_no_price_before_the_date():
    prices = table(retired())
    assert prices.lookup("old-model", "openai", BEFORE) is None
    assert list(prices) == [] and len(prices) == 0


def test_an_operator_price_brings_a_retired_model_back():
    """A deployment that still serves it (a self-hosted copy, a provider with a later date)."""
    prices = table(price(), retired(), overrides=[price(input="5")])
    assert prices.resolve("old-model", "openai", ON_THE_DAY).input == Money.per_million("5")


def test_an_operator_can_retire_a_model_from_a_date():
    no_replacement = {k: v for k, v in retired(retired="2026-12-01").items() if k != "use"}
    prices = table(price(), overrides=[no_replacement])
    assert prices.resolve("old-model", "openai", ON_THE_DAY).input == Money.per_million("1")  # shipped, before
    gone = prices.lookup("old-model", "openai", datetime.datetime(2026, 12, 1, tzinfo=UTC))
    assert gone.message == "model 'old-model' was retired by openai on 2026-12-01"


@pytest.mark.parametrize("bad, complaint", [
    (retired(input="1"), "unknown field"),  # a retirement carries no price
    (retired(retired="soon"), "retired"),
    (retired(use=""), "use is required"),
    (retired(source=""), "source is required"),
])
def test_a_malformed_retirement_is_refused_with_the_entry(bad, complaint):
    with pytest.raises(InvalidInput, match=complaint):
        parse_prices({"models": [bad]}, "test")


def test_the_budget_link_refuses_a_retired_model_as_the_provider_would(monkeypatch):
    prices = table(price(), retired(retired="2026-01-01"))
    monkeypatch.setattr(addons.budget, "price_table", lambda: prices)
    with gateway(pouch_instance="retired-test") as gw:
        _, secret = create_key(budget=Money.usd("5"))
        flow = gw.request(openai_flow(body=chat_body(model="old-model-0613"), secret=secret), until=gw.budget)
        assert flow.response.status_code == 404
        error = error_of(flow)
        assert error["code"] == "model_not_found"
        assert "model 'old-model' was retired by openai on 2026-01-01: use new-model instead" in error["message"]
        assert flow.response.headers["x-should-retry"] == "false"
        anthropic = gw.request(openai_flow("/v1/messages", {"model": "old-model", "max_tokens": 5, "messages": [
            {"role": "user", "content": "hi"}]}, secret=secret, host="api.anthropic.com"), until=gw.budget)
        body = json.loads(anthropic.response.content)
        assert anthropic.response.status_code == 404 and body["error"]["type"] == "not_found_error"


def test_retired_entries_are_not_listed_as_prices():
    prices = table(price(), price("live-model"), retired(retired="2026-01-01"))
    assert [(e.model, type(e)) for e in prices.entries()] == [
        ("live-model", Price), ("old-model", Price), ("old-model", Retirement)]
    assert [p.model for p in prices] == ["live-model"]  # the prices in effect now
