"""Prices that change on a date: the entry in effect at the request's time prices it."""

from __future__ import annotations

import datetime
import json

import pytest
from click.testing import CliRunner

from pouch.cli.main import cli
from pouch.domain.errors import InvalidInput
from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.pricing.price import cost
from pouch.pricing.price_file import parse_instant, parse_prices
from pouch.pricing.table import PriceTable

UTC = datetime.UTC
LAST_MINUTE = datetime.datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
NEW_DAY = datetime.datetime(2026, 12, 1, 0, 0, tzinfo=UTC)


def entry(**fields):
    base = {"model": "argon-test", "provider": "gemini", "input": "2", "output": "10", "cached_input": "0.10",
            "source": "https://ai.google.dev/gemini-api/docs/pricing", "as_of": "2026-11-27"}
    return base | fields


def dated_table(*extra) -> PriceTable:
    document = {"models": [entry(), entry(**{"from": "2026-12-01", "input": "4", "output": "20",
                                             "cached_input": "0.20"}), *extra]}
    return PriceTable(parse_prices(document, "test"))


def test_a_minute_before_and_at_the_change_cost_different_amounts():
    table = dated_table()
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    before = cost(table.resolve("argon-test", "gemini", LAST_MINUTE), usage)
    after = cost(table.resolve("argon-test", "gemini", NEW_DAY), usage)
    assert before == Money.usd("12") and after == Money.usd("24")  # $2 + $10, then $4 + $20
    assert table.resolve("argon-test", at=NEW_DAY - datetime.timedelta(microseconds=1)).input == Money.per_million("2")


def test_before_the_first_date_the_first_entry_applies():
    document = {"models": [entry(**{"from": "2026-06-01"}), entry(**{"from": "2027-01-01", "input": "3"})]}
    table = PriceTable(parse_prices(document, "test"))
    assert table.resolve("argon-test", at=datetime.datetime(2026, 1, 1, tzinfo=UTC)).input == Money.per_million("2")
    assert table.resolve("argon-test", at=datetime.datetime(2027, 1, 1, tzinfo=UTC)).input == Money.per_million("3")


def test_snapshots_and_prefixes_resolve_to_the_dated_family():
    table = dated_table()
    assert table.resolve("models/argon-test-latest", at=NEW_DAY).input == Money.per_million("4")
    assert [p.input for p in table.versions("argon-test")] == [Money.per_million("2"), Money.per_million("4")]


def test_the_same_model_twice_from_the_same_date_is_refused():
    with pytest.raises(InvalidInput, match="listed twice from 2026-12-01"):
        parse_prices({"models": [entry(**{"from": "2026-12-01"}), entry(**{"from": "2026-12-01"})]}, "test")
    with pytest.raises(InvalidInput, match="listed twice"):
        parse_prices({"models": [entry(), entry()]}, "test")


@pytest.mark.parametrize("text, expected", [
    ("2026-12-01", NEW_DAY),
    ("2026-11-30T23:59:00Z", LAST_MINUTE),
    ("2026-12-01T01:00:00+01:00", NEW_DAY),
    ("2026-11-30T23:59", LAST_MINUTE),
])
def test_from_is_a_date_or_an_instant(text, expected):
    assert parse_instant(text) == expected


@pytest.mark.parametrize("bad", ["", "tomorrow", 20261201, "2026-13-01"])
def test_a_bad_from_is_refused_with_the_entry(bad):
    with pytest.raises(InvalidInput, match="from"):
        parse_prices({"models": [entry(**{"from": bad})]}, "test")


def test_an_override_replaces_every_shipped_date_of_its_model(tmp_path):
    override = tmp_path / "prices.json"
    override.write_text(json.dumps({"models": [entry(model="gpt-4o", provider="openai", input="1", output="1")]}))
    document = {"models": [entry(model="gpt-4o", provider="openai"),
                           entry(model="gpt-4o", provider="openai", **{"from": "2026-12-01", "input": "9"})]}
    shipped = parse_prices(document, "shipped")
    table = PriceTable(shipped, overrides=parse_prices(json.loads(override.read_text()), "override"))
    assert table.resolve("gpt-4o", "openai", NEW_DAY).input == Money.per_million("1")
    assert len(table.versions("gpt-4o", "openai")) == 1


def test_prices_show_at_a_date(tmp_path, monkeypatch):
    (tmp_path / "prices.json").write_text(json.dumps({"models": [
        entry(), entry(**{"from": "2026-12-01", "input": "4", "output": "20"})]}))
    monkeypatch.setenv("POUCH_HOME", str(tmp_path))
    runner = CliRunner()
    before = json.loads(runner.invoke(cli, ["prices", "show", "argon-test", "--at", "2026-11-30T23:59Z", "--json"]).output)
    after = json.loads(runner.invoke(cli, ["prices", "show", "argon-test", "--at", "2026-12-01", "--json"]).output)
    assert (before["input"], after["input"]) == ("2", "4")
    assert before["other_dates"][0]["from"] == "2026-12-01T00:00:00+00:00"
    bad = runner.invoke(cli, ["prices", "show", "argon-test", "--at", "soon"])
    assert bad.exit_code != 0 and "ISO date" in bad.output


def test_settlement_prices_a_request_by_its_own_time(monkeypatch):
    """A request made before the change and settled after it pays the old price."""
    from mitmproxy.test import tflow

    import addons.usage as usage_link
    from pouch.services import chain

    monkeypatch.setattr(usage_link, "price_table", dated_table)
    flow = tflow.tflow()
    flow.request.timestamp_start = LAST_MINUTE.timestamp()
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    _, charged = usage_link.billed(usage, "argon-test", (), "gemini", None, chain.requested_at(flow))
    assert chain.requested_at(flow) == LAST_MINUTE and charged == Money.usd("12")
    flow.request.timestamp_start = NEW_DAY.timestamp()
    assert usage_link.billed(usage, "argon-test", (), "gemini", None, chain.requested_at(flow))[1] == Money.usd("24")
