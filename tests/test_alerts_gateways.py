"""Gateways on one store with different pouch_webhook lists (pouch/alerts/outbox.py, delivery.py):
each event is owed the webhooks of the gateway that wrote it and the key's own; a gateway sends
what it knows and leaves the rest to one that knows it. Real receivers on loopback, the store."""

import asyncio
import logging

import pytest
from mitmproxy.test import taddons

from addons.alerts import Alerts
from pouch.alerts import delivery, outbox
from pouch.alerts.outbox import AlertRow
from pouch.services.store_thread import StoreThread
from tests.alerts_receiver import Receiver
from tests.test_alerts_delivery import crossed, deliver


@pytest.fixture
def written_by():
    """``written_by(webhooks)``: events written from now on come from a gateway with these."""
    yield outbox.owe
    outbox.owe(None)


def test_a_gateway_without_the_ops_webhook_leaves_it_to_one_that_has_it(store, written_by):
    with Receiver() as ops, Receiver() as team:
        written_by((ops.url,))  # gateway A, with pouch_webhook=ops, settled the requests
        crossed("alice", webhook=team.url)  # two events, each owed ops and the key's webhook
        a, b = delivery.Settings(webhooks=(ops.url,)), delivery.Settings(webhooks=())
        deliver(b, lambda: False, looks=3)  # B looks first: the key's webhook only
        assert len(team.accepted()) == 2 and ops.accepted() == []
        assert {(row.state, row.owed) for row in AlertRow.select()} == {("pending", outbox.fingerprint(ops.url))}
        assert all("left for a gateway whose pouch_webhook has fingerprint" in row.last_error
                   for row in AlertRow.select())
        assert deliver(b, lambda: False, looks=2) == [0, 0], "B claims nothing it cannot send"
        deliver(a, lambda: len(ops.accepted()) == 2)
        assert len(team.accepted()) == 2, "the key's webhook got each event once"
        assert sorted(r.json["id"] for r in ops.accepted()) == sorted(row.id for row in AlertRow.select())
        assert {(row.state, row.owed) for row in AlertRow.select()} == {("delivered", "")}


def test_a_gateway_sends_only_what_the_event_is_owed(store, written_by):
    with Receiver() as ops, Receiver() as other:
        written_by((ops.url,))
        crossed("alice", alert_at=())  # one event, owed ops; the key has no webhook
        both = delivery.Settings(webhooks=(other.url, ops.url))
        deliver(both, lambda: AlertRow.get().state == "delivered")
        assert len(ops.accepted()) == 1 and other.accepted() == [], "other was not a webhook of its writer"


def test_events_from_before_targets_were_recorded_go_to_the_deliverers_webhooks(store):
    with Receiver() as ops:
        crossed("alice", alert_at=())  # owed is NULL: as rows written before migration 10
        assert AlertRow.get().owed is None
        deliver(delivery.Settings(webhooks=(ops.url,)), lambda: AlertRow.get().state == "delivered")
        assert len(ops.accepted()) == 1


def test_a_gateway_warns_at_start_of_alerts_owed_to_webhooks_it_does_not_have(store, written_by, caplog):
    gone = "https://hooks.example.com/services/T/B/ops-secret"
    written_by((gone,))
    crossed("alice")  # two events owed a webhook no running gateway has now

    async def start():
        courier = delivery.Courier(delivery.Settings(webhooks=("https://hooks.example.com/other",)), StoreThread())
        await courier.announce()
        await courier.close()

    with caplog.at_level(logging.INFO, logger="pouch.alerts.delivery"):
        asyncio.run(start())
    assert (f"2 undelivered alert(s) in the store are owed to webhook(s) this gateway does not have "
            f"(fingerprint {outbox.fingerprint(gone)}: 2)") in caplog.text
    assert f"(fingerprint {outbox.fingerprint('https://hooks.example.com/other')})" in caplog.text
    assert "ops-secret" not in caplog.text and "/other" not in caplog.text


def test_the_addon_records_its_webhooks_in_what_is_written_while_it_runs(store):
    alerts = Alerts()
    with taddons.context(alerts) as tctx:
        loop = tctx.master.event_loop

        def on_loop(call):
            async def run():
                call()
            loop.run_until_complete(run())

        tctx.configure(alerts, pouch_webhook=["https://ops.example/a", "https://ops.example/b"])
        crossed("before", alert_at=())  # configured, not running yet: nothing recorded
        on_loop(alerts.running)
        crossed("running", alert_at=())
        on_loop(alerts.done)
        crossed("after", alert_at=())
    owed = {row.body.split('"key": "')[1].split('"')[0]: row.owed for row in AlertRow.select()}
    fingerprints = [outbox.fingerprint(f"https://ops.example/{x}") for x in "ab"]
    assert owed == {"before": None, "running": f"{fingerprints[0]} {fingerprints[1]} key", "after": None}
