import datetime
import json
import logging

import pytest

from pouch.domain.errors import InvalidInput
from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.pricing.litellm_import import import_litellm, per_million
from pouch.pricing.price import cost
from pouch.pricing.table import PriceTable

# Real entries from LiteLLM 1.110.2's model_prices_and_context_window.json, trimmed of
# capability flags; the service-tier (_batches, _priority) prices are kept to show they are ignored.
LITELLM = {
    "sample_spec": {
        "input_cost_per_token": 0.0,
        "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
        "max_input_tokens": "max input tokens, if the provider specifies it",
        "mode": "one of: chat, embedding, completion, image_generation, ...",
        "output_cost_per_token": 0.0,
    },
    "gpt-4o": {
        "cache_read_input_token_cost": 1.25e-06,
        "cache_read_input_token_cost_priority": 2.125e-06,
        "input_cost_per_token": 2.5e-06,
        "input_cost_per_token_batches": 1.25e-06,
        "input_cost_per_token_priority": 4.25e-06,
        "litellm_provider": "openai",
        "max_input_tokens": 128000,
        "max_output_tokens": 16384,
        "mode": "chat",
        "output_cost_per_token": 1e-05,
        "output_cost_per_token_priority": 1.7e-05,
        "source": "https://developers.openai.com/api/docs/pricing",
    },
    "vertex_ai/claude-sonnet-4-5@20250929": {
        "cache_creation_input_token_cost": 3.75e-06,
        "cache_creation_input_token_cost_above_1hr": 6e-06,
        "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-05,
        "cache_read_input_token_cost": 3e-07,
        "input_cost_per_token": 3e-06,
        "input_cost_per_token_above_200k_tokens": 6e-06,
        "output_cost_per_token_above_200k_tokens": 2.25e-05,
        "cache_creation_input_token_cost_above_200k_tokens": 7.5e-06,
        "cache_read_input_token_cost_above_200k_tokens": 6e-07,
        "litellm_provider": "vertex_ai-anthropic_models",
        "max_input_tokens": 200000,
        "max_output_tokens": 64000,
        "mode": "chat",
        "output_cost_per_token": 1.5e-05,
    },
    "gemini/gemini-2.5-pro": {
        "cache_read_input_token_cost": 1.25e-07,
        "cache_read_input_token_cost_above_200k_tokens": 2.5e-07,
        "cache_read_input_token_cost_above_200k_tokens_priority": 4.5e-07,
        "input_cost_per_token": 1.25e-06,
        "input_cost_per_token_above_200k_tokens": 2.5e-06,
        "litellm_provider": "gemini",
        "max_input_tokens": 1048576,
        "max_output_tokens": 65536,
        "mode": "chat",
        "output_cost_per_token": 1e-05,
        "output_cost_per_token_above_200k_tokens": 1.5e-05,
        "source": "https://ai.google.dev/gemini-api/docs/pricing",
    },
    "gemini/gemma-3-27b-it": {
        "input_cost_per_token": 0,
        "input_cost_per_token_above_128k_tokens": 0,
        "litellm_provider": "gemini",
        "max_input_tokens": 131072,
        "max_output_tokens": 8192,
        "mode": "chat",
        "output_cost_per_token": 0,
    },
    "text-embedding-3-small": {
        "input_cost_per_token": 2e-08,
        "litellm_provider": "openai",
        "max_input_tokens": 8191,
        "mode": "embedding",
        "output_cost_per_token": 0.0,
    },
    "gpt-image-1": {
        "input_cost_per_token": 5e-06,
        "litellm_provider": "openai",
        "mode": "image_generation",
    },
    "groq/openai/gpt-oss-120b": {
        "cache_read_input_token_cost": 7.5e-08,
        "input_cost_per_token": 1.5e-07,
        "litellm_provider": "groq",
        "max_input_tokens": 131072,
        "max_output_tokens": 65536,
        "mode": "chat",
        "output_cost_per_token": 6e-07,
    },
    "gpt-6-sol": {
        "cache_creation_input_token_cost": 2.5e-06,
        "cache_creation_input_token_cost_above_12hr": 5e-06,
        "cache_creation_input_token_cost_above_12hr_above_272k_tokens": 1e-05,
        "cache_creation_input_token_cost_above_272k_tokens": 5e-06,
        "cache_read_input_token_cost": 2e-07,
        "cache_read_input_token_cost_above_272k_tokens": 4e-07,
        "input_cost_per_token": 2e-06,
        "input_cost_per_token_above_272k_tokens": 4e-06,
        "litellm_provider": "openai",
        "max_input_tokens": 922000,
        "max_output_tokens": 128000,
        "mode": "responses",
        "output_cost_per_token": 1e-05,
        "output_cost_per_token_above_272k_tokens": 1.5e-05,
    },
}


