"""Alert detection in the store (pouch/alerts/outbox.py, called by ledger.finish): each event
is written once per threshold per key per period, in the settlement's own transaction, on
SQLite and PostgreSQL, also when several processes settle one key at once; claims lease rows
so that two gateways never deliver one at the same time."""

import json
import logging
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from pouch.alerts import events, outbox
from pouch.alerts.outbox import AlertRow
from pouch.domain.money import Money
from pouch.domain.periods import Period
from pouch.store import database, keys, ledger
from pouch.store.database import UsageRow

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOLD = timedelta(minutes=10)
LEASE = timedelta(seconds=30)
OPS = (outbox.fingerprint("https://ops.example/hook"),)  # claims of a gateway with a webhook of its own


def usage_for(key, **extra):
    return {"ts": NOW, "key": key.id, "key_name": key.name, "status": 200, **extra}


def settle(key, cost: int, *, reserve: int | None = None, at: datetime = NOW, **usage) -> str:
    held = ledger.reserve(key.id, key.window(at), Money(reserve if reserve is not None else cost), at,
                          owner="t", hold=HOLD)
    assert isinstance(held, ledger.Reservation)
    assert ledger.finish(held.id, Money(cost), usage_for(key, **usage))
    return held.id


def alerts(key=None) -> list[dict]:
    query = AlertRow.select().order_by(AlertRow.created_at, AlertRow.threshold)
    if key is not None:
        query = query.where(AlertRow.key == key.id)
    return [json.loads(row.body) for row in query]


def test_one_settlement_crossing_50_and_80_writes_both(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(1000), alert_at=(50, 80, 100))
    settle(key, 100)
    assert alerts() == []
    settle(key, 750)  # 10% -> 85%
    sent = alerts()
    assert [(a["event"], a["threshold_pct"]) for a in sent] == [("budget.threshold", 50), ("budget.threshold", 80)]
    assert {a["spent_usd"] for a in sent} == {Money(850).json()}
    assert {a["budget_usd"] for a in sent} == {Money(1000).json()}
    assert len({a["id"] for a in sent}) == 2
    assert [row.id for row in AlertRow.select()] and all(row.id == json.loads(row.body)["id"] for row in AlertRow.select())


def test_each_threshold_once_then_exhausted_once(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(1000), alert_at=(50,))
    for cost in (400, 200, 200):  # 40, 60, 80 %
        settle(key, cost)
    settle(key, 300, reserve=200, outcome="overrun", reserved_pico=200)  # 110 %
    kinds = [(a["event"], a["threshold_pct"], a["spent_usd"]) for a in alerts()]
    assert kinds == [("budget.threshold", 50, Money(600).json()), ("budget.exhausted", 100, Money(1100).json()),
                     ("spend.overrun", None, Money(1100).json())]


def test_exhausted_is_sent_without_thresholds_and_100_adds_nothing(any_store):
    plain, _ = keys.create("plain", NOW, budget=Money(1000))
    listed, _ = keys.create("listed", NOW, budget=Money(1000), alert_at=(100,))
    for key in (plain, listed):
        settle(key, 1000)
        assert [(a["event"], a["threshold_pct"]) for a in alerts(key)] == [("budget.exhausted", 100)]


def test_a_key_without_a_budget_has_no_budget_events(any_store):
    key, _ = keys.create("open", NOW, alert_at=(50,))
    settle(key, 10**12)
    assert alerts() == []


def test_a_mock_or_a_release_changes_nothing(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(1000), alert_at=(1,))
    settle(key, 0, reserve=900, cost_pico=800, mock=True)
    assert alerts() == []


@pytest.mark.parametrize("period, later", [("daily", timedelta(days=1)), ("12h", timedelta(hours=12))])
def test_a_new_period_arms_every_threshold_again(any_store, period, later):
    key, _ = keys.create("alice", NOW, budget=Money(1000), alert_at=(50,), period=Period.parse(period))
    settle(key, 600)
    settle(key, 300)
    settle(key, 600, at=NOW + later)
    sent = alerts()
    assert [a["threshold_pct"] for a in sent] == [50, 50]
    assert sent[0]["period_start"] != sent[1]["period_start"]
    assert datetime.fromisoformat(sent[1]["period_start"]) == key.window(NOW + later).start


def test_an_auto_renewal_arms_them_again(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(1000), alert_at=(50,), period=Period.parse("monthly"),
                         expires_at=NOW + timedelta(days=1), auto_renew=True)
    settle(key, 600)
    renewed = keys.renew_if_expired(key, NOW + timedelta(days=2))
    settle(renewed, 600, at=NOW + timedelta(days=2))
    assert [a["threshold_pct"] for a in alerts()] == [50, 50]


