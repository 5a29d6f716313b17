"""The shipped price table against the figures it cites (docs/price-research-2026-11-27.md).

Each expected cost is worked out by hand from the provider's published price per 1M tokens,
so a wrong figure in prices.json fails here. Requests are dated: the table changes over time
(prices with "from", retirements), and these tests must not depend on today's clock.
"""

from __future__ import annotations

import datetime

import pytest

from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.pricing.price import Price, Retirement, cost
from pouch.pricing.table import PriceTable

UTC = datetime.UTC
TODAY = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # when the table was checked


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()  # the shipped file only: no $POUCH_HOME override


def priced(table: PriceTable, model: str, provider: str, at: datetime.datetime = TODAY) -> Price:
    price = table.lookup(model, provider, at)
    assert isinstance(price, Price), f"{provider} {model} at {at:%Y-%m-%d %H:%M}: {price}"
    return price


def usd(amount: str) -> Money:
    return Money.usd(amount)


# --- 1. cache reads: a per-model fact from the provider's page, not 0.1 x input ---------------


@pytest.mark.parametrize(
    "model, provider, usage, expected",
    [
        # Anthropic pricing page: Fable 5.1 / Mythos 5.1 cache hits $0.25 / MTok
        ("claude-fable-5-1", "anthropic", Usage(input_tokens=1_000_000, cached_tokens=1_000_000), "0.25"),
        ("claude-mythos-5-1", "anthropic", Usage(input_tokens=1_000_000, cached_tokens=1_000_000), "0.25"),
        # Opus 5.5 model page: Cache read $0.20 / MTok
        ("claude-opus-5-5", "anthropic", Usage(input_tokens=1_000_000, cached_tokens=1_000_000), "0.20"),
        # Sonnet 5.5 model page: Cache read $0.20 / MTok (the map's 0.10 is wrong)
        ("claude-sonnet-5-5", "anthropic", Usage(input_tokens=1_000_000, cached_tokens=1_000_000), "0.20"),
        # gpt-6.1-terra: cached input $0.05 (5% of $1.00); 200,000 tokens stay below the 272K tier
        ("gpt-6.1-terra", "openai", Usage(input_tokens=200_000, cached_tokens=200_000), "0.01"),
        # gpt-6.1-sol: cached input $0.10 (5% of $2.00)
        ("gpt-6.1-sol", "openai", Usage(input_tokens=200_000, cached_tokens=200_000), "0.02"),
        # gemini-4-hydrogen: cached input $0.075, no long-context tier
        ("gemini-4-hydrogen", "gemini", Usage(input_tokens=1_000_000, cached_tokens=1_000_000), "0.075"),
    ],
)
def test_cache_reads_cost_what_the_provider_lists(table, model, provider, usage, expected):
    assert cost(priced(table, model, provider), usage) == usd(expected)


def test_a_whole_claude_fable_5_1_request():
    # 400,000 uncached x $10 + 300,000 read x $0.25 + 200,000 5m-write x $12.50
    # + 100,000 1h-write x $20 + 10,000 output x $50 (per 1M)
    # = 4.00 + 0.075 + 2.50 + 2.00 + 0.50
    usage = Usage(input_tokens=1_000_000, cached_tokens=300_000, cache_write_5m_tokens=200_000,
                  cache_write_1h_tokens=100_000, output_tokens=10_000)
    assert cost(priced(PriceTable.load(), "claude-fable-5-1", "anthropic"), usage) == usd("9.075")


@pytest.mark.parametrize(
    "model, expected",
    [
        # 272,000 input tokens (100,000 cached) and 1,000 output are short-context:
        # terra 172,000 x 1 + 100,000 x 0.05 + 1,000 x 5 = 0.172 + 0.005 + 0.005
        ("gpt-6.1-terra", "0.182"),
        # sol 172,000 x 2 + 100,000 x 0.10 + 1,000 x 10 = 0.344 + 0.01 + 0.01
        ("gpt-6.1-sol", "0.364"),
    ],
)
def test_exactly_272000_input_tokens_is_short_context(table, model, expected):
    usage = Usage(input_tokens=272_000, cached_tokens=100_000, output_tokens=1_000)
    assert cost(priced(table, model, "openai"), usage) == usd(expected)


