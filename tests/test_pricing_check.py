"""pouch prices check: every difference from a public map, by model and field, documented or not."""

from __future__ import annotations

import gzip
import json

import pytest
from click.testing import CliRunner

from pouch.cli.main import cli
from pouch.pricing.check import compare, read_map, reference_map
from pouch.pricing.price_file import parse_prices
from pouch.pricing.table import PriceTable

MAP = {
    "sample_spec": {"input_cost_per_token": 0},
    "gpt-x": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 2e-06,
              "cache_read_input_token_cost": 1e-07, "output_cost_per_token": 1e-05, "max_input_tokens": 1000},
    "gpt-old": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-06,
                "output_cost_per_token": 2e-06, "deprecation_date": "2026-10-23"},
    "mistral/mistral-large-2512": {"litellm_provider": "mistral", "mode": "chat", "input_cost_per_token": 5e-07,
                                   "output_cost_per_token": 1.5e-06},
    "mistral/mistral-large-latest": {"litellm_provider": "mistral", "mode": "chat", "input_cost_per_token": 5e-07,
                                     "output_cost_per_token": 1.5e-06},
    "gemini/long": {"litellm_provider": "gemini", "mode": "chat", "input_cost_per_token": 1e-06,
                    "output_cost_per_token": 2e-06, "input_cost_per_token_above_200k_tokens": 2e-06},
    "fireworks_ai/accounts/fireworks/models/glm": {"litellm_provider": "fireworks_ai", "mode": "chat",
                                                   "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
    "unrelated": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-06,
                  "output_cost_per_token": 1e-06},
}


def entry(model, provider="openai", **fields):
    return {"model": model, "provider": provider, "source": "t", "as_of": "2026-11-27"} | fields


def entries(*listed):
    return PriceTable(parse_prices({"models": list(listed)}, "test")).entries()


def differences(*listed):
    return [(d.model, d.field, d.ours, d.theirs, d.why) for d in compare(entries(*listed), MAP).differences]


def test_the_same_prices_differ_in_nothing():
    report = compare(entries(entry("gpt-x", input="2", cached_input="0.1", output="10", max_input_tokens=1000),
                             entry("accounts/fireworks/models/glm", "fireworks", input="1", output="1")), MAP)
    assert report.differences == [] and report.compared == 2 and report.not_in_map == []


def test_a_different_price_is_listed_by_model_and_field_and_is_undocumented():
    found = differences(entry("gpt-x", input="2", cached_input="0.2", output="10", max_input_tokens=1000))
    assert found == [("gpt-x", "cached_input", "0.2", "0.1", None)]


def test_a_documented_difference_carries_its_reason():
    why = "the provider's page lists $0.20 (https://example.com/pricing)"
    found = differences(entry("gpt-x", input="2", cached_input="0.2", output="10", max_input_tokens=1000,
                              differs_from_map={"cached_input": why}))
    assert found == [("gpt-x", "cached_input", "0.2", "0.1", why)]


def test_limits_tiers_and_missing_prices_are_compared():
    found = differences(entry("long", "gemini", input="1", output="2", max_output_tokens=10,
                              tiers=[{"above_input_tokens": 200000, "input": "3"}]))
    assert ("long", "max_output_tokens", 10, None, None) in found
    assert ("long", "tiers", [{"above_input_tokens": 200000, "input": "3"}],
            [{"above_input_tokens": 200000, "input": "2"}], None) in found
    assert len(found) == 2


def test_retirement_dates_are_compared():
    assert differences(entry("gpt-old", input="1", output="2")) == [("gpt-old", "retired", None, "2026-10-23", None)]
    same = entry("gpt-old", retired="2026-10-23", use="gpt-x")
    assert differences(entry("gpt-old", input="1", output="2"), same) == []
    later = entry("gpt-old", retired="2026-11-01", use="gpt-x", differs_from_map={"retired": "postponed"})
    assert differences(entry("gpt-old", input="1", output="2"), later) == [
        ("gpt-old", "retired", "2026-11-01", "2026-10-23", "postponed")]


def test_aliases_and_dated_entries_are_each_compared():
    found = differences(
        entry("mistral-large-latest", "mistral", input="0.5", output="1.5", aliases=["mistral-large-2512"]),
        entry("mistral-large-latest", "mistral", input="1", output="1.5", aliases=["mistral-large-2512"],
              **{"from": "2027-01-01", "differs_from_map": {"input": "doubles on 2027-01-01"}}))
    assert found == [("mistral-large-latest", "input", "1", "0.5", "doubles on 2027-01-01"),
                     ("mistral-large-2512", "input", "1", "0.5", "doubles on 2027-01-01")]


def test_a_model_the_map_lacks_is_listed_apart():
    report = compare(entries(entry("brand-new", input="1", output="1")), MAP)
    assert report.differences == [] and report.not_in_map == [("openai", "brand-new")]


def test_the_cli_exits_1_on_an_undocumented_difference(tmp_path, monkeypatch):
    monkeypatch.setenv("POUCH_HOME", str(tmp_path))
    price_map = tmp_path / "map.json.gz"
    shipped_gpt4o = {k: v for k, v in reference_map()["gpt-4o"].items() if k != "deprecation_date"}
    price_map.write_bytes(gzip.compress(json.dumps({"gpt-4o": shipped_gpt4o | {"input_cost_per_token": 9e-06}})
                                        .encode()))
    result = CliRunner().invoke(cli, ["prices", "check", str(price_map)])
    assert result.exit_code == 1
    assert "openai gpt-4o: input 2.5, map 9 — UNDOCUMENTED" in result.output
    (tmp_path / "prices.json").write_text(json.dumps({"models": [
        entry("gpt-4o", input="2.50", cached_input="1.25", output="10.00", max_input_tokens=128000,
              max_output_tokens=16384, differs_from_map={"input": "the map is wrong"})]}))
    shown = CliRunner().invoke(cli, ["prices", "check", str(price_map), "--json"])
    report = json.loads(shown.output)
    assert shown.exit_code == 0 and report["undocumented"] == 0
    assert {"model": "gpt-4o", "field": "input", "documented": "the map is wrong"}.items() <= \
        next(d for d in report["differences"] if d["model"] == "gpt-4o").items()


def test_an_unreadable_map_is_refused(tmp_path):
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(Exception, match="not a LiteLLM-format price map"):
        read_map(tmp_path / "bad.json")


def test_the_cli_passes_on_the_shipped_table(tmp_path, monkeypatch):
    monkeypatch.setenv("POUCH_HOME", str(tmp_path))  # no operator overrides (not even the tests' pinned prices)
    result = CliRunner().invoke(cli, ["prices", "check"])
    assert result.exit_code == 0, result.output
    assert "0 undocumented" in result.output and "documented: " in result.output
