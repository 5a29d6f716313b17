import datetime
import json
import re

import pytest

from pouch.domain.errors import InvalidInput
from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.pricing.table import Price, PriceTable, Tier, cost


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
    assert cost(table.resolve(model), usage) == usd(expected)


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
    assert table.resolve("claude-sonnet-4-5").highest_output == Money.per_million("15")


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
    assert table.resolve(name).model == family


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
        compatible = {"groq", "mistral", "deepseek", "xai", "openrouter", "together", "fireworks"}
        assert providers == {"openai", "anthropic", "gemini"} | compatible  # azure: OpenAI's prices
        assert {p.mode for p in table} == {"chat", "embedding"}

    def test_anthropic_cache_multipliers(self, table):
        for price in table:
            if price.provider == "anthropic":
                for level in [price, *price.tiers]:
                    base = level.input.pico
                    assert level.cached_input.pico * 10 == base, price.model
                    assert level.cache_write_5m.pico * 4 == base * 5, price.model
                    assert level.cache_write_1h.pico == base * 2, price.model

    def test_cache_reads_are_discounted(self, table):
        for price in table:
            for level in [price, *price.tiers]:
                if level.cached_input is not None and level.input is not None:
                    assert level.cached_input.pico * 10 >= level.input.pico, price.model  # at least 0.1x
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