@pytest.mark.parametrize(
    "model, expected",
    [
        # above 272K the whole request: input and cache x2, output x1.5
        # terra 200,000 x 2 + 100,000 x 0.10 + 1,000 x 7.50 = 0.40 + 0.01 + 0.0075
        ("gpt-6.1-terra", "0.4175"),
        # sol 200,000 x 4 + 100,000 x 0.20 + 1,000 x 15 = 0.80 + 0.02 + 0.015
        ("gpt-6.1-sol", "0.835"),
    ],
)
def test_above_272000_input_tokens_the_long_context_rates_apply(table, model, expected):
    usage = Usage(input_tokens=300_000, cached_tokens=100_000, output_tokens=1_000)
    assert cost(priced(table, model, "openai"), usage) == usd(expected)


# --- 2. prices that change on a date ----------------------------------------------------------

LAST_MINUTE = datetime.datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
DECEMBER = datetime.datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
NEW_YEAR_EVE = datetime.datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
NEW_YEAR = datetime.datetime(2027, 1, 1, 0, 0, tzinfo=UTC)
ONE_OF_EACH = Usage(input_tokens=2_000_000, cached_tokens=1_000_000, output_tokens=1_000_000)


def test_gemini_4_argon_launch_price_ends_with_november(table):
    # launch: 1M x $2 + 1M cached x $0.10 + 1M x $10; from 2026-12-01: $4 + $0.20 + $20
    assert cost(priced(table, "gemini-4-argon", "gemini", LAST_MINUTE), ONE_OF_EACH) == usd("12.10")
    assert cost(priced(table, "gemini-4-argon", "gemini", DECEMBER), ONE_OF_EACH) == usd("24.20")


@pytest.mark.parametrize("model", ["gemini-3.8-flash", "gemini-flash-latest"])
def test_gemini_3_8_flash_doubles_on_new_year(table, model):
    # through 2026-12-31: $0.75 + $0.075 cached + $3.75; from 2027-01-01: $1.50 + $0.15 + $7.50
    assert cost(priced(table, model, "gemini", NEW_YEAR_EVE), ONE_OF_EACH) == usd("4.575")
    assert cost(priced(table, model, "gemini", NEW_YEAR), ONE_OF_EACH) == usd("9.15")


def test_gemini_2_5_pro_is_billed_as_gemini_3_8_flash_from_december(table):
    usage = Usage(input_tokens=200_000, cached_tokens=100_000, output_tokens=100_000)  # not above 200K
    # until 2026-11-30 its own price: 100,000 x $1.25 + 100,000 x $0.125 + 100,000 x $10
    assert cost(priced(table, "gemini-2.5-pro", "gemini", LAST_MINUTE), usage) == usd("1.1375")
    # routed to 3.8 Flash: $0.75 / $0.075 / $3.75, then $1.50 / $0.15 / $7.50 from 2027-01-01
    assert cost(priced(table, "gemini-2.5-pro", "gemini", DECEMBER), usage) == usd("0.4575")
    assert cost(priced(table, "gemini-2.5-pro", "gemini", NEW_YEAR), usage) == usd("0.915")


def test_gemini_2_5_pro_has_no_long_context_price_once_routed(table):
    # 300,000 input tokens: 2.5 Pro's >200K tier ($2.50) before, 3.8 Flash's flat $0.75 after
    usage = Usage(input_tokens=300_000)
    assert cost(priced(table, "gemini-2.5-pro", "gemini", LAST_MINUTE), usage) == usd("0.75")
    assert cost(priced(table, "gemini-2.5-pro", "gemini", DECEMBER), usage) == usd("0.225")


def test_gemini_2_5_flash_keeps_its_price_when_routed_to_3_5_flash_lite(table):
    # routed to gemini-3.5-flash-lite on 2026-12-01 at the same $0.30 / $0.03 / $2.50
    for at in (LAST_MINUTE, DECEMBER):
        assert cost(priced(table, "gemini-2.5-flash", "gemini", at), ONE_OF_EACH) == usd("2.83")
    assert cost(priced(table, "gemini-3.5-flash-lite", "gemini", DECEMBER), ONE_OF_EACH) == usd("2.83")


