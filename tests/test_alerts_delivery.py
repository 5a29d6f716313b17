"""Delivering the outbox (pouch/alerts/delivery.py, addons/alerts.py): a real receiver on
loopback, the store thread, the Courier's looks at the outbox one by one."""

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from addons.alerts import Alerts
from pouch.alerts import delivery, outbox
from pouch.alerts.outbox import AlertRow
from pouch.domain.money import Money
from pouch.services.store_thread import StoreThread
from pouch.store import keys, ledger
from tests.alerts_receiver import Receiver

NOW = datetime.now(UTC)
SECRET = "whsec-test"


@pytest.fixture
def receiver():
    with Receiver() as receiver:
        yield receiver


def crossed(name="alice", webhook=None, alert_at=(50,)):
    """A key that crossed 50% and then its whole budget: two events in the outbox."""
    key, _ = keys.create(name, NOW, budget=Money(1000), alert_at=alert_at, webhook=webhook)
    held = ledger.reserve(key.id, key.window(NOW), Money(1000), NOW, owner="t", hold=timedelta(minutes=5))
    ledger.finish(held.id, Money(1000), {"ts": NOW, "key": key.id, "key_name": key.name})
    return key


def deliver(settings: delivery.Settings, until, looks: int = 50) -> list[int]:
    """Let a Courier look at the outbox until ``until()`` holds (at most ``looks`` times, each
    followed by its deliveries unless ``until()`` holds first); returns how many rows each look
    claimed."""

    async def drive():
        courier = delivery.Courier(settings, StoreThread())
        tried = []
        try:
            for _ in range(looks):
                tried.append(await courier.once())
                while courier.busy and not until():  # each POST ends within the timeout
                    await asyncio.sleep(0.02)
                if until():
                    break
                await asyncio.sleep(0.02)
        finally:
            await courier.close()
        return tried

    return asyncio.run(drive())


def rows() -> dict[str, AlertRow]:
    return {row.event: row for row in AlertRow.select()}


def test_each_event_goes_signed_to_the_gateways_webhooks_and_the_keys(store, receiver):
    crossed(webhook=f"{receiver.url}/key-hook")
    settings = delivery.Settings(webhooks=(f"{receiver.url}/a", f"{receiver.url}/b"), secret=SECRET)
    deliver(settings, lambda: len(receiver.received) == 6)
    stored = {row.id: row.body for row in AlertRow.select()}
    for path in ("/a", "/b", "/key-hook"):
        got = receiver.accepted(path)
        assert sorted(r.json["id"] for r in got) == sorted(stored), f"each event once at {path}"
        assert all(r.body == stored[r.json["id"]].encode() for r in got), "the body as stored, byte for byte"
        assert all(r.signed_by(SECRET) and r.headers["content-type"] == "application/json" for r in got)
    assert {row.state for row in AlertRow.select()} == {"delivered"}
    assert all(json.loads(row.delivered_to) == [outbox.fingerprint(f"{receiver.url}{path}")
                                                for path in ("/a", "/b", "/key-hook")]
               for row in AlertRow.select())
    # sent concurrently: the receiver may see them in either order
    assert sorted(r.json["event"] for r in receiver.accepted("/a")) == ["budget.exhausted", "budget.threshold"]


def test_without_a_secret_there_is_no_signature(store, receiver):
    crossed()
    deliver(delivery.Settings(webhooks=(receiver.url,)), lambda: len(receiver.accepted()) == 2)
    assert all("x-pouch-signature" not in r.headers for r in receiver.received)


def test_a_receiver_failing_a_few_times_gets_each_event_once(store, receiver):
    receiver.fail_each = 2
    crossed()
    deliver(delivery.Settings(webhooks=(receiver.url,), backoff=0.01), lambda: len(receiver.accepted()) == 2)
    accepted = receiver.accepted()
    assert len({r.json["id"] for r in accepted}) == 2 and len(receiver.received) == 6
    assert {row.attempts for row in AlertRow.select()} == {3}
    assert {row.state for row in AlertRow.select()} == {"delivered"}


def test_only_the_target_that_failed_is_tried_again(store, receiver):
    receiver.refused_path = "/first"
    crossed(webhook=f"{receiver.url}/second", alert_at=())
    settings = delivery.Settings(webhooks=(f"{receiver.url}/first",), backoff=0.01)
    deliver(settings, lambda: False, looks=1)
    assert sorted((r.path, r.status) for r in receiver.received) == [("/first", 500), ("/second", 200)]
    receiver.refused_path = None
    deliver(settings, lambda: len(receiver.accepted()) == 2)
    assert sorted((r.path, r.status) for r in receiver.received) == [("/first", 200), ("/first", 500),
                                                                     ("/second", 200)]
    row = rows()["budget.exhausted"]
    assert (row.state, row.attempts) == ("delivered", 2)


