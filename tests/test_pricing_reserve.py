"""The worst case a request can cost (pouch/pricing/reserve.py) and tool fees in the price table."""

from __future__ import annotations

import json
from datetime import date

import pytest

from pouch.domain.errors import InvalidInput
from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.pricing import reserve
from pouch.pricing.reserve import Bounds, WorstCase
from pouch.pricing.price import Price, Tier, ToolFee, cost
from pouch.pricing.price_file import parse_tool_fees, read_prices
from pouch.pricing.table import PriceTable

PRICE = Price(
    model="m", provider="p", mode="chat", input=Money(10), output=Money(100), source="test", as_of=date(2026, 1, 1),
    cache_write_5m=Money(12), cache_write_1h=Money(20), reasoning=Money(150),
    tiers=(Tier(above_input_tokens=1000, input=Money(30), output=Money(300)),),
    max_input_tokens=5000, max_output_tokens=700,
    tool_fees=(("search", Money(1_000_000)), ("fetch", Money(0)), ("cheap", Money(10))),
)


@pytest.mark.parametrize("bounds, fixed, per_output, max_output", [
    # dearest input side: the 1h cache write (20); dearest output: any tier's reasoning or output (300)
    (Bounds(500, 50), 20 * 500, 300, 50),
    (Bounds(2000, 50, choices=3), 30 * 2000, 900, 50),  # the long-context tier's input price
    (Bounds(500, None), 20 * 500, 300, 700),  # no cap: the model's maximum output
    (Bounds(500, 0), 20 * 500, 300, 0),  # embeddings: nothing generated, not the maximum
    (Bounds(10, 50, hidden_input=True), 30 * 5000, 300, 50),  # stored context: the whole window, its tier
    # two search calls: their fees, and two rounds re-reading up to the context window at the
    # dearest input price of any tier (30)
    (Bounds(500, 50, tool_calls=((("search",), 2),)), 20 * 500 + 2 * 1_000_000 + 2 * 5000 * 30, 300, 50),
    # one bound shared by several tools: every call may be the dearest
    (Bounds(500, 50, tool_calls=((("cheap", "search", "fetch"), 3),)),
     20 * 500 + 3 * 1_000_000 + 3 * 5000 * 30, 300, 50),
    # a bound per tool: each tool's own fee
    (Bounds(500, 50, tool_calls=((("cheap",), 4), (("fetch",), 1))), 20 * 500 + 4 * 10 + 5 * 5000 * 30, 300, 50),
    (Bounds(500, 50, tool_calls=((("search",), 0),)), 20 * 500, 300, 50),  # max_tool_calls=0: no call
])  # fmt: skip
def test_worst_case(bounds, fixed, per_output, max_output):
    assert reserve.worst_case(PRICE, bounds) == WorstCase(Money(fixed), Money(per_output), max_output)


def test_a_tool_without_a_fee_cannot_be_reserved():
    with pytest.raises(ValueError, match="no price for the tool.*image"):
        reserve.worst_case(PRICE, Bounds(10, 10, tool_calls=((("search", "image"), 1),)))


def test_a_5_minute_cache_write_dearer_than_the_1_hour_one_is_the_dearest_input():
    price = Price(model="m", provider="p", mode="chat", input=Money(10), output=Money(100), source="t",
                  as_of=date(2026, 1, 1), cache_write_5m=Money(25), cache_write_1h=Money(20))
    assert reserve.worst_case(price, Bounds(100, 1)).fixed == Money(2500)
    assert price.dearest_input == Money(25)


def test_worst_tokens_count_what_the_budget_reserves():
    """tokens/min counts the same worst case: input, every choice's output (the model's
    maximum when uncapped), and the context each tool round may re-read."""
    assert reserve.worst_tokens(PRICE, Bounds(500, None)) == 500 + 700
    assert reserve.worst_tokens(PRICE, Bounds(500, 40, choices=2)) == 500 + 80
    assert reserve.worst_tokens(PRICE, Bounds(10, 40, hidden_input=True)) == 5000 + 40
    assert reserve.worst_tokens(PRICE, Bounds(500, 40, tool_calls=((("search",), 2),))) == 500 + 2 * 5000 + 40
    assert reserve.worst_tokens(None, Bounds(500, None)) == 500 + 32_768  # unpriced: pouch's default maximum
    assert reserve.worst_tokens(None, Bounds(500, 10, hidden_input=True)) == 1_000_000 + 10  # default window


@pytest.mark.parametrize("left, expected", [
    (Money(10_000 + 300 * 50), 50),
    (Money(10_000 + 300 * 50 + 299), 50),
    (Money(10_000 + 300), 1),
    (Money(10_000 + 299), 0),
    (Money(9_000), 0),  # not even the input fits
])  # fmt: skip
def test_affordable_output(left, expected):
    worst = reserve.worst_case(PRICE, Bounds(500, None))
    assert reserve.affordable_output(worst, left) == expected
    if expected:
        assert reserve.worst_case(PRICE, Bounds(500, expected)).total <= left