@pytest.mark.parametrize(
    "per_token, expected",
    [
        (2.5e-06, "2.50"),
        (1e-05, "10.00"),
        (0.00015, "150.00"),
        (1.25e-07, "0.125"),
        (3.75e-08, "0.0375"),
        (5e-09, "0.005"),
        (1.500002e-05, "15.00002"),
        (1.5000020000000002e-05, "15.00002"),  # float noise below a pico-dollar
        (0, None),
        (0.0, None),
        (-1e-06, None),
        ("2.5e-06", None),
        (True, None),
        (None, None),
    ],
)
def test_per_million(per_token, expected):
    assert per_million(per_token) == expected


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "litellm.json"
    path.write_text(json.dumps(LITELLM))
    return path


def imported(dest):
    return {(m["provider"], m["model"]): m for m in json.loads(dest.read_text())["models"]}


def test_import(source, tmp_path, caplog):
    dest = tmp_path / "home" / "prices.json"
    with caplog.at_level(logging.WARNING):
        count = import_litellm(source, dest)
    assert count == 6
    assert "gemini/gemma-3-27b-it" in caplog.text  # reported, not imported as free
    models = imported(dest)
    assert set(models) == {
        ("openai", "gpt-4o"),
        ("openai", "gpt-6-sol"),
        ("openai", "text-embedding-3-small"),
        ("gemini", "gemini-2.5-pro"),
        ("groq", "openai/gpt-oss-120b"),
        ("vertex_ai", "claude-sonnet-4-5@20250929"),
    }
    assert models[("openai", "gpt-4o")] == {
        "model": "gpt-4o",
        "provider": "openai",
        "mode": "chat",
        "input": "2.50",
        "cached_input": "1.25",
        "output": "10.00",
        "max_input_tokens": 128000,
        "max_output_tokens": 16384,
        "source": "imported from litellm.json; https://developers.openai.com/api/docs/pricing",
        "as_of": datetime.date.today().isoformat(),
        "from": datetime.datetime.now(datetime.UTC).date().isoformat(),  # imported prices apply from today
    }
    assert models[("gemini", "gemini-2.5-pro")]["tiers"] == [
        {"above_input_tokens": 200000, "input": "2.50", "cached_input": "0.25", "output": "15.00"}
    ]
    claude = models[("vertex_ai", "claude-sonnet-4-5@20250929")]
    assert (claude["cache_write_5m"], claude["cache_write_1h"]) == ("3.75", "6.00")
    assert claude["tiers"] == [
        {
            "above_input_tokens": 200000,
            "input": "6.00",
            "cached_input": "0.60",
            "cache_write_5m": "7.50",
            "cache_write_1h": "12.00",
            "output": "22.50",
        }
    ]
    sol = models[("openai", "gpt-6-sol")]
    assert (sol["mode"], sol["cache_write_1h"], sol["tiers"][0]["cache_write_1h"]) == ("chat", "5.00", "10.00")
    embedding = models[("openai", "text-embedding-3-small")]
    assert (embedding["mode"], embedding["input"], "output" in embedding) == ("embedding", "0.02", False)