# --- 3. models clients send today -------------------------------------------------------------


@pytest.mark.parametrize("model", ["claude-fable-5-2", "claude-mythos-5-2"])
def test_claude_5_2(table, model):
    # $8 input, $0.20 read, $10 5m write, $16 1h write, $40 output; 1M window at one rate:
    # 500,000 x 8 + 200,000 x 0.20 + 200,000 x 10 + 100,000 x 16 + 100,000 x 40
    # = 4.00 + 0.04 + 2.00 + 1.60 + 4.00
    usage = Usage(input_tokens=1_000_000, cached_tokens=200_000, cache_write_5m_tokens=200_000,
                  cache_write_1h_tokens=100_000, output_tokens=100_000)
    assert cost(priced(table, model, "anthropic"), usage) == usd("11.64")


@pytest.mark.parametrize(
    "model, short, long",
    [
        # gpt-6.2-sol: $2 / $0.10 / $10; above 272K: $4 / $0.20 / $15
        # short: 100,000 x 2 + 100,000 x 0.10 + 10,000 x 10 = 0.20 + 0.01 + 0.10
        # long: 300,000 x 4 + 100,000 x 0.20 + 10,000 x 15 = 1.20 + 0.02 + 0.15
        ("gpt-6.2-sol", "0.31", "1.37"),
        # gpt-6.2-astra: $8 / $0.40 / $40; above 272K: $16 / $0.80 / $60
        ("gpt-6.2-astra", "1.24", "5.48"),
    ],
)
def test_gpt_6_2(table, model, short, long):
    price = priced(table, model, "openai")
    assert cost(price, Usage(input_tokens=200_000, cached_tokens=100_000, output_tokens=10_000)) == usd(short)
    assert cost(price, Usage(input_tokens=400_000, cached_tokens=100_000, output_tokens=10_000)) == usd(long)


def test_gemini_4_neon(table):
    # $3 input, $0.15 cached, $15 output, flat across 1M: 1M x 3 + 1M x 0.15 + 1M x 15
    assert cost(priced(table, "gemini-4-neon", "gemini"), ONE_OF_EACH) == usd("18.15")


@pytest.mark.parametrize(
    "model, expected",
    [
        # peak rates; 1M cache miss + 1M cache hit + 1M output
        ("deepseek-v4-flash", "1.506"),  # 0.30 + 0.006 + 1.20
        ("deepseek-flash", "1.506"),  # the current name of the same model and price
        ("deepseek-v4-pro", "5.324"),  # 1.32 + 0.044 + 3.96
    ],
)
def test_deepseek_v4_at_the_peak_rate(table, model, expected):
    assert cost(priced(table, model, "deepseek"), ONE_OF_EACH) == usd(expected)


def test_gpt_5_search_api_pays_a_search_on_every_request(table):
    price = priced(table, "gpt-5-search-api", "openai")
    assert cost(price, Usage()) == usd("0.01")  # $10 / 1K searches, one a request
    # 100,000 x 1.25 + 100,000 x 0.125 + 10,000 x 10 + 0.01
    usage = Usage(input_tokens=200_000, cached_tokens=100_000, output_tokens=10_000)
    assert cost(price, usage) == usd("0.2475")
    assert priced(table, "gpt-5-search-api-2025-10-14", "openai").model == "gpt-5-search-api"


def test_gemini_2_5_flash_preview_is_priced_as_gemini_2_5_flash(table):
    preview = priced(table, "gemini-2.5-flash-preview-09-2025", "gemini")
    assert cost(preview, ONE_OF_EACH) == usd("2.83")  # 0.30 + 0.03 + 2.50
    assert table.resolve("gemini-2.5-flash-preview", "gemini") is None  # another preview: not guessed


# --- 4. retired models: refused with the date and the replacement ------------------------------