def test_cost_adds_each_tool_calls_fee():
    usage = Usage(input_tokens=100, output_tokens=10, tool_calls=(("cheap", 3), ("search", 2)))
    assert cost(PRICE, usage) == Money(100 * 10 + 10 * 100 + 3 * 10 + 2 * 1_000_000)


def test_cost_of_a_tool_without_a_fee_is_its_tokens_only():
    """Only a tool the operator let through unmetered (pouch_unmetered=allow) has no fee."""
    usage = Usage(input_tokens=100, output_tokens=10, tool_calls=(("image", 3),))
    assert cost(PRICE, usage) == Money(100 * 10 + 10 * 100)


class TestToolFees:
    def test_shipped_fees_reach_every_model_of_their_provider(self):
        table = PriceTable.load()
        assert table.resolve("gpt-4o", "openai").tool_fee("web_search") == Money.usd("0.01")
        assert table.resolve("gpt-4o", "openai").tool_fee("web_search_preview") == Money.usd("0.025")
        assert table.resolve("gpt-4o", "openai").tool_fee("file_search") == Money.usd("0.0025")
        assert table.resolve("claude-haiku-4-5", "anthropic").tool_fee("web_search") == Money.usd("0.01")
        assert table.resolve("claude-haiku-4-5", "anthropic").tool_fee("web_fetch") == Money(0)
        assert table.resolve("claude-haiku-4-5", "anthropic").tool_fee("code_execution") is None
        assert table.resolve("gemini-2.5-flash", "gemini").tool_fee("google_search") is None
        assert table.resolve("gpt-4o", "openai").tool_fee("code_interpreter") is None

    def test_every_shipped_fee_is_sourced_and_dated(self):
        from importlib.resources import files

        document = json.loads(files("pouch.pricing").joinpath("prices.json").read_text())
        for fee in parse_tool_fees(document, "shipped"):
            assert fee.source.startswith("https://") and fee.as_of == date(2026, 11, 27)

    def test_an_override_file_changes_a_fee(self, tmp_path):
        (tmp_path / "prices.json").write_text(json.dumps({"models": [], "tools": [
            {"provider": "openai", "tool": "web_search", "per_call": "0.02", "source": "contract", "as_of": "2026-11-01"},
        ]}))
        table = PriceTable.default(tmp_path)
        assert table.resolve("gpt-4o", "openai").tool_fee("web_search") == Money.usd("0.02")
        assert table.resolve("gpt-4o", "openai").tool_fee("file_search") == Money.usd("0.0025")  # kept

    @pytest.mark.parametrize("entry, message", [
        ({"provider": "openai", "tool": "x", "per_call": True, "source": "s", "as_of": "2026-11-01"}, "decimal string"),
        ({"provider": "openai", "tool": "x", "per_call": "-1", "source": "s", "as_of": "2026-11-01"}, "negative"),
        ({"provider": "openai", "tool": "x", "per_call": "abc", "source": "s", "as_of": "2026-11-01"}, "amount"),
        ({"provider": "openai", "tool": "x", "per_call": "1", "as_of": "2026-11-01"}, "source is required"),
        ({"provider": "openai", "tool": "x", "per_call": "1", "source": "s", "as_of": "2026-11-01", "fee": "1"},
         "unknown field"),
    ])  # fmt: skip
    def test_a_bad_fee_entry_is_refused_with_its_place(self, tmp_path, entry, message):
        path = tmp_path / "prices.json"
        path.write_text(json.dumps({"models": [], "tools": [entry]}))
        with pytest.raises(InvalidInput, match=rf"tools\[0\].*{message}"):
            read_prices(path)

    def test_a_fee_listed_twice_is_refused(self):
        entry = {"provider": "openai", "tool": "x", "per_call": "1", "source": "s", "as_of": "2026-11-01"}
        with pytest.raises(InvalidInput, match="listed twice"):
            parse_tool_fees({"tools": [entry, entry]}, "f")

    def test_fees_are_per_provider(self):
        price = Price(model="m", provider="q", mode="chat", input=Money(1), output=Money(1), source="s",
                      as_of=date(2026, 1, 1))
        table = PriceTable([price], [ToolFee("p", "search", Money(5), "s", date(2026, 1, 1))])
        assert table.resolve("m", "q").tool_fees == ()


def test_a_request_that_generates_nothing_fits_or_not_on_its_input_alone():
    """Embeddings: output is free, so the whole output cap fits once the input does."""
    embedding = Price(model="e", provider="p", mode="embedding", input=Money(10), output=Money(0), source="t",
                      as_of=date(2026, 1, 1))
    worst = reserve.worst_case(embedding, Bounds(100, 0))
    assert worst == WorstCase(Money(1000), Money(0), 0)
    worst = WorstCase(Money(1000), Money(0), 7)
    assert reserve.affordable_output(worst, Money(1000)) == 7
    assert reserve.affordable_output(worst, Money(999)) == 0
