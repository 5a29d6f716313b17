import dataclasses
import datetime
import json
import re

import pytest

from pouch.domain.errors import InvalidInput
from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.pricing.price import Price, Tier, ToolFee, cost
from pouch.pricing.price_file import parse_tool_fees, read_prices
from pouch.pricing.table import PriceTable


@pytest.fixture(scope="module")
def table():
    return PriceTable.load()


def usd(amount: str) -> Money:
    return Money.usd(amount)


# Expected costs are worked out by hand from prices.json (USD per 1M tokens).
@pytest.mark.parametrize(
    "model, usage, expected",
    [
        # gpt-4o: input 2.50, cached 1.25, output 10.00
        ("gpt-4o", Usage(input_tokens=1000), "0.0025"),
        ("gpt-4o", Usage(output_tokens=1000), "0.01"),
        # 600 x 2.50 + 400 x 1.25 + 500 x 10.00 (per 1M) = 0.0015 + 0.0005 + 0.005
        ("gpt-4o", Usage(input_tokens=1000, cached_tokens=400, output_tokens=500), "0.007"),
        # claude-sonnet-4-5: input 3.00, read 0.30, 5m write 3.75, 1h write 6.00, output 15.00
        # 3000 x 3 + 4000 x 0.30 + 2000 x 3.75 + 1000 x 6 + 2000 x 15 = 9000 + 1200 + 7500 + 6000 + 30000
        (
            "claude-sonnet-4-5",
            Usage(
                input_tokens=10_000,
                cached_tokens=4_000,
                cache_write_5m_tokens=2_000,
                cache_write_1h_tokens=1_000,
                output_tokens=2_000,
            ),
            "0.0537",
        ),
        # o3: input 2.00, output 8.00, no separate reasoning price: 1000 x 2 + 3000 x 8
        ("o3", Usage(input_tokens=1000, output_tokens=3000, reasoning_tokens=2000), "0.026"),
        # gpt-4o-2024-05-13 has no cache discount: cached tokens cost the input price, 5.00
        ("gpt-4o-2024-05-13", Usage(input_tokens=1000, cached_tokens=1000), "0.005"),
        # gpt-5: no cache-write price, so writes cost the input price, 1.25
        ("gpt-5", Usage(input_tokens=2000, cache_write_5m_tokens=1000, cache_write_1h_tokens=1000), "0.0025"),
        # text-embedding-3-small: 0.02
        ("text-embedding-3-small", Usage(input_tokens=1_000_000), "0.02"),
        # gpt-5-nano: cached 0.005 per 1M = 5 nano-dollars a token, still exact
        ("gpt-5-nano", Usage(input_tokens=3, cached_tokens=3), "0.000000015"),
    ],
)
def test_cost(table, model, usage, expected):
    # before 2026-10-23, when gpt-4o-2024-05-13 was retired
    assert cost(table.resolve(model, at=datetime.datetime(2026, 10, 1, tzinfo=datetime.UTC)), usage) == usd(expected)


@pytest.mark.parametrize(
    "usage, expected",
    [
        # gemini-2.5-pro base: input 1.25, cached 0.125, output 10.00; at exactly 200k no tier
        (Usage(input_tokens=200_000, output_tokens=1000), "0.26"),
        # above 200k: input 2.50, cached 0.25, output 15.00
        # 100_001 x 2.50 + 100_000 x 0.25 + 1000 x 15 = 0.2500025 + 0.025 + 0.015
        (Usage(input_tokens=200_001, cached_tokens=100_000, output_tokens=1000), "0.2900025"),
    ],
)
def test_long_context_tier(table, usage, expected):
    assert cost(table.resolve("gemini-2.5-pro"), usage) == usd(expected)


def test_tier_counts_cached_tokens_towards_threshold(table):
    # gpt-5.5 above 272k: input 10.00, cached 1.00, output 45.00 — all but one token cached
    usage = Usage(input_tokens=272_001, cached_tokens=272_000, output_tokens=0)
    assert cost(table.resolve("gpt-5.5"), usage) == usd("0.27201")


def handmade_price(**overrides) -> Price:
    fields = dict(
        model="m",
        provider="test",
        mode="chat",
        input=Money.per_million("1"),
        output=Money.per_million("2"),
        source="test",
        as_of=datetime.date(2026, 11, 27),
    )
    return Price(**(fields | overrides))


def test_explicit_reasoning_price():
    price = handmade_price(reasoning=Money.per_million("3"))
    # 1000 visible x 2 + 1000 reasoning x 3
    assert cost(price, Usage(output_tokens=2000, reasoning_tokens=1000)) == usd("0.005")


