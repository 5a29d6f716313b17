"""Usage per team, end user, tag and session (issue 15), on SQLite and PostgreSQL: the totals
agree with the rows they sum, the filters pick the rows they name, a row with several tags
counts under each, refusals are counted where the refusal log knows the group, and a CSV
export never hands a spreadsheet a formula from a client's tag, session or user id."""

import csv
import io
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from pouch.domain.money import Money
from pouch.services import usage_report
from pouch.store import keys, overview
from pouch.store import usage as usage_store
from pouch.store.database import RefusalRow, UsageRow

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
GROUPED = {"team": "team", "user": "user", "session": "session"}  # group -> the row's field


def write_usage(key, *, ts=NOW, team=None, user=None, tags=None, session=None, cost=0, mock=False,
                model="gpt-4o-mini", input_tokens=10, output_tokens=5, outcome="ok"):
    UsageRow.insert(ts=ts, key=key.id, key_name=key.name, provider="openai", model=model, endpoint="chat",
                    status=200, input_tokens=input_tokens, output_tokens=output_tokens, cost_pico=cost, mock=mock,
                    outcome=outcome, team=team, end_user=user, tags=tags, session=session).execute()


def write_refusal(key, *, ts=NOW, team=None, user=None):
    RefusalRow.insert(ts=ts, key=key.id if key else None, provider="openai", model="gpt-4o-mini", endpoint="chat",
                      status=429, reason="insufficient_quota", message="refused", team=team, end_user=user).execute()


@pytest.fixture
def traffic(any_store):
    """300 rows over two keys, two teams (and none), five end users (and none), tags drawn from
    three (none, one or several) and four sessions (and none), with real and mock cost."""
    chance = random.Random(15)
    alice, _ = keys.create("alice", NOW)
    bob, _ = keys.create("bob", NOW)
    for n in range(300):
        tags = chance.sample(["checkout", "beta", "search"], chance.randint(0, 3))
        write_usage(chance.choice([alice, bob]), ts=NOW - timedelta(hours=n),
                    team=chance.choice(["platform", "growth", None]),
                    user=chance.choice(["u1", "u2", "u3", "u4", "u5", None]),
                    tags=",".join(tags) or None, session=chance.choice(["s1", "s2", "s3", "s4", None]),
                    cost=chance.randint(0, 10**9), mock=chance.random() < 0.1,
                    input_tokens=chance.randint(0, 5000), output_tokens=chance.randint(0, 900),
                    outcome="overrun" if chance.random() < 0.05 else "ok")
    return usage_store.rows()


def expected_totals(rows, by):
    """What ``totals(by)`` must say, summed here row by row from ``rows()``."""
    sums = defaultdict(lambda: {"requests": 0, "input_tokens": 0, "output_tokens": 0, "cost": Money(0),
                                "mock": Money(0), "overruns": 0})
    for row in rows:
        groups = (row["tags"] or [None]) if by == "tag" else [row[GROUPED.get(by, by)]]
        for group in groups:
            entry = sums[group]
            entry["requests"] += 1
            entry["input_tokens"] += row["input_tokens"]
            entry["output_tokens"] += row["output_tokens"]
            entry["mock" if row["mock"] else "cost"] += Money.usd(row["cost_usd"])
            entry["overruns"] += row["outcome"] == "overrun"
    return {group: {**entry, "cost": entry["cost"].json(), "mock": entry["mock"].json()}
            for group, entry in sums.items()}


def as_sums(found, by):
    return {row[by]: {"requests": row["requests"], "input_tokens": row["input_tokens"],
                      "output_tokens": row["output_tokens"], "cost": row["cost_usd"], "mock": row["mock_usd"],
                      "overruns": row["overruns"]} for row in found}


def test_rows_carry_team_user_tags_and_session(any_store):
    alice, _ = keys.create("alice", NOW)
    write_usage(alice, team="platform", user="cust-42", tags="checkout,beta", session="run-7")
    write_usage(alice)
    tagged, plain = usage_store.rows()
    assert {field: tagged[field] for field in ("team", "user", "tags", "session")} == {
        "team": "platform", "user": "cust-42", "tags": ["checkout", "beta"], "session": "run-7"}
    assert {field: plain[field] for field in ("team", "user", "tags", "session")} == {
        "team": None, "user": None, "tags": [], "session": None}


@pytest.mark.parametrize("by", ["team", "user", "tag", "session"])
def test_totals_agree_with_the_rows(traffic, by):
    found = usage_store.totals(by)
    assert as_sums(found, by) == expected_totals(traffic, by)
    assert [row[by] for row in found][-1] is None, "rows without one group under None, listed last"
    named = [row[by] for row in found if row[by] is not None]
    assert named == sorted(named)


def test_a_row_with_several_tags_counts_under_each(any_store):
    alice, _ = keys.create("alice", NOW)
    write_usage(alice, tags="checkout,beta", cost=3)
    write_usage(alice, tags="beta", cost=5)
    write_usage(alice, tags="beta,beta", cost=7)  # named twice, counted once
    write_usage(alice, cost=11)
    found = {row["tag"]: (row["requests"], row["cost_usd"]) for row in usage_store.totals("tag")}
    assert found == {"beta": (3, Money(15).json()), "checkout": (1, Money(3).json()), None: (1, Money(11).json())}


