"""Refusals in the store, and the usage totals beside them (refused counts, mock cost apart),
on SQLite and PostgreSQL."""

from datetime import UTC, datetime, timedelta

from pouch.domain.money import Money
from pouch.store import keys, ledger, refusals
from pouch.store import usage as usage_store
from pouch.store.database import RefusalRow

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def refusal(key=None, *, ts=NOW, model="gpt-4o-mini", reason="insufficient_quota", status=429, **extra):
    return {"ts": ts, "key": key.id if key else None, "provider": "openai", "model": model,
            "endpoint": "chat", "status": status, "reason": reason, "message": f"refused: {reason}", **extra}


def usage(key, *, ts=NOW, model="gpt-4o-mini", cost=0, mock=False, **extra):
    return {"ts": ts, "key": key.id, "key_name": key.name, "provider": "openai", "model": model,
            "endpoint": "chat", "status": 200, "input_tokens": 10, "output_tokens": 5, "mock": mock, **extra}, Money(cost)


def test_recorded_refusals_read_back_oldest_first_with_the_keys_name(any_store):
    alice, _ = keys.create("alice", NOW)
    refusals.record([
        refusal(alice, ts=NOW + timedelta(seconds=2), reason="rate_limit_exceeded"),
        refusal(None, ts=NOW, model=None, reason="invalid_api_key", status=401),
        refusal(alice, ts=NOW + timedelta(seconds=1)),
    ])
    assert refusals.rows() == [
        {"id": 2, "ts": NOW.isoformat(), "key": None, "provider": "openai", "model": None, "endpoint": "chat",
         "status": 401, "reason": "invalid_api_key", "message": "refused: invalid_api_key"},
        {"id": 3, "ts": (NOW + timedelta(seconds=1)).isoformat(), "key": "alice", "provider": "openai",
         "model": "gpt-4o-mini", "endpoint": "chat", "status": 429, "reason": "insufficient_quota",
         "message": "refused: insufficient_quota"},
        {"id": 1, "ts": (NOW + timedelta(seconds=2)).isoformat(), "key": "alice", "provider": "openai",
         "model": "gpt-4o-mini", "endpoint": "chat", "status": 429, "reason": "rate_limit_exceeded",
         "message": "refused: rate_limit_exceeded"},
    ]


def test_rows_filter_by_key_name_and_since(any_store):
    alice, _ = keys.create("alice", NOW)
    bob, _ = keys.create("bob", NOW)
    refusals.record([refusal(alice, ts=NOW - timedelta(days=2)), refusal(alice), refusal(bob), refusal(None)])
    assert [r["id"] for r in refusals.rows("alice")] == [1, 2]
    assert [r["id"] for r in refusals.rows(since=NOW - timedelta(hours=1))] == [2, 3, 4]
    assert [r["id"] for r in refusals.rows("alice", NOW - timedelta(hours=1))] == [2]
    assert refusals.rows("nobody") == []


def test_a_renamed_key_keeps_its_refusals(any_store):
    alice, _ = keys.create("alice", NOW)
    refusals.record([refusal(alice)])
    keys.update(alice, NOW, name="alicia")
    assert [r["key"] for r in refusals.rows()] == ["alicia"]


def test_many_refusals_in_one_call(any_store):
    refusals.record([refusal(None, reason="invalid_api_key") for _ in range(3 * refusals.BATCH + 7)])
    assert RefusalRow.select().count() == 3 * refusals.BATCH + 7


def test_counts_per_key_model_and_day(any_store):
    alice, _ = keys.create("alice", NOW)
    refusals.record([refusal(alice), refusal(alice, model="gpt-4o", ts=NOW + timedelta(days=1)),
                     refusal(None, model=None), refusal(None)])
    assert refusals.counts("key") == {"alice": 2, None: 2}
    assert refusals.counts("model") == {"gpt-4o-mini": 2, "gpt-4o": 1, "": 1}
    assert refusals.counts("day") == {"2026-11-27": 3, "2026-11-28": 1}
    assert refusals.counts("key", "alice", NOW + timedelta(hours=1)) == {"alice": 1}


def test_totals_keep_mock_cost_apart_and_count_refusals(any_store):
    alice, _ = keys.create("alice", NOW)
    bob, _ = keys.create("bob", NOW)
    carol, _ = keys.create("carol", NOW)
    ledger.record(*usage(alice, cost=1_000))
    ledger.record(*usage(alice, cost=300, mock=True))
    ledger.record(*usage(bob, cost=70_000, mock=True, model="gpt-4o"))
    refusals.record([refusal(alice), refusal(carol), refusal(None, model=None)])

    by_key = {row["key"]: row for row in usage_store.totals("key")}
    assert list(by_key) == ["alice", "bob", "carol", None], "ordered by name, no key last"
    assert (by_key["alice"]["requests"], by_key["alice"]["cost_usd"], by_key["alice"]["mock_usd"],
            by_key["alice"]["refused"]) == (2, Money(1_000).json(), Money(300).json(), 1)
    assert (by_key["bob"]["cost_usd"], by_key["bob"]["mock_usd"], by_key["bob"]["refused"]) == (
        "0", Money(70_000).json(), 0), "a mock request is no spend"
    assert by_key["carol"] == {"key": "carol", "requests": 0, **dict.fromkeys(usage_store.TOKEN_COLUMNS, 0),
                               "cost_usd": "0", "mock_usd": "0", "overruns": 0, "refused": 1}
    assert (by_key[None]["requests"], by_key[None]["refused"]) == (0, 1)

    by_model = {row["model"]: row for row in usage_store.totals("model")}
    assert {m: (r["requests"], r["cost_usd"], r["mock_usd"], r["refused"]) for m, r in by_model.items()} == {
        "gpt-4o": (1, "0", Money(70_000).json(), 0),
        "gpt-4o-mini": (2, Money(1_000).json(), Money(300).json(), 2),
        "": (0, "0", "0", 1),
    }
    [day] = usage_store.totals("day")
    assert (day["day"], day["requests"], day["cost_usd"], day["mock_usd"], day["refused"]) == (
        "2026-11-27", 3, Money(1_000).json(), Money(70_300).json(), 3)
    [only] = usage_store.totals("key", key_name="alice")
    assert (only["key"], only["refused"]) == ("alice", 1)