def test_explicit_zero_price_is_not_replaced_by_fallback():
    price = handmade_price(cached_input=Money.per_million("0"))
    assert cost(price, Usage(input_tokens=1000, cached_tokens=1000)) == usd("0")


def test_tiers_layer_in_order():
    price = handmade_price(
        tiers=(
            Tier(above_input_tokens=100, input=Money.per_million("5"), output=Money.per_million("6")),
            Tier(above_input_tokens=1000, input=Money.per_million("7")),
        )
    )
    assert price.for_input(100) is price
    assert price.for_input(101).input == Money.per_million("5")
    above_both = price.for_input(1001)
    assert (above_both.input, above_both.output) == (Money.per_million("7"), Money.per_million("6"))


def test_highest_output():
    price = handmade_price(
        reasoning=Money.per_million("4"), tiers=(Tier(above_input_tokens=10, output=Money.per_million("3")),)
    )
    assert price.highest_output == Money.per_million("4")


def test_highest_output_of_shipped_models(table):
    assert table.resolve("gemini-2.5-pro").highest_output == Money.per_million("15")
    # above 200K input tokens (Claude's context-1m beta) Sonnet 4.5's output costs $22.50
    assert table.resolve("claude-sonnet-4-5").highest_output == Money.per_million("22.50")


