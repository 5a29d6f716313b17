"""Quick store steps: reservations and settlements on the caller's thread, where that cannot block.

On SQLite a quick step runs on the event loop's own connection with a busy timeout of zero: a
store locked by another writer makes it fail at once (``Busy``), never wait; the step is then
tried again on the loop and finally handed to the store thread, which waits. PostgreSQL steps
always go to the store thread.
"""

import asyncio
import multiprocessing
import sqlite3
import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pouch.domain.money import Money
from pouch.services.store_thread import CHECKPOINT_EVERY, QUICK_PAUSES, StoreThread
from pouch.store import database, keys, ledger, quick
from pouch.store.database import ReservationRow, UsageRow

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOLD = timedelta(minutes=10)


def usage_for(key, **extra):
    return {"ts": NOW, "key": key.id, "key_name": key.name, "status": 200, **extra}


def sqlite_path() -> Path:
    return Path(database.database.obj.database)


@contextmanager
def write_lock_held():
    """Another connection (as another gateway process would) holding the store's write lock."""
    blocker = sqlite3.connect(sqlite_path(), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield blocker
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


@pytest.fixture
def thread():
    """A store thread of the test's own, its connection closed at the end."""
    store_thread = StoreThread()
    yield store_thread
    store_thread.drain()
    store_thread.call(database.database.close)


def reserve(key, amount=10):
    return ledger.reserve(key.id, key.window(NOW), Money(amount), NOW, owner="t", hold=HOLD)


class Where:
    """A quick step that reserves and notes on which thread each try ran."""

    def __init__(self):
        self.threads: list[int] = []

    @quick.quick
    def reserve(self, key, amount=10):
        self.threads.append(threading.get_ident())
        return reserve(key, amount)

    def on_other_thread(self) -> bool:
        return any(t != threading.get_ident() for t in self.threads)


def test_a_quick_step_runs_with_no_busy_timeout_and_restores_it(store):
    seen = []

    @quick.quick
    def step():
        seen.append(database.database.connection().execute("PRAGMA busy_timeout").fetchone()[0])

    quick.run_here(step)
    assert seen == [0]
    connection = database.database.connection()
    assert connection.execute("PRAGMA busy_timeout").fetchone()[0] == int(database.DEFAULT_TIMEOUT * 1000)
    assert connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0, "checkpoints are the store thread's"


def test_a_locked_store_makes_a_quick_step_fail_at_once_having_done_nothing(store):
    key, _ = keys.create("alice", NOW, budget=Money(100))
    with write_lock_held():
        with pytest.raises(quick.Busy):
            quick.run_here(ledger.reserve, key.id, key.window(NOW), Money(10), NOW, owner="t", hold=HOLD)
        with pytest.raises(quick.Busy):
            quick.run_here(ledger.record, usage_for(key))
    assert ledger.window_totals(key, NOW) == (Money(0), Money(0))
    assert ReservationRow.select().count() == 0 and UsageRow.select().count() == 0
    assert isinstance(quick.run_here(ledger.reserve, key.id, key.window(NOW), Money(10), NOW, owner="t", hold=HOLD),
                      ledger.Reservation)


def test_only_marked_steps_on_sqlite_run_on_the_callers_thread(store_url):
    db = database.open_store(store_url)
    try:
        sqlite = store_url.startswith("sqlite")
        assert quick.applies(ledger.reserve) and quick.applies(ledger.finish) and quick.applies(ledger.record) \
            if sqlite else not quick.applies(ledger.reserve)
        assert not quick.applies(ledger.recover) and not quick.applies(ledger.window_totals)
    finally:
        db.close()


def test_run_reserves_on_the_event_loop_thread_on_sqlite_and_on_the_store_thread_on_postgresql(store_url, thread):
    database.open_store(store_url)
    key, _ = keys.create("alice", NOW, budget=Money(100))
    where = Where()

    async def main():
        return await thread.run(where.reserve, key)

    assert isinstance(asyncio.run(main()), ledger.Reservation)
    assert where.on_other_thread() == store_url.startswith("postgresql")
    assert ledger.window_totals(key, NOW) == (Money(0), Money(10))


def test_run_hands_a_step_to_the_store_thread_while_the_store_stays_locked(store, thread):
    key, _ = keys.create("alice", NOW, budget=Money(100))
    where = Where()

    async def main():
        with write_lock_held():
            task = asyncio.create_task(thread.run(where.reserve, key))
            while not where.on_other_thread():  # tried on the loop, then handed over: waiting there
                await asyncio.sleep(0.005)
            assert not task.done()
        return await task

    assert isinstance(asyncio.run(main()), ledger.Reservation)
    assert len(where.threads) > 2, "tried again on the loop before handing it over"
    assert ledger.window_totals(key, NOW) == (Money(0), Money(10))
    assert ReservationRow.select().count() == 1


def test_later_settles_before_it_returns_unless_the_store_is_locked(store, thread):
    key, _ = keys.create("alice", NOW, budget=Money(100))
    first, second = reserve(key), reserve(key)

    async def main():
        thread.later(ledger.finish, first.id, Money(4), usage_for(key))
        assert thread.pending == 0 and UsageRow.select().count() == 1
        with write_lock_held():
            thread.later(ledger.finish, second.id, Money(6), usage_for(key), retries=3)
            assert thread.pending == 1 and UsageRow.select().count() == 1
            await asyncio.sleep(0.01)
        while thread.pending:  # tried again on the loop (or by the store thread, if the tries ran out)
            await asyncio.sleep(0.005)

    asyncio.run(main())
    assert UsageRow.select().count() == 2
    assert ledger.window_totals(key, NOW) == (Money(10), Money(0))


def test_drain_hands_waiting_settlements_to_the_store_thread(store, thread):
    key, _ = keys.create("alice", NOW, budget=Money(100))
    held = reserve(key)

    async def main():
        blocker = sqlite3.connect(sqlite_path(), isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        thread.later(ledger.finish, held.id, Money(7), usage_for(key), retries=3)
        assert thread.pending == 1
        # The loop is blocked in drain (as in mitmproxy's done hook): the store thread must take
        # the settlement and wait for the lock there.
        threading.Timer(0.2, lambda: (blocker.execute("ROLLBACK"), blocker.close())).start()
        thread.drain()
        assert thread.pending == 0

    asyncio.run(main())
    assert UsageRow.select().count() == 1
    assert ledger.window_totals(key, NOW) == (Money(7), Money(0))


def test_a_step_failing_for_another_reason_goes_to_the_store_thread_with_its_retries(store, thread):
    key, _ = keys.create("alice", NOW, budget=Money(100))
    tries = []

    @quick.quick
    def flaky():
        tries.append(threading.get_ident())
        if len(tries) < 3:
            raise RuntimeError("disk I/O error")
        ledger.record(usage_for(key))

    async def main():
        thread.later(flaky, retries=2)
        while thread.pending:
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert len(tries) == 3 and tries[0] == threading.get_ident() and tries[1] != tries[0]
    assert UsageRow.select().count() == 1


def test_the_write_ahead_log_is_checkpointed_although_quick_steps_never_do_it(store, thread):
    key, _ = keys.create("open", NOW)
    requests = 4 * CHECKPOINT_EVERY
    wal = Path(f"{sqlite_path()}-wal")

    async def main():
        for _ in range(requests):
            held = await thread.run(ledger.reserve, key.id, key.window(NOW), Money(10), NOW, owner="t", hold=HOLD)
            thread.later(ledger.finish, held.id, Money(3), usage_for(key, input_tokens=1000))
        thread.drain()

    asyncio.run(main())
    assert UsageRow.select().count() == requests
    # Unchecked, the log would hold every page of every commit: a few MB per hundred requests.
    pages_written = requests * 2 * 3  # at least three pages per commit
    assert wal.stat().st_size < pages_written * 4096 / 4


def _reserve_in_process(url: str, key_id: int, amounts: list[int]) -> list[int]:
    database.open_store(url)
    key = keys.get(key_id)
    admitted = [amount for amount in amounts if isinstance(reserve(key, amount), ledger.Reservation)]
    database.database.close()
    return admitted


def test_quick_reservations_on_the_loop_and_another_process_never_overspend(store, thread):
    budget = 5_000
    key, _ = keys.create("shared", NOW, budget=Money(budget))
    amounts = [37 + (i * 7919) % 200 for i in range(120)]
    ctx = multiprocessing.get_context("spawn")

    async def main():
        results = await asyncio.gather(*(thread.run(ledger.reserve, key.id, key.window(NOW), Money(amount), NOW,
                                                     owner="t", hold=HOLD) for amount in amounts))
        return [amount for amount, result in zip(amounts, results) if isinstance(result, ledger.Reservation)]

    with ctx.Pool(1) as pool:
        remote = pool.apply_async(_reserve_in_process, (database.resolve_url(None), key.id, amounts))
        local = asyncio.run(main())
        other = remote.get(timeout=120)
    total = sum(local) + sum(other)
    assert total <= budget
    assert budget - total < max(amounts), "refused while there was room"
    assert ledger.window_totals(key, NOW) == (Money(0), Money(total))
    assert ReservationRow.select().count() == len(local) + len(other)


def test_a_reservation_never_overtakes_a_settlement_waiting_for_the_store(store, thread):
    """The settlement of an overrun waits for a locked store; the next reservation, made once the
    lock is gone, is judged with that spend counted (it would have fit with the worst case)."""
    key, _ = keys.create("alice", NOW, budget=Money(100))
    first = reserve(key, 60)

    async def main():
        with write_lock_held():
            thread.later(ledger.finish, first.id, Money(90), usage_for(key), retries=3)
            assert thread.pending == 1, "waiting: the store is locked"
        return await thread.run(ledger.reserve, key.id, key.window(NOW), Money(20), NOW, owner="t", hold=HOLD)

    assert isinstance(asyncio.run(main()), ledger.Refusal), "90 spent + 20 > 100"
    assert ledger.window_totals(key, NOW) == (Money(90), Money(0))


def test_a_settlement_the_store_thread_took_keeps_later_steps_behind_it(store, thread):
    key, _ = keys.create("alice", NOW, budget=Money(100))
    first, second = reserve(key, 30), reserve(key, 30)
    order = []

    @quick.quick
    def settle(reservation, cost):
        ledger.finish(reservation.id, Money(cost), usage_for(key))
        order.append(reservation.id)

    async def main():
        blocker = sqlite3.connect(sqlite_path(), isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        thread.later(settle, first, 70, retries=3)
        await asyncio.sleep(sum(QUICK_PAUSES) + 0.05)  # its tries here ran out: the store thread waits with it
        thread.later(settle, second, 20, retries=3)  # younger: waits behind it, written here after it
        threading.Timer(0.2, lambda: (blocker.execute("ROLLBACK"), blocker.close())).start()
        return await thread.run(ledger.reserve, key.id, key.window(NOW), Money(20), NOW, owner="t", hold=HOLD)

    assert isinstance(asyncio.run(main()), ledger.Refusal), "70 + 20 spent, + 20 > 100"
    assert order == [first.id, second.id]
    assert ledger.window_totals(key, NOW) == (Money(90), Money(0))