@pytest.mark.parametrize("filters", [
    {"team": "platform"}, {"user": "u3"}, {"tag": "beta"}, {"session": "s2"},
    {"team": "growth", "tag": "checkout", "session": "s1"}, {"user": "u1", "tag": "search"},
])
def test_filters_pick_the_rows_they_name(traffic, filters):
    def matches(row):
        return all(value in row["tags"] if name == "tag" else row[GROUPED[name]] == value
                   for name, value in filters.items())

    picked = usage_store.rows(**filters)
    assert picked == [row for row in traffic if matches(row)] and picked
    for by in ("key", "team", "tag"):
        assert as_sums(usage_store.totals(by, **filters), by) == expected_totals(picked, by)


def test_a_tag_filter_is_exact(any_store):
    alice, _ = keys.create("alice", NOW)
    for tags in ("beta", "beta-2", "alphabeta", "x,beta,y", "Beta", "be%", "b_ta"):
        write_usage(alice, tags=tags)
    assert [row["tags"] for row in usage_store.rows(tag="beta")] == [["beta"], ["x", "beta", "y"]]
    assert [row["tags"] for row in usage_store.rows(tag="be%")] == [["be%"]]
    assert [row["tags"] for row in usage_store.rows(tag="b_ta")] == [["b_ta"]]


def test_refused_counted_per_team_and_user_not_per_tag_or_session(any_store):
    alice, _ = keys.create("alice", NOW)
    write_usage(alice, team="platform", user="u1", tags="beta", session="s1")
    write_refusal(alice, team="platform", user="u1")
    write_refusal(alice, team="platform", user="u2")
    write_refusal(alice, team="growth")
    write_refusal(None)
    by_team = {row["team"]: (row["requests"], row["refused"]) for row in usage_store.totals("team")}
    assert by_team == {"platform": (1, 2), "growth": (0, 1), None: (0, 1)}
    by_user = {row["user"]: (row["requests"], row["refused"]) for row in usage_store.totals("user")}
    assert by_user == {"u1": (1, 1), "u2": (0, 1), None: (0, 2)}
    assert [r["refused"] for r in usage_store.totals("user", team="platform")] == [1, 1]
    assert [r["refused"] for r in usage_store.totals("key", user="u2")] == [1]
    assert [(r["tag"], r["refused"]) for r in usage_store.totals("tag")] == [("beta", 0)]
    assert [(r["session"], r["refused"]) for r in usage_store.totals("session")] == [("s1", 0)]
    assert [(r["key"], r["refused"]) for r in usage_store.totals("key", tag="beta")] == [("alice", 0)]


def test_report_filters_refusals_by_team_and_user(any_store):
    alice, _ = keys.create("alice", NOW)
    write_refusal(alice, team="platform", user="u1")
    write_refusal(alice, team="growth", user="u2")
    assert [r["message"] for r in usage_report.report(refused=True, team="growth").rows] == ["refused"]
    assert len(usage_report.report(refused=True, user="u1").rows) == 1
    assert usage_report.report(refused=True, tag="beta").rows == [], "refusals carry no tags"


@pytest.mark.parametrize("value", ["=HYPERLINK(\"http://evil\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\r=1"])
def test_csv_never_hands_a_spreadsheet_a_formula(any_store, value):
    alice, _ = keys.create("alice", NOW)
    write_usage(alice, user=value, session=value, tags=value, team="platform", model=value)
    for by in (None, "user", "session", "tag", "model"):
        found = usage_report.report(by=by)
        cells = [cell for line in csv.reader(io.StringIO(usage_report.csv_text(found))) for cell in line]
        assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@", "\t", "\r"))], (by, cells)
    rows = list(csv.DictReader(io.StringIO(usage_report.csv_text(usage_report.report()))))
    assert rows[0]["user"] == rows[0]["session"] == "'" + value  # shown as typed, never run
    assert rows[0]["team"] == "platform" and rows[0]["cost_usd"] == "0"


def test_grouping_by_something_else_is_refused(any_store):
    with pytest.raises(ValueError, match="group by one of key, model, day, team, user, tag, session"):
        usage_store.totals("colour")


def test_top_teams_most_spent_first_without_the_teamless(any_store):
    alice, _ = keys.create("alice", NOW)
    write_usage(alice, team="growth", cost=5)
    write_usage(alice, team="platform", cost=3)
    write_usage(alice, team="platform", cost=4)
    write_usage(alice, team="research", cost=900, mock=True)  # would-be cost: not spend
    write_usage(alice, cost=10**6)
    write_usage(alice, team="growth", cost=10**6, ts=NOW - timedelta(days=40))
    assert overview.top_teams(NOW - timedelta(days=30), 10) == [("platform", 7, 2), ("growth", 5, 1),
                                                                ("research", 0, 1)]
    assert overview.top_teams(NOW - timedelta(days=30), 1) == [("platform", 7, 2)]