def test_an_overrun_is_sent_once_per_request(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(10**6))
    first = settle(key, 500, reserve=100, outcome="overrun", reserved_pico=100, model="gpt-4o-mini")
    settle(key, 50, reserve=100)
    settle(key, 300, reserve=200, outcome="overrun", reserved_pico=200, model="gpt-4o-mini")
    sent = alerts()
    assert [a["event"] for a in sent] == ["spend.overrun", "spend.overrun"]
    assert sent[0]["spent_usd"] == Money(500).json() and sent[1]["spent_usd"] == Money(850).json()
    assert "charged $0.0000000005 for a gpt-4o-mini request that reserved $0.0000000001" in sent[0]["message"]
    assert AlertRow.get(AlertRow.id == sent[0]["id"]).ref == first


def test_recovery_crossing_a_threshold_alerts_too(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(1000), alert_at=(50,))
    ledger.reserve(key.id, key.window(NOW), Money(700), NOW, owner="crashed", hold=HOLD)
    assert ledger.recover(NOW, owner="crashed") == 1
    assert [a["threshold_pct"] for a in alerts()] == [50]


def test_a_failure_recording_an_alert_never_undoes_the_settlement(any_store, monkeypatch, caplog):
    key, _ = keys.create("alice", NOW, budget=Money(1000), alert_at=(50, 80))
    calls = []

    def add(key_id, event, period_start, ref=""):
        calls.append(event.threshold_pct)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return original(key_id, event, period_start, ref)

    original = outbox.add
    monkeypatch.setattr(outbox, "add", add)
    with caplog.at_level(logging.ERROR):
        settle(key, 900)
    assert ledger.window_totals(key, NOW) == (Money(900), Money(0))
    assert UsageRow.select().count() == 1
    assert alerts() == [], "the alerts of that settlement roll back together, the settlement stands"
    assert "recording an alert for key alice failed (the settlement stands)" in caplog.text


# --- budget refusals and expiry ------------------------------------------------------------------


def test_a_budget_refusal_is_exhausted_once_per_period(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(1000), period=Period.parse("daily"))
    settle(key, 990)
    assert outbox.refused(key.id, NOW)
    assert not outbox.refused(key.id, NOW + timedelta(minutes=1))
    settle(key, 10)  # reaching 100% now sends nothing more this period
    [sent] = alerts()
    assert (sent["event"], sent["threshold_pct"], sent["spent_usd"]) == ("budget.exhausted", 100, Money(990).json())
    assert "was refused a request for budget" in sent["message"]
    assert outbox.refused(key.id, NOW + timedelta(days=1)), "tomorrow is a new period"


def test_spend_reaching_the_budget_first_leaves_refusals_silent(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(1000))
    settle(key, 1000)
    assert not outbox.refused(key.id, NOW)
    assert [a["event"] for a in alerts()] == ["budget.exhausted"]


def test_expiring_keys_are_warned_once_per_expiry(any_store):
    soon, _ = keys.create("soon", NOW, budget=Money(1000), expires_at=NOW + timedelta(days=3))
    keys.create("later", NOW, expires_at=NOW + timedelta(days=8))
    keys.create("renews", NOW, period=Period.parse("daily"), expires_at=NOW + timedelta(days=1), auto_renew=True)
    keys.create("gone", NOW, expires_at=NOW - timedelta(hours=1))
    revoked, _ = keys.create("revoked", NOW, expires_at=NOW + timedelta(days=1))
    keys.revoke(revoked, NOW)
    settle(soon, 250)

    assert outbox.expiring(NOW) == 1
    assert outbox.expiring(NOW + timedelta(hours=1)) == 0
    [sent] = alerts()
    assert (sent["event"], sent["key"], sent["threshold_pct"]) == ("key.expiring", "soon", None)
    assert (sent["spent_usd"], sent["budget_usd"]) == (Money(250).json(), Money(1000).json())
    assert "expires 2026-11-30 12:00 UTC (in 3 days)" in sent["message"]

    assert outbox.expiring(NOW + timedelta(days=1, hours=1)) == 1, "'later' is now within the week"
    keys.update(soon, NOW, expires_at=NOW + timedelta(days=5))
    assert outbox.expiring(NOW) == 1, "a new expiry is warned of again"


# --- claims ------------------------------------------------------------------------------------


def two_alerts(webhook=None):
    key, _ = keys.create("alice", NOW, budget=Money(1000), alert_at=(50,), webhook=webhook)
    settle(key, 1000)
    return key


def test_a_claimed_row_is_nobody_elses_until_its_lease_ends(any_store):
    two_alerts()
    later = datetime.now(UTC) + timedelta(seconds=1)
    mine = outbox.claim(later, LEASE, 10, known=OPS)
    assert [row.event for row in mine] == ["budget.threshold", "budget.exhausted"]
    assert outbox.claim(later, LEASE, 10, known=OPS) == []
    assert outbox.claim(later + LEASE - timedelta(seconds=1), LEASE, 10, known=OPS) == []

    after = later + LEASE + timedelta(seconds=1)  # this gateway died: another takes them over
    theirs = outbox.claim(after, LEASE, 10, known=OPS)
    assert [row.id for row in theirs] == [row.id for row in mine]
    assert not outbox.attempted(mine[0], after, ("http://x",), None, None, ()), "a lost lease records nothing"
    assert outbox.attempted(theirs[0], after, ("http://x",), None, None, ())
    row = AlertRow.get_by_id(mine[0].id)
    assert (row.state, row.attempts, json.loads(row.delivered_to), row.lease_until) == ("delivered", 1, ["http://x"], None)


