"""``/metrics`` on the admin API served in this process (as ``pouch admin`` serves it): the
store's gauges with a reservation held and spend settled, and a scrape while the store fails
(the traffic counters are still served, the gauges are left out)."""

import logging
from datetime import timedelta

import peewee as pw
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pouch.admin import metrics as admin_metrics
from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.metrics.traffic import Traffic
from pouch.store import admin_tokens, ledger
from pouch.store import keys as key_store
from tests.admin_server import Api, Served


@pytest.fixture(autouse=True)
def bare(monkeypatch):
    """As ``pouch admin`` serves it: no gateway traffic (another test's gateway addon may have added its own)."""
    monkeypatch.setattr(admin_metrics, "_sources", [c for c in admin_metrics._sources if not isinstance(c, Traffic)])


def parsed(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_gauges_follow_a_reservation_and_its_settlement(store):
    token = admin_tokens.create("prometheus", "viewer", utcnow())[1]
    now = utcnow()
    alice = key_store.create("alice", now, budget=Money.usd("2"))[0]
    key_store.create("bob", now)
    served = Served()
    api = Api(served.url)
    try:
        held = ledger.reserve(alice.id, alice.window(now), Money.usd("0.25"), now, owner="test",
                              hold=timedelta(hours=1))
        during = parsed(api.get("/metrics", token).text)
        ledger.finish(held.id, Money.usd("0.1"), {"ts": now, "key": alice.id, "key_name": "alice", "provider": "openai",
                                                  "model": "gpt-4o-mini", "outcome": "ok"})
        after = parsed(api.get("/metrics", token).text)
    finally:
        api.close()
        served.stop()
    alice_, bob = (("key", "alice"),), (("key", "bob"),)
    assert during[("pouch_reservations_open", ())] == 1
    assert during[("pouch_key_reserved_usd", alice_)] == 0.25
    assert during[("pouch_key_budget_remaining_usd", alice_)] == 1.75
    assert after[("pouch_reservations_open", ())] == 0
    assert (after[("pouch_key_spent_usd", alice_)], after[("pouch_key_reserved_usd", alice_)]) == (0.1, 0)
    assert after[("pouch_key_budget_usd", alice_)] == 2
    assert after[("pouch_key_budget_remaining_usd", alice_)] == 1.9
    assert after[("pouch_key_spent_usd", bob)] == 0 and ("pouch_key_budget_usd", bob) not in after
    assert not [name for name, _ in after if name.startswith("pouch_requests")], "no traffic in a bare admin API"


def test_without_its_store_metrics_still_serve_the_traffic_counters(store, monkeypatch, caplog):
    """The counters matter most then (refused_store): a store that fails drops its gauges only."""
    traffic = Traffic()
    traffic.refused("", "openai", None, "store")
    monkeypatch.setattr(admin_metrics, "_sources", [*admin_metrics._sources, traffic])
    monkeypatch.setattr(admin_metrics, "public", True)
    key_store.create("alice", utcnow(), budget=Money.usd("1"))
    served = Served()
    api = Api(served.url)
    try:
        assert ("pouch_key_spent_usd", (("key", "alice"),)) in parsed(api.get("/metrics").text)

        def unreachable():
            raise pw.OperationalError("could not connect to server: Connection refused")

        monkeypatch.setattr(admin_metrics, "store_figures", unreachable)
        with caplog.at_level(logging.WARNING):
            answer = api.get("/metrics")
    finally:
        api.close()
        served.stop()
    assert "/metrics without the store's gauges: the store does not answer: could not connect" in caplog.text
    assert answer.status_code == 200
    found = parsed(answer.text)
    assert found[("pouch_requests_total", (("key", ""), ("model", ""), ("outcome", "refused_store"),
                                           ("provider", "openai")))] == 1
    assert not [name for name, _ in found if name.startswith(("pouch_key_", "pouch_reservations"))]
