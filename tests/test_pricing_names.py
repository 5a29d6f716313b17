"""What a client may send for a priced model: dated names, versions, sellers' spellings."""

from __future__ import annotations

import datetime

import pytest

from pouch.domain.money import Money
from pouch.pricing.price_file import parse_prices
from pouch.pricing.table import PriceTable


def entry(model, provider, **fields):
    return {"model": model, "provider": provider, "input": "1", "output": "2", "source": "test",
            "as_of": "2026-11-27"} | fields


@pytest.fixture
def table():
    return PriceTable(parse_prices({"models": [
        entry("grok-4.20", "xai"), entry("grok-4.20-reasoning", "xai", input="3"),
        entry("gpt-4o", "openai"), entry("gpt-4", "openai", input="30"),
        entry("claude-sonnet-4-5", "anthropic", input="3"), entry("gemini-2.5-flash", "gemini"),
        entry("mistral-large-latest", "mistral", input="0.5", aliases=["mistral-large-2512"]),
        entry("mistral-medium-latest", "mistral", input="1.5"),
        entry("openai/gpt-oss-120b", "groq", input="0.15"), entry("gpt-oss-120b", "openai", input="0.01"),
        entry("gemma-3-27b-it", "gemini", input="0"),
        entry("own-model", "openrouter", input="7"),
    ]}, "test"))


@pytest.mark.parametrize("name, provider, model", [
    ("grok-4.20-0309", "xai", "grok-4.20"),  # xAI: -MMDD is an alias of the same model
    ("grok-4.20-0309-reasoning", "xai", "grok-4.20-reasoning"),  # the date before -reasoning
    ("gpt-4-0613", "openai", "gpt-4"),  # OpenAI's old -MMDD snapshots
    ("gemini-2.5-flash@001", "gemini", "gemini-2.5-flash"),  # Vertex version ids
    ("publishers/google/models/gemini-2.5-flash@001", "gemini", "gemini-2.5-flash"),
    ("mistral-large-2512", "mistral", "mistral-large-latest"),  # a version listed as an alias
    ("anthropic/claude-sonnet-4.5", "openrouter", "claude-sonnet-4-5"),  # OpenRouter's dotted Claude
    ("x-ai/grok-4.20", "openrouter", "grok-4.20"),
    ("openai/gpt-4o-2024-08-06", "openrouter", "gpt-4o"),
    ("own-model", "openrouter", "own-model"),  # the operator's own OpenRouter entry wins
])
def test_a_name_resolves_to_its_model(table, name, provider, model):
    assert table.resolve(name, provider).model == model


@pytest.mark.parametrize("name, provider", [
    ("mistral-large-2411", "mistral"),  # another version: its price may differ, so it is not guessed
    ("mistral-medium-2604", "mistral"),  # not listed as an alias: not guessed from -latest either
    ("gpt-4-1106-preview", "openai"),  # a preview is another model
    ("gemini-2.5-flash-preview-09-2025", "gemini"),
    ("grok-4.20-1399", "xai"),  # not a date
    ("openai/gpt-oss-120b", "openrouter"),  # open weights: OpenRouter routes them to hosts priced apart
    ("google/gemma-3-27b-it", "openrouter"),  # even where the vendor itself prices them (here at $0)
    ("mistralai/mistral-large-2512", "openrouter"),  # Mistral's models are open weights too
    ("deepseek/deepseek-chat", "openrouter"),
    ("gpt-4o", "openrouter"),  # OpenRouter names carry their vendor
    ("claude-sonnet-4.5", "openai"),  # the dotted form is OpenRouter's, but no openai entry: by name...
])
def test_a_name_that_is_not_the_model_stays_unpriced(table, name, provider):
    found = table.resolve(name, provider)
    if name == "claude-sonnet-4.5":  # ... it is the same Claude model under another seller
        assert found.model == "claude-sonnet-4-5" and "priced as anthropic's" in found.priced_as
        return
    assert found is None


def test_openrouter_says_it_passes_the_vendors_price_through(table):
    price = table.resolve("anthropic/claude-sonnet-4.5", "openrouter")
    assert price.input == Money.per_million("3") and price.provider == "anthropic"
    assert "OpenRouter passes the vendor's own price through" in price.priced_as
    assert table.resolve("claude-sonnet-4-5", "anthropic").priced_as is None


def test_an_alias_is_listed_once_and_resolves_to_every_dated_entry():
    document = {"models": [entry("m-latest", "mistral", aliases=["m-2512"]),
                           entry("m-latest", "mistral", aliases=["m-2512"], input="4", **{"from": "2027-01-01"})]}
    table = PriceTable(parse_prices(document, "test"))
    assert len(table) == 1 and [p.model for p in table] == ["m-latest"]
    later = datetime.datetime(2027, 1, 2, tzinfo=datetime.UTC)
    assert table.resolve("m-2512", "mistral", later).input == Money.per_million("4")
