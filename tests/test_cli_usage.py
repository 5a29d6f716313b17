"""`pouch usage` as an operator reads it: refused requests listed and counted, mock cost apart."""

import csv
import io
import json
from datetime import timedelta

import pytest
from click.testing import CliRunner

from pouch.cli.main import cli
from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.store import keys, ledger, refusals


def pouch(*args, ok=True):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def as_json(*args):
    return json.loads(pouch(*args, "--json").stdout)


@pytest.fixture
def recorded(store):
    """alice: one real request ($0.000003) and one mock ($0.5), refused twice (once two days
    ago); bob: refused once; and a request with an unknown key."""
    now = utcnow()
    alice, _ = keys.create("alice", now)
    bob, _ = keys.create("bob", now)
    base = {"provider": "openai", "endpoint": "chat", "status": 200, "input_tokens": 12, "output_tokens": 3}
    ledger.record({**base, "ts": now, "key": alice.id, "key_name": "alice", "model": "gpt-4o-mini"}, Money.usd("0.000003"))
    ledger.record({**base, "ts": now, "key": alice.id, "key_name": "alice", "model": "gpt-4o", "mock": True,
                   "outcome": "mock"}, Money.usd("0.5"))

    def refused(key, reason, status, ago=timedelta(0), model="gpt-4o-mini"):
        return {"ts": now - ago, "key": key.id if key else None, "provider": "openai", "model": model,
                "endpoint": "chat", "status": status, "reason": reason, "message": f"{reason} for {key and key.name}"}

    refusals.record([
        refused(alice, "insufficient_quota", 429, ago=timedelta(days=2)),
        refused(alice, "rate_limit_exceeded", 429),
        refused(bob, "model_not_allowed", 403, model="gpt-4o"),
        refused(None, "invalid_api_key", 401, model=None),
    ])
    return now


def test_refused_rows_as_json(recorded):
    rows = as_json("usage", "--refused")
    assert [(r["key"], r["reason"], r["status"]) for r in rows] == [
        ("alice", "insufficient_quota", 429), ("alice", "rate_limit_exceeded", 429),
        ("bob", "model_not_allowed", 403), (None, "invalid_api_key", 401)]
    assert list(rows[0]) == ["id", "ts", "key", "provider", "model", "endpoint", "status", "reason", "message"]
    assert rows[2]["model"] == "gpt-4o" and rows[3]["model"] is None
    assert "cost_usd" not in rows[0], "a refusal costs nothing and says so by having no cost"


def test_refused_rows_filter_by_key_and_since(recorded):
    assert [r["reason"] for r in as_json("usage", "--refused", "--key", "alice")] == [
        "insufficient_quota", "rate_limit_exceeded"]
    assert [r["reason"] for r in as_json("usage", "--refused", "--key", "alice", "--since", "24h")] == [
        "rate_limit_exceeded"]
    assert len(as_json("usage", "--refused", "--since", "1d")) == 3


def test_refused_rows_as_csv_and_table(recorded):
    text = pouch("usage", "--refused", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["reason"] for r in rows] == ["insufficient_quota", "rate_limit_exceeded", "model_not_allowed",
                                           "invalid_api_key"]
    assert rows[3]["key"] == ""
    table = pouch("usage", "--refused").stdout.splitlines()
    assert table[0].split() == ["id", "ts", "key", "provider", "model", "endpoint", "status", "reason", "message"]
    assert "model_not_allowed for bob" in table[3]


def test_by_key_counts_refusals_and_keeps_mock_cost_apart(recorded):
    by_key = {row["key"]: row for row in as_json("usage", "--by", "key")}
    assert list(by_key) == ["alice", "bob", None]
    alice = by_key["alice"]
    assert (alice["requests"], alice["cost_usd"], alice["mock_usd"], alice["refused"]) == (2, "0.000003", "0.5", 2)
    assert (by_key["bob"]["requests"], by_key["bob"]["cost_usd"], by_key["bob"]["refused"]) == (0, "0", 1)
    assert by_key[None]["refused"] == 1
    assert as_json("usage", "--by", "key", "--since", "24h")[0]["refused"] == 1


def test_by_model_and_day(recorded):
    by_model = {row["model"]: row for row in as_json("usage", "--by", "model")}
    assert {m: (r["cost_usd"], r["mock_usd"], r["refused"]) for m, r in by_model.items()} == {
        "gpt-4o": ("0", "0.5", 1), "gpt-4o-mini": ("0.000003", "0", 2), "": ("0", "0", 1)}
    days = as_json("usage", "--by", "day")
    assert sum(d["refused"] for d in days) == 4 and len(days) == 2
    assert days[-1]["day"] == recorded.date().isoformat() and days[-1]["cost_usd"] == "0.000003"


def test_by_table_has_the_new_columns(recorded):
    header = pouch("usage", "--by", "key").stdout.splitlines()[0].split()
    assert header[-4:] == ["cost_usd", "mock_usd", "overruns", "refused"]


def test_refused_and_by_together_is_a_usage_error(recorded):
    result = pouch("usage", "--refused", "--by", "key", ok=False)
    assert result.exit_code == 2 and "--by already counts them" in result.output
