"""Settlements that arrive together are written in one transaction on PostgreSQL (the store
thread's batches); a batch that fails is written one by one, nothing twice, nothing lost."""

import threading
from datetime import UTC, datetime, timedelta

import pytest

from pouch.domain.money import Money
from pouch.services.store_thread import StoreThread
from pouch.store import database, keys, ledger
from pouch.store.database import ReservationRow, UsageRow

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOLD = timedelta(minutes=10)


@pytest.fixture
def postgres(store_url):
    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite writes each settlement in process")
    database.open_store(store_url)
    thread = StoreThread()
    yield thread
    thread.drain(10)
    thread.call(database.database.obj.close)


def held(key, n):
    return [ledger.reserve(key.id, key.window(NOW), Money(10), NOW, owner="t", hold=HOLD) for _ in range(n)]


def usage(key, **extra):
    return {"ts": NOW, "key": key.id, "key_name": key.name, **extra}


def blocked(thread):
    """Hold the store thread until the returned event is set, so settlements queue up."""
    go = threading.Event()
    thread.later(go.wait, 10)
    return go


def test_settlements_waiting_together_are_one_transaction(postgres, monkeypatch):
    key, _ = keys.create("alice", NOW, budget=Money(10_000))
    sizes = []
    real = ledger.finish_together
    monkeypatch.setattr(ledger.finish, "together", lambda items: sizes.append(len(items)) or real(items))
    reservations = held(key, 20)
    go = blocked(postgres)
    for i, reservation in enumerate(reservations):
        postgres.later(ledger.finish, reservation.id, Money(i), usage(key), 7, retries=2)
    go.set()
    postgres.drain(10)
    assert sum(sizes) == 20 and max(sizes) > 1, sizes
    assert ReservationRow.select().count() == 0 and UsageRow.select().count() == 20
    assert ledger.window_totals(key, NOW) == (Money(sum(range(20))), Money(0))


def test_a_failing_batch_is_written_one_by_one(postgres, monkeypatch):
    key, _ = keys.create("alice", NOW, budget=Money(10_000))
    reservations = held(key, 5)
    go = blocked(postgres)
    for reservation in reservations[:4]:
        postgres.later(ledger.finish, reservation.id, Money(3), usage(key), retries=1)
    # one that cannot be written: its row names a column the table does not have
    postgres.later(ledger.finish, reservations[4].id, Money(3), usage(key, no_such_column=1), retries=1)
    go.set()
    postgres.drain(10)
    assert UsageRow.select().count() == 4, "the four good ones, once each"
    assert ReservationRow.select().count() == 1, "the bad one stays open (recovery charges it)"
    assert ledger.window_totals(key, NOW) == (Money(12), Money(10))
