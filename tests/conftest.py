import os

import pytest

import pouch.pricing.table
from pouch.services import prices
from pouch.store import database
from tests import pinned_prices


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own POUCH_HOME (and so its own default SQLite store), holding the
    prices the tests run at (tests/pinned_prices.py); the shipped table read without a date
    is read as on the day its prices were read."""
    home = tmp_path_factory.mktemp("pouch-home")  # beside the test's tmp_path, which stays empty
    monkeypatch.setenv("POUCH_HOME", str(home))
    monkeypatch.delenv("POUCH_DB", raising=False)
    pinned_prices.write(home)
    monkeypatch.setattr(pouch.pricing.table, "_now", lambda: pinned_prices.PINNED_AT)
    prices.price_table.cache_clear()
    yield home
    prices.price_table.cache_clear()


@pytest.fixture
def store(isolated_home):
    db = database.open_store()
    yield db
    db.close()


PG_URL = os.environ.get("POUCH_TEST_PG")  # scripts/test starts PostgreSQL and sets this
PG_TABLES = ("pouch_admin_tokens, pouch_alerts, pouch_refusals, pouch_usage, pouch_reservations, pouch_budget_ledger, "
             "pouch_ledger, pouch_keys, pouch_teams, pouch_instances, pouch_limit_state, pouch_rate_log, pouch_migrations")


def fresh_postgres(url: str) -> None:
    import psycopg2
    from playhouse.db_url import parse

    connection = psycopg2.connect(**parse(url))
    with connection, connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {PG_TABLES} CASCADE")
        cursor.execute("DROP FUNCTION IF EXISTS pouch_reserve")
        cursor.execute("DROP FUNCTION IF EXISTS pouch_finish")
    connection.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, isolated_home):
    """The store's URL, once per backend: the same code must hold on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        yield database.default_url()
        return
    if not PG_URL:
        pytest.skip("PostgreSQL not available (scripts/test starts it when installed)")
    fresh_postgres(PG_URL)
    yield PG_URL


@pytest.fixture
def any_store(store_url):
    db = database.open_store(store_url)
    yield db
    db.close()