def test_after_its_tries_an_event_is_kept_failed_and_logged(store, receiver, caplog):
    receiver.refusing = True
    crossed(alert_at=())
    settings = delivery.Settings(webhooks=(receiver.url,), tries=3, backoff=0.01)
    with caplog.at_level(logging.WARNING):
        deliver(settings, lambda: rows()["budget.exhausted"].state == "failed")
    row = rows()["budget.exhausted"]
    assert (row.attempts, row.last_error) == (3, f"{receiver.url}: HTTP 500")
    assert len(receiver.received) == 3
    assert "given up after 3 tries" in caplog.text
    assert deliver(settings, lambda: False, looks=3) == [0, 0, 0], "never tried again"


def test_the_pause_between_tries_doubles_up_to_an_hour():
    settings = delivery.Settings(backoff=5)
    assert [delivery.retry_delay(settings, n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert delivery.retry_delay(settings, 30) == delivery.MAX_BACKOFF


def test_a_slow_receiver_is_a_failed_try_not_a_hang(store, receiver):
    receiver.delay = 1.0
    crossed(alert_at=())
    deliver(delivery.Settings(webhooks=(receiver.url,), timeout=0.2, backoff=60),
            lambda: rows()["budget.exhausted"].attempts == 1, looks=1)
    row = rows()["budget.exhausted"]
    assert (row.state, row.last_error) == ("pending", f"{receiver.url}: no answer within 0.2 s")
    assert row.due_at > datetime.now(UTC) + timedelta(seconds=50)


def test_a_slack_url_gets_text_through_the_resolve_seam(store, receiver):
    crossed(webhook="http://hooks.slack.com/services/T000/B000/XXXX", alert_at=())
    settings = delivery.Settings(secret=SECRET, resolve=delivery.parse_resolve(f"hooks.slack.com=127.0.0.1:{receiver.port}"))
    deliver(settings, lambda: len(receiver.accepted()) == 1)
    [got] = receiver.accepted()
    assert got.path == "/services/T000/B000/XXXX" and got.headers["host"] == "hooks.slack.com"
    assert got.json == {"text": json.loads(rows()["budget.exhausted"].body)["message"]}
    assert got.signed_by(SECRET)


def test_an_event_with_nowhere_to_go_is_given_up_at_once(store, receiver, caplog):
    crossed(webhook=f"{receiver.url}/k", alert_at=())
    keys.update(keys.get("alice"), NOW, webhook=None)  # removed after the event was written
    later = datetime.now(UTC) + timedelta(seconds=1)
    [claimed] = outbox.claim(later, timedelta(seconds=30), 10, known=(outbox.fingerprint("https://ops.example"),))

    async def one():
        courier = delivery.Courier(delivery.Settings(), StoreThread())
        await courier.deliver(claimed)
        await courier.close()

    with caplog.at_level(logging.ERROR):
        asyncio.run(one())
    row = rows()["budget.exhausted"]
    assert row.state == "failed" and "no webhook to send it to" in row.last_error
    assert receiver.received == []


@pytest.mark.parametrize("option, value, message", [
    ("pouch_webhook", ["ftp://example.com"], "bad webhook"),
    ("pouch_webhook_tries", 0, "pouch_webhook_tries must be at least 1"),
    ("pouch_webhook_timeout", "0", "must be more than 0 seconds"),
    ("pouch_alert_interval", "soon", "pouch_alert_interval must be a number of seconds"),
])
def test_bad_options_are_refused(option, value, message):
    alerts = Alerts()
    with taddons.context(alerts) as tctx:
        with pytest.raises(exceptions.OptionsError, match=message):
            tctx.configure(alerts, **{option: value})


def test_options_make_the_settings():
    alerts = Alerts()
    with taddons.context(alerts) as tctx:
        tctx.configure(alerts, pouch_webhook=["https://example.com/a", " "], pouch_webhook_secret="s",
                       pouch_webhook_timeout="3", pouch_webhook_tries=4, pouch_webhook_backoff="0.5",
                       pouch_alert_interval="0.25")
    assert alerts.settings == delivery.Settings(webhooks=("https://example.com/a",), secret="s", timeout=3.0,
                                                tries=4, backoff=0.5, interval=0.25)
    assert alerts.settings.lease == timedelta(seconds=11)