@pytest.mark.parametrize(
    "name, provider, date, replacement",
    [
        # the names the issue lists, as real clients still send them
        ("gpt-4", "openai", "2026-10-23", "gpt-5.6-sol"),
        ("gpt-4-0613", "openai", "2026-10-23", "gpt-5.6-sol"),
        ("gpt-4-turbo", "openai", "2026-10-23", "gpt-5.6-sol"),
        ("gpt-4-1106-preview", "openai", "2026-10-23", "gpt-5.6-sol"),
        ("gpt-3.5-turbo", "openai", "2026-10-23", "gpt-5.6-terra"),
        ("claude-sonnet-4-20250514", "anthropic", "2026-06-15", "claude-sonnet-4-6"),
        ("claude-sonnet-4-0", "anthropic", "2026-06-15", "claude-sonnet-4-6"),
        ("claude-opus-4-0", "anthropic", "2026-06-15", "claude-opus-4-8"),
        ("claude-3-5-haiku-latest", "anthropic", "2026-02-19", "claude-haiku-4-5"),
        ("o1-mini", "openai", "2025-10-27", "gpt-5.6-terra"),
        # shut down before the table was checked
        ("gpt-4o-search-preview", "openai", "2026-07-23", "gpt-5.6-terra"),
        ("gpt-5-codex", "openai", "2026-07-23", "gpt-5.6-sol"),
        ("gpt-5.3-chat-latest", "openai", "2026-08-10", "gpt-5.6-sol"),
        ("o4-mini-2025-04-16", "openai", "2026-10-23", "gpt-5.6-terra"),
        ("deepseek-chat", "deepseek", "2026-07-24", "deepseek-flash"),
        ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "together", "2026-10-22", "meta-models/Muse-Glimmer-30B"),
    ],
)
def test_a_retired_model_is_refused_with_its_date_and_replacement(table, name, provider, date, replacement):
    retired = table.lookup(name, provider, TODAY)
    assert isinstance(retired, Retirement), retired
    assert date in retired.message and f"use {replacement} instead" in retired.message
    assert table.resolve(replacement, provider, TODAY) is not None  # the replacement is one pouch prices


@pytest.mark.parametrize(
    "name, provider, day, replacement",
    [
        ("claude-sonnet-4-5", "anthropic", datetime.date(2026, 11, 30), "claude-sonnet-5-5"),
        ("gpt-5", "openai", datetime.date(2026, 12, 11), "gpt-6.1-sol"),
        ("gpt-5-mini-2025-08-07", "openai", datetime.date(2026, 12, 11), "gpt-6.1-terra"),
        ("o3", "openai", datetime.date(2026, 12, 11), "gpt-5.6-sol"),
        ("gpt-4o", "openai", datetime.date(2027, 1, 14), "gpt-6-luna"),
        ("gpt-4.1-mini", "openai", datetime.date(2027, 1, 14), "gpt-6-luna"),
        ("gpt-5.1", "openai", datetime.date(2027, 4, 1), "gpt-6-sol"),
    ],
)
def test_an_announced_retirement_prices_the_model_until_its_day(table, name, provider, day, replacement):
    midnight = datetime.datetime.combine(day, datetime.time(), UTC)
    assert isinstance(table.lookup(name, provider, midnight - datetime.timedelta(minutes=1)), Price)
    retired = table.lookup(name, provider, midnight)
    assert isinstance(retired, Retirement) and f"on {day:%Y-%m-%d}: use {replacement} instead" in retired.message


def test_claude_sonnet_4_5_costs_its_price_the_day_before_it_retires(table):
    # $3 input, $15 output: 100,000 of each on 2026-11-29
    usage = Usage(input_tokens=100_000, output_tokens=100_000)
    assert cost(priced(table, "claude-sonnet-4-5", "anthropic", LAST_MINUTE - datetime.timedelta(days=1)),
                usage) == usd("1.80")


# --- 5. the names clients send for a priced model ---------------------------------------------