@pytest.mark.parametrize(
    "name, family",
    [
        ("gpt-4.1", "gpt-4.1"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o3-2025-04-16", "o3"),
        ("gpt-5-mini", "gpt-5-mini"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("gpt-5.4-nano-2026-03-17", "gpt-5.4-nano"),
        ("gpt-5-chat-latest", "gpt-5-chat-latest"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-6-20260205", "claude-opus-4-6"),
        ("claude-haiku-4-5-latest", "claude-haiku-4-5"),
        ("gemini-3.1-pro-preview-02-19", "gemini-3.1-pro-preview"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("gemini/gemini-2.5-flash", "gemini-2.5-flash"),
        ("publishers/google/models/gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
        ("openai/gpt-4o", "gpt-4o"),
        ("GPT-4o", "gpt-4o"),
        (" gpt-4o ", "gpt-4o"),
    ],
)
def test_resolve(table, name, family):
    assert table.lookup(name).model == family  # its price, or its retirement (o3-mini, gpt-5-chat-latest)


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4",  # never the prefix of gpt-4.1 / gpt-4o
        "gpt-4.1-turbo",
        "gpt-4o-mini-tts",
        "o3-mini-high",
        "claude-sonnet-4",
        "gemini-2.5-pro-preview-05-06",  # a preview is not priced like its GA model
        "gpt-5.9",
        "llama-3-70b",
        "openrouter/openai/gpt-4o",  # another seller's price
        "",
    ],
)
def test_unknown_model_is_unpriced(table, name):
    assert table.resolve(name) is None


def test_no_prefix_matching(table):
    assert all(table.resolve(price.model + "-zzz") is None for price in table)


def test_provider_picks_its_own_entry_and_dearest_wins_without_one():
    cheap = handmade_price(model="llama", provider="groq")
    dear = handmade_price(model="llama", provider="together", output=Money.per_million("9"))
    table = PriceTable([cheap, dear])
    assert table.resolve("llama", provider="groq") is cheap
    assert table.resolve("llama") is dear
    assert table.resolve("llama-2026-01-01", provider="groq") is cheap


def write_override(path, *models):
    path.write_text(json.dumps({"models": list(models)}))
    return path


def override_entry(**fields):
    entry = {"model": "gpt-4o", "provider": "openai", "input": "2.00", "output": "8.00"}
    return entry | {"source": "our contract", "as_of": "2026-11-01"} | fields


def test_override_replaces_and_adds(tmp_path):
    override = write_override(
        tmp_path / "prices.json",
        override_entry(),
        override_entry(model="local-llama", provider="vllm", input="0", output="0"),
    )
    table = PriceTable.load(override)
    assert table.resolve("gpt-4o-2024-11-20").input == Money.per_million("2.00")
    assert table.resolve("gpt-4o").cached_input is None
    assert table.resolve("local-llama").output == Money.per_million("0")
    assert table.resolve("gpt-4o-mini").input == Money.per_million("0.15")  # the rest stays shipped


def test_default_reads_pouch_home(tmp_path, monkeypatch):
    write_override(tmp_path / "prices.json", override_entry(input="1.00"))
    monkeypatch.setenv("POUCH_HOME", str(tmp_path))
    assert PriceTable.default().resolve("gpt-4o").input == Money.per_million("1.00")
    assert PriceTable.default(tmp_path / "elsewhere").resolve("gpt-4o").input == Money.per_million("2.50")


@pytest.mark.parametrize(
    "entry, complaint",
    [
        (override_entry(output=None), "output"),
        ({k: v for k, v in override_entry().items() if k != "output"}, "output"),
        (override_entry(input="-1"), "negative"),
        (override_entry(input="cheap"), "not a number"),
        (override_entry(input=True), "decimal string"),
        (override_entry(cache_input="1"), "unknown field(s) cache_input"),
        (override_entry(mode="image"), "mode"),
        (override_entry(source=""), "source"),
        (override_entry(as_of="yesterday"), "yesterday"),
        (override_entry(tiers={"above_input_tokens": 1}), "tiers"),
        (override_entry(tiers=[{"input": "1"}]), "above_input_tokens"),
        (override_entry(tiers=[{"above_input_tokens": 1000}]), "at least one price"),
        (override_entry(max_output_tokens=-5), "max_output_tokens"),
        (override_entry(input="1e-13"), "finer than a pico-dollar"),
        ("gpt-4o", "expected an object"),
    ],
)
def test_malformed_override(tmp_path, entry, complaint):
    override = write_override(tmp_path / "prices.json", entry)
    with pytest.raises(InvalidInput) as error:
        PriceTable.load(override)
    assert str(override) in str(error.value)
    assert "models[0]" in str(error.value)
    assert complaint in str(error.value)


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("{", "not valid JSON"),
        ('[{"model": "gpt-4o"}]', '{"models": [...]}'),
        (json.dumps({"models": [override_entry(), override_entry(model="GPT-4o")]}), "listed twice"),
    ],
)
def test_malformed_override_file(tmp_path, text, complaint):
    override = tmp_path / "prices.json"
    override.write_text(text)
    with pytest.raises(InvalidInput, match=re.escape(complaint)):
        PriceTable.load(override)


def test_missing_explicit_override(tmp_path):
    with pytest.raises(InvalidInput, match="cannot read"):
        PriceTable.load(tmp_path / "nope.json")


class TestShippedTable:
    def test_every_paid_price_is_positive(self, table):
        for price in table:
            levels = [price, *price.tiers]
            prices = [getattr(level, f) for level in levels for f in ("input", "cached_input", "cache_write_5m")]
            prices += [getattr(level, f) for level in levels for f in ("cache_write_1h", "reasoning")]
            if price.mode == "chat":
                prices.append(price.output)
            assert all(p.pico > 0 for p in prices if p is not None), price.model

    def test_every_entry_says_where_and_when(self, table):
        for price in table:
            assert price.source.strip() and price.as_of >= datetime.date(2026, 1, 1), price.model

    def test_covers_the_built_in_providers(self, table):
        providers = {price.provider for price in table}
        compatible = {"groq", "mistral", "deepseek", "xai", "together", "fireworks"}
        # azure: OpenAI's prices; openrouter: the vendors' own prices, passed through
        assert providers == {"openai", "anthropic", "gemini"} | compatible
        assert table.resolve("anthropic/claude-haiku-4.5", "openrouter").provider == "anthropic"
        assert {p.mode for p in table} == {"chat", "embedding"}

    def test_anthropic_cache_write_multipliers(self, table):
        # Cache writes cost 1.25x (5 minutes) and 2x (1 hour) the input price on every Claude model.
        # A cache read is a per-model fact, not a multiplier (0.025x for Fable 5.1, 0.05x for
        # Opus 5.5, 0.1x for Sonnet 5.5): tests/test_price_data.py checks each against its source.
        for price in table:
            if price.provider == "anthropic":
                for level in [price, *price.tiers]:
                    base = level.input.pico
                    assert level.cache_write_5m.pico * 4 == base * 5, price.model
                    assert level.cache_write_1h.pico == base * 2, price.model

    def test_cache_reads_are_discounted(self, table):
        for price in table:
            for level in [price, *price.tiers]:
                if level.cached_input is not None and level.input is not None:
                    assert level.cached_input < level.input, price.model

    def test_dated_snapshots_listed_only_when_priced_apart(self, table):
        for price in table:
            family = re.sub(r"-20\d\d-\d\d-\d\d$", "", price.model)
            if family != price.model and (base := table.resolve(family)):
                assert (price.input, price.output) != (base.input, base.output), price.model

    def test_file_is_sorted_and_pretty(self):
        from importlib.resources import files

        text = files("pouch.pricing").joinpath("prices.json").read_text()
        document = json.loads(text)
        models, tools = document["models"], document["tools"]
        assert [(m["provider"], m["model"]) for m in models] == sorted((m["provider"], m["model"]) for m in models)
        assert text == json.dumps({"models": models, "tools": tools}, indent=2) + "\n"


# --- rules a price table must keep (each once let a wrong price through unnoticed) ----------


def test_a_preview_is_not_priced_as_its_ga_model(table):
    # Only dated snapshots and -latest fall back to their family; "-preview" names another model.
    assert table.resolve("gemini-2.5-pro") is not None
    assert table.resolve("gemini-2.5-pro-preview") is None
    own = PriceTable([handmade_price(model="m")])
    assert own.resolve("m-preview") is None
    assert own.resolve("m-latest").model == "m"


def test_tiers_apply_in_threshold_order_whatever_order_the_file_lists_them(tmp_path):
    entry = override_entry(model="long", input="1", output="2", tiers=[
        {"above_input_tokens": 1000, "input": "7", "output": "9"},
        {"above_input_tokens": 100, "input": "5"},
    ])  # fmt: skip
    price = PriceTable.load(write_override(tmp_path / "prices.json", entry)).resolve("long")
    assert [tier.above_input_tokens for tier in price.tiers] == [100, 1000]
    # above both: the higher tier's input price, not the lower one's laid over it
    assert cost(price, Usage(input_tokens=1001, output_tokens=1000)) == usd("0.016007")  # 1001 x 7 + 1000 x 9
    assert cost(price, Usage(input_tokens=101, output_tokens=1000)) == usd("0.002505")  # 101 x 5 + 1000 x 2
    assert cost(price, Usage(input_tokens=100, output_tokens=1000)) == usd("0.0021")  # 100 x 1 + 1000 x 2


def test_a_shared_name_resolves_to_the_dearest_output_then_the_dearest_input():
    # Without a provider, the entry whose worst case is dearest wins: output prices first, since
    # a request's output is what its reservation is mostly made of; input breaks a tie.
    dear_output = handmade_price(model="llama", provider="a", input=Money.per_million("1"),
                                 output=Money.per_million("9"))
    dear_input = handmade_price(model="llama", provider="b", input=Money.per_million("5"),
                                output=Money.per_million("3"))
    dear_both = handmade_price(model="llama", provider="c", input=Money.per_million("2"),
                               output=Money.per_million("9"))
    assert PriceTable([dear_output, dear_input]).resolve("llama") is dear_output
    assert PriceTable([dear_input, dear_output]).resolve("llama") is dear_output
    assert PriceTable([dear_output, dear_both, dear_input]).resolve("llama") is dear_both
    assert PriceTable([dear_both, dear_output]).resolve("llama") is dear_both
    assert PriceTable([dear_input, dear_output]).resolve("llama", provider="b") is dear_input


def test_reasoning_prices_are_read_from_a_file_and_from_its_tiers(tmp_path):
    entry = override_entry(model="thinker", input="1", output="2", reasoning="3",
                           tiers=[{"above_input_tokens": 10, "reasoning": "4"}])
    price = PriceTable.load(write_override(tmp_path / "prices.json", entry)).resolve("thinker")
    assert price.reasoning == Money.per_million("3")
    assert price.for_input(11).reasoning == Money.per_million("4")
    # 10 x 1 + 5 visible x 2 + 5 reasoning x 3; above the tier, reasoning costs 4
    assert cost(price, Usage(input_tokens=10, output_tokens=10, reasoning_tokens=5)) == usd("0.000035")
    assert cost(price, Usage(input_tokens=11, output_tokens=10, reasoning_tokens=5)) == usd("0.000041")


@pytest.mark.parametrize(
    "name, family",
    [
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("vertex_ai/claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("google/gemini-2.5-pro", "gemini-2.5-pro"),
        ("openai/gpt-4o-2024-08-06", "gpt-4o"),
    ],
)
def test_every_known_provider_prefix_is_stripped(table, name, family):
    assert table.resolve(name).model == family


def test_context_limits_are_read_from_a_file(tmp_path):
    entry = override_entry(model="small", max_input_tokens=1000, max_output_tokens=1)
    price = PriceTable.load(write_override(tmp_path / "prices.json", entry)).resolve("small")
    assert (price.max_input_tokens, price.max_output_tokens) == (1000, 1)


@pytest.mark.parametrize(
    "entry, complaint",
    [
        # a zero limit would reserve no output at all
        (override_entry(max_output_tokens=0), "max_output_tokens is a positive whole number"),
        (override_entry(max_input_tokens=0), "max_input_tokens is a positive whole number"),
        (override_entry(input="-0.000001"), "input is negative"),  # one pico-dollar below zero
        (override_entry(tiers=[{"above_input_tokens": 0, "input": "1"}]), "above_input_tokens is a positive"),
        (override_entry(tiers={"above_input_tokens": 1, "input": "1"}), "tiers is a list"),
        ({k: v for k, v in override_entry().items() if k != "model"}, "model is required"),
        (override_entry(provider=" "), "provider is required"),
        ({k: v for k, v in override_entry().items() if k != "as_of"}, "as_of is required"),
    ],
)
def test_malformed_entry_says_what_is_wrong(tmp_path, entry, complaint):
    with pytest.raises(InvalidInput, match=re.escape(complaint)):
        PriceTable.load(write_override(tmp_path / "prices.json", entry))


def test_default_home_is_data_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("POUCH_HOME")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    write_override(tmp_path / "data" / "prices.json", override_entry(input="1.00"))
    assert PriceTable.default().resolve("gpt-4o").input == Money.per_million("1.00")


def test_iterates_by_provider_then_model_and_counts_its_entries():
    table = PriceTable([handmade_price(model="b", provider="y"), handmade_price(model="a", provider="y"),
                        handmade_price(model="c", provider="x")])
    assert [(price.provider, price.model) for price in table] == [("x", "c"), ("y", "a"), ("y", "b")]
    assert len(table) == 3


def test_unknown_fields_are_named_in_order(tmp_path):
    with pytest.raises(InvalidInput, match=re.escape("unknown field(s) cache_input, outptu")):
        PriceTable.load(write_override(tmp_path / "prices.json", override_entry(outptu="1", cache_input="1")))


def test_read_prices_returns_what_the_file_prices(tmp_path):
    path = write_override(tmp_path / "prices.json", override_entry(), override_entry(model="gpt-4o-mini"))
    assert [(price.model, price.input) for price in read_prices(path)] == [
        ("gpt-4o", Money.per_million("2.00")), ("gpt-4o-mini", Money.per_million("2.00"))]


# --- tool fees -------------------------------------------------------------------------------


def test_a_tools_fees_stay_with_the_provider_that_charges_them():
    # A name sold by several providers keeps its token prices for a request to another of them,
    # but not the fees the pricing provider charges for its tools.
    priced = handmade_price(provider="a", tool_fees=(("web_search", Money.usd("0.01")),))
    assert priced.of_provider("a") is priced
    elsewhere = priced.of_provider("b")
    assert (elsewhere.tool_fees, elsewhere.input, elsewhere.output) == ((), priced.input, priced.output)
    assert elsewhere.tool_fee("web_search") is None
    plain = handmade_price(provider="a")
    assert plain.of_provider("b") is plain


def test_the_dearest_input_counts_every_cache_write_and_tier():
    price = handmade_price(cache_write_5m=Money.per_million("2"), cache_write_1h=Money.per_million("3"))
    assert price.dearest_input == Money.per_million("3")
    tiered = dataclasses.replace(price, tiers=(Tier(above_input_tokens=10, cache_write_1h=Money.per_million("5")),))
    assert tiered.dearest_input == Money.per_million("5")
    assert handmade_price().dearest_input == Money.per_million("1")


@pytest.mark.parametrize(
    "tools, complaint",
    [
        ({"provider": "openai", "tool": "x", "per_call": "1"}, '"tools" is a list'),
        ([{"provider": "openai", "tool": "x", "per_call": "1e999999999", "source": "s", "as_of": "2026-11-01"}],
         "per_call is not a number"),
        ([{"provider": "openai", "tool": "x", "per_call": "-0.000000000001", "source": "s", "as_of": "2026-11-01"}],
         "per_call is negative"),  # one pico-dollar below zero
    ],
)
def test_malformed_tool_fees(tools, complaint):
    with pytest.raises(InvalidInput, match=re.escape(complaint)):
        parse_tool_fees({"models": [], "tools": tools}, "f")


def test_tool_fees_reach_every_model_of_their_provider_only():
    fee = ToolFee("a", "web_search", Money.usd("0.01"), "s", datetime.date(2026, 11, 1))
    table = PriceTable([handmade_price(model="m", provider="a"), handmade_price(model="n", provider="b")], [fee])
    assert table.resolve("m", "a").tool_fee("web_search") == Money.usd("0.01")
    assert table.resolve("n", "b").tool_fee("web_search") is None
