"""What an alert says (pouch/alerts/events.py) and the key fields that ask for one: pure
functions, no store, no network."""

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from pouch.alerts import events
from pouch.domain.errors import InvalidInput
from pouch.domain.keys import display_url, parse_alert_at, parse_webhook
from pouch.domain.money import Money
from pouch.domain.periods import Window

BUDGET = 1000  # pico-dollars: one percent is 10
MONTH = Window(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))


@pytest.mark.parametrize("before, after, alert_at, expected", [
    (0, 400, (50, 80, 100), ()),
    (0, 500, (50, 80, 100), (50,)),  # exactly at the threshold crosses it
    (499, 500, (50,), (50,)),
    (500, 700, (50, 80), ()),  # already past 50: not again
    (100, 850, (50, 80, 100), (50, 80)),  # one settlement, two thresholds; 100 is budget.exhausted
    (0, 2000, (1, 99, 100), (1, 99)),
    (500, 500, (50,), ()),  # nothing moved
    (0, 5000, (), ()),
])
def test_crossed(before, after, alert_at, expected):
    assert events.crossed(before, after, BUDGET, alert_at) == expected


def test_crossed_needs_a_budget():
    assert events.crossed(0, 10**12, None, (50,)) == ()
    assert events.crossed(0, 10**12, 0, (50,)) == ()


@pytest.mark.parametrize("before, after, budget, expected", [
    (999, 1000, 1000, True),
    (0, 5000, 1000, True),  # an overrun past the budget in one go
    (1000, 1200, 1000, False),  # exhausted before: not again
    (0, 999, 1000, False),
    (0, 10, None, False),
    (0, 10, 0, False),
])
def test_exhausted(before, after, budget, expected):
    assert events.exhausted(before, after, budget) is expected


def test_a_threshold_body_has_the_documented_fields_and_exact_money():
    event = events.threshold("alice", 80, Money.usd("4.01"), Money.usd("5"), MONTH)
    body = event.body()
    assert list(body) == ["id", "event", "ts", "key", "team", "threshold_pct", "spent_usd", "budget_usd",
                          "period_start", "period_end", "message"]
    assert body["event"] == "budget.threshold" and body["id"].startswith("evt_")
    assert (body["key"], body["team"], body["threshold_pct"]) == ("alice", None, 80)
    assert (body["spent_usd"], body["budget_usd"]) == ("4.01", "5")
    assert (body["period_start"], body["period_end"]) == ("2026-11-01T00:00:00+00:00", "2026-12-01T00:00:00+00:00")
    assert datetime.fromisoformat(body["ts"]).tzinfo is not None
    assert body["message"] == ("key 'alice' reached 80% of its budget: $4.01 of $5.00 spent this period, "
                               "resets 2026-12-01 00:00 UTC")
    assert json.loads(event.json()) == body


def test_messages_say_what_happened_and_what_follows():
    spent = events.exhausted_by_spend("alice", Money.usd("5.20"), Money.usd("5"), MONTH)
    assert (spent.event, spent.threshold_pct) == ("budget.exhausted", 100)
    assert spent.message == ("key 'alice' has spent its whole budget: $5.20 of $5.00; its requests are refused "
                             "until it resets 2026-12-01 00:00 UTC")
    forever = Window(MONTH.start, None)
    assert "until its budget is raised" in events.exhausted_by_spend("a", Money(1), Money(1), forever).message
    refused = events.exhausted_by_refusal("bob", Money.usd("4.99"), Money.usd("0.5"), Money.usd("5"), MONTH)
    assert refused.message == ("key 'bob' was refused a request for budget: $4.99 spent and $0.50 held by requests "
                               "in flight of $5.00 this period, resets 2026-12-01 00:00 UTC; requests that do not "
                               "fit what is left are refused")
    over = events.overrun("carol", Money.usd("0.6"), Money.usd("0.004"), "gpt-4o-mini", Money.usd("0.61"),
                          Money.usd("0.5"), MONTH).body()
    assert (over["event"], over["threshold_pct"], over["spent_usd"]) == ("spend.overrun", None, "0.61")
    assert over["message"].startswith("key 'carol' was charged $0.60 for a gpt-4o-mini request that reserved "
                                      "$0.004: the provider billed more than pouch's worst case; $0.61 of $0.50")


@pytest.mark.parametrize("left, said", [(timedelta(days=6, hours=23), "in 6 days"), (timedelta(hours=30), "in 30 hours"),
                                        (timedelta(minutes=10), "in 1 hour)")])
def test_expiring_says_when(left, said):
    now = datetime(2026, 11, 20, tzinfo=UTC)
    event = events.expiring("dave", now + left, now, Money(0), None, Window(now, None))
    assert event.event == "key.expiring" and said in event.message
    assert "does not auto-renew" in event.message and "pouch keys update dave --expires" in event.message
    assert event.body()["budget_usd"] is None


def test_slack_urls_get_only_the_message_as_text():
    body = events.threshold("alice", 50, Money.usd("2.5"), Money.usd("5"), MONTH).json()
    slack = json.loads(events.payload(body, "https://hooks.slack.com/services/T0/B0/secret"))
    assert slack == {"text": json.loads(body)["message"]}
    assert events.payload(body, "https://example.com/hook") == body.encode()
    assert events.payload(body, "https://hooks.slack.com.example.com/x") == body.encode()


def test_the_signature_is_hmac_sha256_of_the_raw_body():
    raw = b'{"id": "evt_1"}'
    expected = hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
    assert events.signature("s3cret", raw) == f"sha256={expected}"


def test_ids_are_unique_and_sort_by_time():
    ids = [events.new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert ids[0][:18] <= ids[-1][:18]


# --- the key fields ----------------------------------------------------------------------------


@pytest.mark.parametrize("given, expected", [
    ("50,80,100", (50, 80, 100)),
    (" 80 , 50,50 ", (50, 80)),
    ("", ()),
    ("none", ()),
    ([100, 25], (25, 100)),
    ([], ()),
])
def test_parse_alert_at(given, expected):
    assert parse_alert_at(given) == expected


@pytest.mark.parametrize("given", ["0", "101", "50,abc", "-5", "50.5", "50,,80", [True], [150]])
def test_bad_alert_percents_are_refused_in_one_line(given):
    with pytest.raises(InvalidInput, match=r"^bad alert percent .*: give percents of the budget from 1 to 100"):
        parse_alert_at(given)


@pytest.mark.parametrize("given, expected", [
    ("https://hooks.slack.com/services/T/B/x", "https://hooks.slack.com/services/T/B/x"),
    ("http://127.0.0.1:9000/hook", "http://127.0.0.1:9000/hook"),
    (" none ", None),
    ("", None),
])
def test_parse_webhook(given, expected):
    assert parse_webhook(given) == expected


@pytest.mark.parametrize("given", ["ftp://example.com/x", "example.com/hook", "https://", "https://a b/c",
                                   "https://example.com/" + "x" * 2100])
def test_bad_webhooks_are_refused_without_showing_their_path(given):
    with pytest.raises(InvalidInput, match=r"^bad webhook .*: give an http:// or https:// URL") as refused:
        parse_webhook(given)
    assert "x" * 30 not in str(refused.value)


def test_display_url_keeps_the_secret_path_out():
    assert display_url("https://hooks.slack.com/services/T/B/secret") == "https://hooks.slack.com/..."
    assert display_url("https://user:pw@example.com:8443/x") == "https://example.com:8443/..."
    assert display_url("http://example.com") == "http://example.com"
