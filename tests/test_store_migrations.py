"""Migrations on a store that is in use: what was open before one still settles after it."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from pouch.domain.keys import Key
from pouch.domain.money import Money
from pouch.store import database, ledger, migrations
from pouch.store.database import ReservationRow, UsageRow

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOLD = timedelta(minutes=10)


def test_every_migration_applies_once_and_is_recorded(store_url):
    db = database.connect(store_url)
    try:
        assert migrations.migrate(db) == [number for number, _, _ in migrations.MIGRATIONS]
        assert migrations.migrate(db) == []
    finally:
        db.close()


def test_reservations_open_across_migration_5_settle_after_it(store_url, monkeypatch):
    db = database.connect(store_url)
    try:
        monkeypatch.setattr(migrations, "MIGRATIONS", [m for m in migrations.MIGRATIONS if m[0] < 5])
        migrations.migrate(db)
        # the key as the schema before migration 5 holds it (the model has columns added since)
        db.execute_sql(
            "INSERT INTO pouch_keys (name, prefix, secret_hash, budget_pico, created_at, anchor, updated_at) "
            f"VALUES ('alice', 'pouch-abc', 'hash', 100, {db.param}, {db.param}, {db.param})",
            (database.naive(NOW),) * 3)
        key = Key(id=1, name="alice", prefix="pouch-abc", secret_hash="hash", created_at=NOW, anchor=NOW,
                  budget=Money(100))
        # two reservations as a gateway of that time held them
        p = db.param
        db.execute_sql(f"INSERT INTO pouch_ledger (key_id, window_start, spent_pico, reserved_pico) "
                       f"VALUES (1, {p}, 0, 30)", (database.naive(key.window(NOW).start),))
        for reservation_id, amount in (("r1", 10), ("r2", 20)):
            db.execute_sql(
                "INSERT INTO pouch_reservations (id, key_id, ledger_id, amount_pico, created_at, deadline, owner, "
                f"model) VALUES ({p}, 1, 1, {p}, {p}, {p}, 'gw', 'm')",
                (reservation_id, amount, database.naive(NOW), database.naive(NOW + HOLD)))
        held = [SimpleNamespace(id="r1"), SimpleNamespace(id="r2")]
        monkeypatch.undo()

        assert migrations.migrate(db) == [number for number, _, _ in migrations.MIGRATIONS if number >= 5]
        assert ReservationRow.select().count() == 2
        assert {row.model for row in ReservationRow.select()} == {"m"}
        assert ledger.finish(held[0].id, Money(4), {"ts": NOW, "key": key.id, "key_name": key.name})
        assert ledger.recover(NOW, owner="gw") == 1  # the other one, charged in full
        assert ledger.window_totals(key, NOW) == (Money(24), Money(0))
        assert UsageRow.select().count() == 2
        later = ledger.reserve(key.id, key.window(NOW), Money(76), NOW, owner="gw", hold=HOLD)
        assert isinstance(later, ledger.Reservation)
        assert not ledger.finish(held[0].id, Money(4), {"ts": NOW, "key": key.id, "key_name": key.name})
    finally:
        db.close()


def test_on_sqlite_open_reservations_are_one_b_tree(store):
    schema = store.execute_sql(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'pouch_reservations'").fetchall()
    assert len(schema) == 1, "no index beside the table"
    assert schema[0][0].rstrip().endswith("WITHOUT ROWID")