def test_a_try_that_failed_is_due_again_at_its_retry_time_and_a_given_up_one_never(any_store):
    two_alerts()
    later = datetime.now(UTC) + timedelta(seconds=1)
    first, second = outbox.claim(later, LEASE, 10, known=OPS)
    retry_at = later + timedelta(seconds=5)
    assert outbox.attempted(first, later, ("http://a",), "http://b: HTTP 500", retry_at, OPS)
    assert outbox.attempted(second, later, (), "http://a: HTTP 500", None, OPS)
    assert outbox.claim(later + timedelta(seconds=4), LEASE, 10, known=OPS) == []
    [again] = outbox.claim(retry_at, LEASE, 10, known=OPS)
    assert (again.id, again.attempts, again.delivered_to) == (first.id, 1, ("http://a",))
    gave_up = AlertRow.get_by_id(second.id)
    assert (gave_up.state, gave_up.last_error) == ("failed", "http://a: HTTP 500")


def test_a_gateway_without_webhooks_claims_only_rows_it_can_send(any_store):
    two_alerts()
    keyed, _ = keys.create("bob", NOW, budget=Money(1000), webhook="http://127.0.0.1:9/hook")
    settle(keyed, 1000)
    later = datetime.now(UTC) + timedelta(seconds=1)
    [row] = outbox.claim(later, LEASE, 10, known=())
    assert (row.key_id, row.webhook) == (keyed.id, "http://127.0.0.1:9/hook")
    assert len(outbox.claim(later, LEASE, 10, known=OPS)) == 2


# --- concurrency -----------------------------------------------------------------------------


def _reserve_all(url, key_id, amount, count):
    database.open_store(url)
    key = keys.get(key_id)
    held = [ledger.reserve(key.id, key.window(NOW), Money(amount), NOW, owner="t", hold=HOLD) for _ in range(count)]
    database.database.close()
    return [h.id for h in held]


def _finish_all(url, key_id, reservation_ids, cost, threads):
    """Settle each reservation concurrently, each twice at once; returns how many closes won."""
    database.open_store(url)
    key = keys.get(key_id)
    with ThreadPoolExecutor(threads) as pool:
        wins = sum(pool.map(lambda rid: ledger.finish(rid, Money(cost), usage_for(key)),
                            reservation_ids + reservation_ids))
    database.database.close()
    return wins


@pytest.mark.parametrize("trial", range(2))
def test_concurrent_settlements_from_several_processes_alert_each_threshold_once(store_url, trial):
    """Forty requests of 25 against a budget of 1000, settled at once by three processes of six
    threads each: every threshold is written once, by the settlement that crossed it."""
    database.open_store(store_url)
    thresholds = tuple(range(10, 100, 10))
    key, _ = keys.create(f"burst{trial}", NOW, budget=Money(1000), alert_at=thresholds)
    ids = _reserve_all(store_url, key.id, 25, 40)
    thirds = [ids[i::3] for i in range(3)]
    with multiprocessing.get_context("spawn").Pool(2) as processes:
        remote = [processes.apply_async(_finish_all, (store_url, key.id, part, 25, 6)) for part in thirds[:2]]
        wins = _finish_all(store_url, key.id, thirds[2], 25, 6) + sum(r.get(timeout=60) for r in remote)
    database.open_store(store_url)
    assert wins == 40
    sent = alerts(key)
    assert sorted((a["event"], a["threshold_pct"]) for a in sent) == sorted(
        [("budget.threshold", pct) for pct in thresholds] + [("budget.exhausted", 100)])
    for alert in sent:  # written by the settlement that crossed it: the spend it saw is just past it
        spent = Money.usd(alert["spent_usd"]).pico
        assert alert["threshold_pct"] * 10 <= spent < alert["threshold_pct"] * 10 + 25
    assert len({a["id"] for a in sent}) == len(sent)


def test_two_gateways_claiming_at_once_share_the_rows_out(store_url):
    database.open_store(store_url)
    key, _ = keys.create("many", NOW, budget=Money(100_000), alert_at=tuple(range(1, 100)))
    settle(key, 100_000)
    later = datetime.now(UTC) + timedelta(seconds=1)

    def claim_until_none_is_left(_):
        mine = []
        for _ in range(500):  # a claimant may lose every row it chose to another: it tries again
            mine += [row.id for row in outbox.claim(later, LEASE, 7, known=OPS)]
            if not AlertRow.select().where(AlertRow.lease_until.is_null()).exists():
                return mine
        raise AssertionError("rows were left unclaimed")

    with ThreadPoolExecutor(4) as pool:
        claimed = [i for batch in pool.map(claim_until_none_is_left, range(4)) for i in batch]
    assert len(claimed) == len(set(claimed)) == 100, "each row claimed by exactly one claimant"