@pytest.mark.parametrize(
    "name, provider, entry_provider, entry_model",
    [
        ("grok-4.20-0309", "xai", "xai", "grok-4.20"),  # xAI -MMDD: an alias on docs.x.ai
        ("grok-4.20-0309-reasoning", "xai", "xai", "grok-4.20-reasoning"),
        ("mistral-large-2512", "mistral", "mistral", "mistral-large-latest"),  # Mistral -YYMM: listed by name
        ("mistral-medium-2604", "mistral", "mistral", "mistral-medium-latest"),
        ("mistral-small-2603", "mistral", "mistral", "mistral-small-latest"),
        ("codestral-2508", "mistral", "mistral", "codestral-latest"),
        ("ministral-8b-2512", "mistral", "mistral", "ministral-8b-latest"),
        ("publishers/google/models/gemini-4-argon@001", "gemini", "gemini", "gemini-4-argon"),  # Vertex @001
        ("gemini-2.5-flash@001", "gemini", "gemini", "gemini-2.5-flash"),
        # OpenRouter passes the vendor's own price through: the vendor's entry
        ("anthropic/claude-sonnet-4.5", "openrouter", "anthropic", "claude-sonnet-4-5"),
        ("anthropic/claude-opus-4.6", "openrouter", "anthropic", "claude-opus-4-6"),
        ("x-ai/grok-4.20", "openrouter", "xai", "grok-4.20"),
        ("openai/gpt-6.2-sol", "openrouter", "openai", "gpt-6.2-sol"),
        ("google/gemini-4-neon", "openrouter", "gemini", "gemini-4-neon"),
    ],
)
def test_a_name_form_resolves_to_its_entry(table, name, provider, entry_provider, entry_model):
    price = priced(table, name, provider)
    assert (price.provider, price.model) == (entry_provider, entry_model)


def test_an_older_mistral_version_is_not_priced_as_the_latest(table):
    # -YYMM versions are priced apart: only the version -latest names now shares its price
    assert table.resolve("mistral-large-2411", "mistral", TODAY) is None
    assert table.resolve("mistral-medium-2505", "mistral", TODAY) is None


def test_openrouter_has_no_hand_written_entries_left(table):
    # the five copied Claude prices are gone: OpenRouter names go through to the vendor's entry
    assert not [e for e in table.entries() if e.provider == "openrouter"]
    assert priced(table, "anthropic/claude-sonnet-4.5", "openrouter").priced_as


@pytest.mark.parametrize(
    "model, short, long",
    [
        # 199,999 prompt tokens at $1.25; 200,000 at $2.50 ("≥ 200k": the whole request)
        ("grok-4.20", "0.24999875", "0.50"),
        ("grok-4.20-reasoning", "0.24999875", "0.50"),
        ("grok-4.20-0309", "0.24999875", "0.50"),
        ("grok-4.7", "0.399998", "0.80"),  # $2.00, then $4.00
    ],
)
def test_xai_long_context_starts_at_200000_prompt_tokens(table, model, short, long):
    price = priced(table, model, "xai")
    assert cost(price, Usage(input_tokens=199_999)) == usd(short)
    assert cost(price, Usage(input_tokens=200_000)) == usd(long)


# --- 6. long context above the window -----------------------------------------------------------


def test_claude_sonnet_4_5_with_context_1m_is_priced_at_the_long_context_rate(table):
    price = priced(table, "claude-sonnet-4-5", "anthropic")
    assert price.max_input_tokens == 200_000 and price.prices_beyond(500_000)
    # 300,000 input (100,000 read, 50,000 5m-write, 50,000 1h-write), 10,000 output, whole request at
    # 100,000 x 6 + 100,000 x 0.60 + 50,000 x 7.50 + 50,000 x 12 + 10,000 x 22.50
    # = 0.60 + 0.06 + 0.375 + 0.60 + 0.225
    usage = Usage(input_tokens=300_000, cached_tokens=100_000, cache_write_5m_tokens=50_000,
                  cache_write_1h_tokens=50_000, output_tokens=10_000)
    assert cost(price, usage) == usd("1.86")
    # at the 200,000 window itself: the standard $3 / $15
    assert cost(price, Usage(input_tokens=200_000, output_tokens=10_000)) == usd("0.75")


# --- 7. every difference from the public map is a documented one ------------------------------


def test_every_difference_from_the_shipped_map_is_documented(table):
    from pouch.pricing.check import compare, reference_map

    report = compare(table.entries(), reference_map())
    assert [(d.provider, d.model, d.field) for d in report.undocumented] == []
    # the corrections above are among the documented differences, each with a source URL
    documented = {(d.model, d.field): d.why for d in report.differences}
    assert "https://" in documented[("claude-sonnet-5-5", "cached_input")]
    assert "https://" in documented[("grok-4.20", "tiers")]
