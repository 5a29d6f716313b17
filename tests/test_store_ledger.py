"""The money path under concurrency: threads and processes against one SQLite budget."""

import multiprocessing
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from pouch.domain.money import Money
from pouch.domain.periods import Period
from pouch.store import database, instances, keys, ledger
from pouch.store.database import LedgerRow, ReservationRow, UsageRow

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOLD = timedelta(minutes=10)


def usage_for(key, **extra):
    return {"ts": NOW, "key": key.id, "key_name": key.name, "status": 200, **extra}


def test_reserve_admits_up_to_budget_exactly(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(100))
    first = ledger.reserve(key.id, key.window(NOW), Money(60), NOW, owner="t", hold=HOLD)
    assert isinstance(first, ledger.Reservation)
    refusal = ledger.reserve(key.id, key.window(NOW), Money(41), NOW, owner="t", hold=HOLD)
    assert isinstance(refusal, ledger.Refusal)
    assert (refusal.budget, refusal.spent, refusal.reserved) == (Money(100), Money(0), Money(60))
    assert isinstance(ledger.reserve(key.id, key.window(NOW), Money(40), NOW, owner="t", hold=HOLD), ledger.Reservation)
    assert ledger.window_totals(key, NOW) == (Money(0), Money(100))


def test_finish_settles_exactly_once_and_records_usage(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(100))
    held = ledger.reserve(key.id, key.window(NOW), Money(60), NOW, owner="t", hold=HOLD)
    assert ledger.finish(held.id, Money(25), usage_for(key, input_tokens=7))
    assert not ledger.finish(held.id, Money(25), usage_for(key))
    assert ledger.window_totals(key, NOW) == (Money(25), Money(0))
    assert UsageRow.select().count() == 1
    assert UsageRow.get().cost_pico == 25 and UsageRow.get().reservation_id == held.id


def test_release_frees_the_budget(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(100))
    held = ledger.reserve(key.id, key.window(NOW), Money(100), NOW, owner="t", hold=HOLD)
    assert isinstance(ledger.reserve(key.id, key.window(NOW), Money(1), NOW, owner="t", hold=HOLD), ledger.Refusal)
    assert ledger.finish(held.id, Money(0), usage_for(key, status=500))
    assert isinstance(ledger.reserve(key.id, key.window(NOW), Money(100), NOW, owner="t", hold=HOLD), ledger.Reservation)


def test_no_budget_is_always_admitted_and_metered(any_store):
    key, _ = keys.create("open", NOW)
    held = ledger.reserve(key.id, key.window(NOW), Money.usd("1000000"), NOW, owner="t", hold=HOLD)
    assert isinstance(held, ledger.Reservation)
    ledger.finish(held.id, Money.usd("3"), usage_for(key))
    assert ledger.window_totals(key, NOW)[0] == Money.usd("3")


def test_lowered_budget_binds_immediately(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(100))
    ledger.reserve(key.id, key.window(NOW), Money(50), NOW, owner="t", hold=HOLD)
    keys.update(key, NOW, budget=Money(60))
    assert isinstance(ledger.reserve(key.id, key.window(NOW), Money(11), NOW, owner="t", hold=HOLD), ledger.Refusal)


def test_new_period_starts_from_zero_and_old_reservation_settles_into_its_own(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(100), period=Period.parse("daily"))
    held = ledger.reserve(key.id, key.window(NOW), Money(90), NOW, owner="t", hold=HOLD)
    tomorrow = NOW + timedelta(days=1)
    assert isinstance(ledger.reserve(key.id, key.window(tomorrow), Money(100), tomorrow, owner="t", hold=HOLD), ledger.Reservation)
    ledger.finish(held.id, Money(80), usage_for(key))
    assert ledger.window_totals(key, NOW) == (Money(80), Money(0))
    assert ledger.window_totals(key, tomorrow) == (Money(0), Money(100))


