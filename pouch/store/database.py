"""The store's connection and tables (peewee).

The database is chosen by URL: ``sqlite:///path/pouch.db`` (the default, under ``POUCH_HOME``)
or ``postgresql://user:pass@host/db`` when several gateway processes share one budget. Tables
are created and changed only by the numbered migrations in ``pouch.store.migrations``; the
models here mirror what the latest migration leaves.

Timestamps are stored as naive UTC and come back aware (``aware()``): SQLite has no time zones
and PostgreSQL's ``timestamp`` compares naive values exactly, which the ledger's unique
(key, window) pair relies on.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import peewee as pw
from playhouse import db_url

from pouch.home import home

database = pw.DatabaseProxy()
# peewee logs every statement at DEBUG, and mitmproxy turns each log record into an event
# on its loop: ten per request. Its warnings and errors still come through.
logging.getLogger("peewee").setLevel(logging.INFO)

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",  # with WAL: durable across process crashes, fsync at checkpoints
    "foreign_keys": 1,
}
DEFAULT_TIMEOUT = 30.0  # seconds a store operation may wait for a lock (the gateway sets its own)


def default_url() -> str:
    return f"sqlite:///{(home() / 'pouch.db').absolute()}"


def resolve_url(url: str | None) -> str:
    """``--db`` / ``POUCH_DB`` / the default SQLite file; a bare path means SQLite."""
    url = url or os.environ.get("POUCH_DB") or default_url()
    if "://" not in url:
        url = f"sqlite:///{Path(url).absolute()}"
    return url


def connect(url: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> pw.Database:
    """Open the database behind ``url`` and bind the tables to it (not yet migrated).

    ``timeout``: how long an operation waits for another writer's lock before it fails
    (SQLite's busy timeout; PostgreSQL's lock timeout), so a stuck store fails closed
    instead of holding requests forever."""
    url = resolve_url(url)
    if url.startswith("sqlite"):
        path = db_url.parse(url)["database"]
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # IMMEDIATE: a transaction takes the write lock when it starts, so two processes
        # never both read and then deadlock upgrading to write (SQLITE_BUSY mid-transaction).
        pragmas = {**SQLITE_PRAGMAS, "busy_timeout": int(timeout * 1000)}  # writers queue, up to this
        db = db_url.connect(url, pragmas=pragmas, lock_type="IMMEDIATE")
    else:
        db = db_url.connect(url, options=f"-c lock_timeout={int(timeout * 1000)}")
    database.initialize(db)
    return db


def forget_if_broken(error: BaseException) -> None:
    """After a store error on this thread: a PostgreSQL connection the server dropped (a restart,
    a failover, a network cut) is forgotten, so the thread's next statement connects afresh;
    peewee would otherwise hand the dead one out for ever."""
    if not isinstance(error, (pw.OperationalError, pw.InterfaceError)):
        return
    db = database.obj
    if isinstance(db, pw.PostgresqlDatabase):
        connection = db._state.conn
        if connection is None or getattr(connection, "closed", 0):
            db._state.reset()
        else:
            try:
                connection.rollback()  # a live connection after an ordinary error: leave it usable
            except Exception:
                db._state.reset()


def naive(instant: datetime | None) -> datetime | None:
    if instant is None:
        return None
    if instant.tzinfo is not None:
        instant = instant.astimezone(UTC).replace(tzinfo=None)
    return instant


def aware(instant: datetime | str | None) -> datetime | None:
    if instant is None:
        return None
    if isinstance(instant, str):  # SQLite hands back text for computed columns
        instant = datetime.fromisoformat(instant)
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


class UTCDateTimeField(pw.DateTimeField):
    field_type = "TIMESTAMP"

    def db_value(self, value):
        return super().db_value(naive(value))

    def python_value(self, value):
        return aware(super().python_value(value))


class Table(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class TeamRow(Table):
    """A team: a budget and limits its keys share (a key's request fits its key and its team)."""

    name = pw.TextField(unique=True)
    budget_pico = pw.BigIntegerField(null=True)
    period = pw.TextField(default="none")
    rpm = pw.IntegerField(null=True)
    tpm = pw.IntegerField(null=True)
    max_concurrent = pw.IntegerField(null=True)
    models = pw.TextField(default="")
    created_at = UTCDateTimeField()
    anchor = UTCDateTimeField()
    updated_at = UTCDateTimeField()

    class Meta:
        table_name = "pouch_teams"


class KeyRow(Table):
    name = pw.TextField(unique=True)
    prefix = pw.TextField()
    secret_hash = pw.TextField(unique=True)
    budget_pico = pw.BigIntegerField(null=True)
    period = pw.TextField(default="none")
    rpm = pw.IntegerField(null=True)
    tpm = pw.IntegerField(null=True)
    max_concurrent = pw.IntegerField(null=True)
    models = pw.TextField(default="")
    expires_at = UTCDateTimeField(null=True)
    auto_renew = pw.BooleanField(default=False)
    mock = pw.BooleanField(default=False)
    revoked = pw.BooleanField(default=False)
    created_at = UTCDateTimeField()
    anchor = UTCDateTimeField()
    updated_at = UTCDateTimeField()
    alert_at = pw.TextField(null=True)  # "50,80,100": budget percents that alert (pouch.alerts)
    webhook = pw.TextField(null=True)
    team = pw.ForeignKeyField(TeamRow, column_name="team_id", null=True, backref="keys")
    user_budget_pico = pw.BigIntegerField(null=True)  # each end user's budget (pouch_budget_ledger)
    user_period = pw.TextField(default="none")
    user_rpm = pw.IntegerField(null=True)
    require_user = pw.BooleanField(default=False)

    class Meta:
        table_name = "pouch_keys"


class LedgerRow(Table):
    """Spend and open reservations of one key in one budget window."""

    key = pw.ForeignKeyField(KeyRow, column_name="key_id", backref="ledger")
    window_start = UTCDateTimeField()
    window_end = UTCDateTimeField(null=True)
    spent_pico = pw.BigIntegerField(default=0)
    reserved_pico = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "pouch_ledger"


class BudgetLedgerRow(Table):
    """Spend and open reservations of a level above or below a key in one budget window:
    ``scope`` is "total" (the gateway's ceiling), "team:<id>" or "user:<key id>:<end user>"."""

    scope = pw.TextField()
    window_start = UTCDateTimeField()
    window_end = UTCDateTimeField(null=True)
    spent_pico = pw.BigIntegerField(default=0)
    reserved_pico = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "pouch_budget_ledger"


class LimitStateRow(Table):
    """A limited scope's requests in flight (pouch.store.limits); its row is what admission locks."""

    scope = pw.TextField(primary_key=True)
    in_flight = pw.IntegerField(default=0)

    class Meta:
        table_name = "pouch_limit_state"


class RateLogRow(Table):
    """One admitted request at one limited scope: when, and its tokens (the worst case, then billed)."""

    scope = pw.TextField()
    at = pw.DoubleField()
    tokens = pw.BigIntegerField(default=0)
    reservation_id = pw.TextField(null=True)

    class Meta:
        table_name = "pouch_rate_log"


class ReservationRow(Table):
    """An admitted request's worst-case cost, held until it is settled or released."""

    id = pw.TextField(primary_key=True)
    key = pw.ForeignKeyField(KeyRow, column_name="key_id")
    ledger = pw.ForeignKeyField(LedgerRow, column_name="ledger_id")
    amount_pico = pw.BigIntegerField()
    created_at = UTCDateTimeField()
    deadline = UTCDateTimeField()
    owner = pw.TextField()
    provider = pw.TextField(null=True)
    model = pw.TextField(null=True)
    endpoint = pw.TextField(null=True)
    scopes = pw.TextField(null=True)  # the pouch_budget_ledger ids it also holds, comma-separated
    slots = pw.TextField(null=True)  # the limit scopes it holds a request in flight at, one per line
    mock = pw.BooleanField(default=False)  # pouch answers it itself: recovery releases it, never charges

    class Meta:
        table_name = "pouch_reservations"


class JSONField(pw.TextField):
    def db_value(self, value):
        return None if value is None else json.dumps(value, sort_keys=True)

    def python_value(self, value):
        return None if value is None else json.loads(value)


class UsageRow(Table):
    ts = UTCDateTimeField()
    key = pw.ForeignKeyField(KeyRow, column_name="key_id", null=True)
    key_name = pw.TextField()
    provider = pw.TextField(null=True)
    model = pw.TextField(null=True)
    endpoint = pw.TextField(null=True)
    status = pw.IntegerField(null=True)
    streamed = pw.BooleanField(default=False)
    input_tokens = pw.BigIntegerField(default=0)
    cached_tokens = pw.BigIntegerField(default=0)
    cache_write_5m_tokens = pw.BigIntegerField(default=0)
    cache_write_1h_tokens = pw.BigIntegerField(default=0)
    output_tokens = pw.BigIntegerField(default=0)
    reasoning_tokens = pw.BigIntegerField(default=0)
    cost_pico = pw.BigIntegerField(default=0)
    latency_ms = pw.IntegerField(null=True)
    ttft_ms = pw.IntegerField(null=True)
    mock = pw.BooleanField(default=False)
    observed = pw.BooleanField(default=False)
    request_id = pw.TextField(null=True)
    reservation_id = pw.TextField(null=True, unique=True)
    outcome = pw.TextField(default="ok")
    tool_calls = JSONField(null=True)  # {"web_search": 2}: paid server-side tool calls
    reserved_pico = pw.BigIntegerField(null=True)  # what was reserved: an overrun charged more
    flow_id = pw.TextField(null=True)  # the mitmproxy flow's id: the dashboard links to it in mitmweb
    team = pw.TextField(null=True)  # the key's team's name then
    end_user = pw.TextField(null=True)  # JSON "user": the key's end user (x-pouch-user, user, metadata.user_id)
    tags = pw.TextField(null=True)  # "a,b" from x-pouch-tags
    session = pw.TextField(null=True)  # x-pouch-session, or the agent's own session id

    class Meta:
        table_name = "pouch_usage"


class InstanceRow(Table):
    """A running gateway's claim on its name (reservations carry the name as their owner)."""

    name = pw.TextField(primary_key=True)
    host = pw.TextField()
    pid = pw.IntegerField()
    started_at = UTCDateTimeField()
    heartbeat_at = UTCDateTimeField()

    class Meta:
        table_name = "pouch_instances"


class RefusalRow(Table):
    """A request pouch answered with an error instead of sending it on: nothing was charged."""

    ts = UTCDateTimeField()
    key = pw.ForeignKeyField(KeyRow, column_name="key_id", null=True)  # None: no known key
    provider = pw.TextField()
    model = pw.TextField(null=True)
    endpoint = pw.TextField(null=True)
    status = pw.IntegerField()
    reason = pw.TextField()  # the error code the client got: invalid_api_key, insufficient_quota, ...
    message = pw.TextField()
    flow_id = pw.TextField(null=True)  # the mitmproxy flow's id (None: a WebSocket message's refusal, say)
    team = pw.TextField(null=True)
    end_user = pw.TextField(null=True)

    class Meta:
        table_name = "pouch_refusals"


TABLES = [TeamRow, KeyRow, LedgerRow, BudgetLedgerRow, ReservationRow, UsageRow, RefusalRow]


def open_store(url: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> pw.Database:
    """Connect and bring the schema up to date: what every entry point does first."""
    from pouch.store.migrations import migrate

    db = connect(url, timeout)
    migrate(db)
    return db