def test_imported_file_is_a_working_override(source, tmp_path):
    dest = tmp_path / "prices.json"
    import_litellm(source, dest)
    table = PriceTable.load(dest)
    assert table.resolve("openai/gpt-oss-120b", provider="groq").input == Money.per_million("0.15")
    # 1000 input at 0.15 + 1000 output at 0.60
    assert cost(table.resolve("openai/gpt-oss-120b"), Usage(1000, output_tokens=1000)) == Money.usd("0.00075")


def test_merge_keeps_other_models_and_dates_a_changed_price(source, tmp_path):
    dest = tmp_path / "prices.json"
    mine = {"model": "house-model", "provider": "vllm", "input": "0.01", "output": "0.02"}
    mine |= {"source": "our GPU bill", "as_of": "2026-10-01"}
    old_gpt = {"model": "gpt-4o", "provider": "openai", "input": "9", "output": "9", "source": "old", "as_of": "2020-01-01"}
    dest.write_text(json.dumps({"models": [old_gpt, mine]}))
    import_litellm(source, dest, providers={"openai"})
    models = imported(dest)
    assert models[("vllm", "house-model")] == mine
    assert models[("openai", "gpt-4o")]["input"] == "2.50"
    assert {provider for provider, _ in models} == {"openai", "vllm"}
    # the old price still prices what came before the import; the new one applies from today
    gpt = [m for m in json.loads(dest.read_text())["models"] if m["model"] == "gpt-4o"]
    assert [(m["input"], m.get("from")) for m in gpt] == [("9", None), ("2.50", datetime.datetime.now(datetime.UTC).date().isoformat())]
    table = PriceTable.load(dest)
    assert table.resolve("gpt-4o", "openai", datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)).input == \
        Money.per_million("9")
    assert table.resolve("gpt-4o", "openai", datetime.datetime.now(datetime.UTC)).input == Money.per_million("2.50")


def test_reimporting_an_unchanged_map_adds_nothing_and_a_changed_price_gets_its_date(source, tmp_path):
    dest = tmp_path / "prices.json"
    import_litellm(source, dest, effective="2026-11-01")
    first = dest.read_text()
    import_litellm(source, dest, effective="2026-12-01")
    assert dest.read_text() == first  # the same prices keep their first date
    changed = json.loads(source.read_text())
    changed["gpt-4o"]["input_cost_per_token"] = 5e-06
    source.write_text(json.dumps(changed))
    import_litellm(source, dest, effective="2026-12-01")
    table = PriceTable.load(dest)
    before, after = (datetime.datetime(2026, 11, 30, 23, 59, tzinfo=datetime.UTC),
                     datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC))
    assert table.resolve("gpt-4o", "openai", before).input == Money.per_million("2.50")
    assert table.resolve("gpt-4o", "openai", after).input == Money.per_million("5")


def test_importing_for_all_time_replaces_the_earlier_dates(source, tmp_path):
    dest = tmp_path / "prices.json"
    old = {"model": "gpt-4o", "provider": "openai", "input": "9", "output": "9", "source": "old", "as_of": "2020-01-01",
           "from": "2026-01-01"}
    dest.write_text(json.dumps({"models": [old]}))
    import_litellm(source, dest, effective=None)
    gpt = [m for m in json.loads(dest.read_text())["models"] if m["model"] == "gpt-4o"]
    assert [(m["input"], m.get("from")) for m in gpt] == [("2.50", None)]


def test_malformed_destination_is_left_alone(source, tmp_path):
    dest = tmp_path / "prices.json"
    dest.write_text('{"models": [{"model": "x"}]}')
    with pytest.raises(InvalidInput, match="models\\[0\\]"):
        import_litellm(source, dest)
    assert dest.read_text() == '{"models": [{"model": "x"}]}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["litellm.json", "prices.json"]


def test_unreadable_source(tmp_path):
    with pytest.raises(InvalidInput, match="cannot read"):
        import_litellm(tmp_path / "missing.json", tmp_path / "prices.json")