def test_recover_charges_stale_reservations_in_full(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(100))
    stale = ledger.reserve(key.id, key.window(NOW), Money(30), NOW, owner="gw-a", hold=HOLD)
    mine = ledger.reserve(key.id, key.window(NOW), Money(20), NOW, owner="gw-b", hold=HOLD)
    live = ledger.reserve(key.id, key.window(NOW), Money(10), NOW, owner="gw-c", hold=HOLD)
    later = NOW + HOLD + timedelta(seconds=1)
    assert ledger.recover(later - timedelta(seconds=2), owner="gw-b") == 1  # only its own run's
    assert ledger.recover(later) == 2  # then everything past its deadline
    assert ledger.window_totals(key, NOW) == (Money(60), Money(0))
    recovered = {row.reservation_id for row in UsageRow.select().where(UsageRow.outcome == "recovered")}
    assert recovered == {stale.id, mine.id, live.id}


# --- concurrency -----------------------------------------------------------------------


def _reserve_many(url, key_id, amounts, threads):
    """Reserve each amount concurrently; returns (admitted [(id, amount)], refused amounts)."""
    database.open_store(url)
    key = keys.get(key_id)
    admitted, refused, lock = [], [], threading.Lock()

    def one(amount):
        result = ledger.reserve(key.id, key.window(NOW), Money(amount), NOW, owner="t", hold=HOLD)
        with lock:
            if isinstance(result, ledger.Reservation):
                admitted.append((result.id, amount))
            else:
                refused.append(amount)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, amounts))
    database.database.close()
    return admitted, refused


def _finish_many(url, key_id, decisions, threads):
    """Close reservations concurrently, each twice at once; returns how many closes won."""
    database.open_store(url)
    key = keys.get(key_id)

    def one(decision):
        reservation_id, cost = decision
        return ledger.finish(reservation_id, Money(cost), usage_for(key))

    with ThreadPoolExecutor(threads) as pool:
        wins = sum(pool.map(one, decisions + decisions))
    database.database.close()
    return wins


@pytest.mark.parametrize("trial", range(6))
def test_threads_and_processes_never_overspend(trial, store_url):
    rng = random.Random(trial)
    url = store_url
    database.open_store(url)
    budget = rng.randint(1_000, 50_000)
    key, _ = keys.create(f"burst{trial}", NOW, budget=Money(budget))
    batches = [[rng.randint(1, budget // 8) for _ in range(60)] for _ in range(3)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as processes:
        remote = [processes.apply_async(_reserve_many, (url, key.id, batch, 6)) for batch in batches[:2]]
        local = _reserve_many(url, key.id, batches[2], 6)
        results = [r.get(timeout=60) for r in remote] + [local]
        database.open_store(url)

        admitted = [a for result in results for a in result[0]]
        refused = [r for result in results for r in result[1]]
        total = sum(amount for _, amount in admitted)
        assert total <= budget
        assert all(total + amount > budget for amount in refused), "refused although it fit"
        assert ledger.window_totals(key, NOW) == (Money(0), Money(total))

        # Close every reservation from two processes and this one, each attempted twice.
        decisions = [(rid, rng.choice([0, amount, rng.randint(0, amount)])) for rid, amount in admitted]
        thirds = [decisions[i::3] for i in range(3)]
        remote = [processes.apply_async(_finish_many, (url, key.id, part, 6)) for part in thirds[:2]]
        wins = _finish_many(url, key.id, thirds[2], 6) + sum(r.get(timeout=60) for r in remote)
    database.open_store(url)

    assert wins == len(admitted), "each reservation closes exactly once"
    assert ReservationRow.select().count() == 0
    assert UsageRow.select().count() == len(admitted)
    spent = sum(cost for _, cost in decisions)
    assert ledger.window_totals(key, NOW) == (Money(spent), Money(0))
    assert LedgerRow.select().count() == 1


# --- edges of the money path ---------------------------------------------------------------


def test_a_negative_reservation_is_refused_and_a_zero_one_admitted(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(100))
    with pytest.raises(ValueError, match="negative"):
        ledger.reserve(key.id, key.window(NOW), Money(-1), NOW, owner="t", hold=HOLD)  # would raise the budget
    assert ledger.window_totals(key, NOW) == (Money(0), Money(0))
    held = ledger.reserve(key.id, key.window(NOW), Money(0), NOW, owner="t", hold=HOLD)
    assert isinstance(held, ledger.Reservation) and held.remaining == Money(100)


def test_remaining_counts_what_was_spent_and_what_is_reserved(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(100))
    spent = ledger.reserve(key.id, key.window(NOW), Money(60), NOW, owner="t", hold=HOLD)
    assert spent.remaining == Money(40)
    ledger.finish(spent.id, Money(25), usage_for(key))
    held = ledger.reserve(key.id, key.window(NOW), Money(10), NOW, owner="t", hold=HOLD)
    assert held.remaining == Money(100 - 25 - 10)
    assert ledger.reserve(key.id, key.window(NOW), Money(5), NOW, owner="t", hold=HOLD).remaining == Money(60)


def test_no_budget_reserves_with_no_remaining(any_store):
    key, _ = keys.create("open", NOW)
    assert ledger.reserve(key.id, key.window(NOW), Money(5), NOW, owner="t", hold=HOLD).remaining is None


def test_a_zero_budget_refuses_everything_and_says_zero(any_store):
    key, _ = keys.create("broke", NOW, budget=Money(0))
    refusal = ledger.reserve(key.id, key.window(NOW), Money(1), NOW, owner="t", hold=HOLD)
    assert isinstance(refusal, ledger.Refusal)
    assert (refusal.budget, refusal.spent, refusal.reserved) == (Money(0), Money(0), Money(0))


def test_record_writes_a_usage_row_without_touching_the_budget(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(100))
    ledger.record(usage_for(key, status=401))
    ledger.record(usage_for(key, observed=True), Money(7))
    assert sorted((row.status, row.cost_pico, row.reservation_id) for row in UsageRow.select()) == [
        (200, 7, None),
        (401, 0, None),
    ]
    assert ledger.window_totals(key, NOW) == (Money(0), Money(0))


def test_a_reservation_is_stale_only_after_its_deadline(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(100))
    ledger.reserve(key.id, key.window(NOW), Money(30), NOW, owner="gw-a", hold=HOLD)
    assert ledger.open_reservations() == 1
    assert ledger.recover(NOW + HOLD) == 0  # at the deadline the holder may still settle it
    assert ledger.open_reservations() == 1
    assert ledger.recover(NOW + HOLD + timedelta(microseconds=1)) == 1
    assert ledger.open_reservations() == 0
    assert ledger.window_totals(key, NOW) == (Money(30), Money(0))


def test_a_live_gateway_keeps_its_reservation_for_a_day_and_no_longer(any_store):
    # Past its deadline a reservation is still its live gateway's to settle at the real cost
    # (recovering it would charge it in full), but only for the longest a request may take.
    key, _ = keys.create("alice", NOW, budget=Money(100))
    ledger.reserve(key.id, key.window(NOW), Money(30), NOW, owner="gw-a", hold=HOLD)
    a_day = NOW + timedelta(hours=24)
    instances.claim("gw-a", a_day, host="other-host", pid=101)
    assert ledger.recover(a_day) == 0
    assert ledger.recover(a_day + timedelta(microseconds=1)) == 1
    assert ledger.window_totals(key, NOW) == (Money(30), Money(0))


def test_a_gateway_silent_for_the_stale_interval_no_longer_holds_its_reservations(any_store):
    key, _ = keys.create("alice", NOW, budget=Money(100))
    ledger.reserve(key.id, key.window(NOW), Money(30), NOW, owner="gw-a", hold=HOLD)
    beat = NOW + HOLD + timedelta(minutes=5)
    instances.claim("gw-a", beat, host="other-host", pid=101)
    assert ledger.recover(beat + instances.STALE_AFTER - timedelta(microseconds=1)) == 0
    assert ledger.recover(beat + instances.STALE_AFTER) == 1
