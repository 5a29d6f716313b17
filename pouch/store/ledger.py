"""The money path: reserve before a request leaves, settle or release exactly once after.

Every change is one atomic conditional SQL statement inside a transaction; nothing is read,
decided in Python and written back. The budget in the admission condition is read from the
key's row in the same statement, so a budget lowered by ``pouch keys update`` binds at once.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from datetime import datetime, timedelta

import peewee as pw

from pouch.alerts import outbox
from pouch.domain.keys import Key
from pouch.domain.periods import Window
from pouch.domain.money import Money
from pouch.store.database import (
    BudgetLedgerRow, InstanceRow, KeyRow, LedgerRow, ReservationRow, TeamRow, UsageRow, database, forget_if_broken,
    naive)

from pouch.store.instances import STALE_AFTER
from pouch.store import limits as limit_store
from pouch.store.limits import Limit, RateRefusal
from pouch.store.quick import quick

ONE_CALL = 14  # the migration that made pouch_reserve as it is called (PostgreSQL)
ONE_CALL_FINISH = 13  # ... and pouch_finish
LONGEST_REQUEST = timedelta(hours=24)  # past this, even a live gateway's reservation is recovered


@dataclasses.dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    key_id: int
    amount: Money
    window_start: datetime
    remaining: Money | None  # budget left after this reservation; None: no budget
    headers: dict = dataclasses.field(default_factory=dict)  # x-ratelimit-*, when it counts against limits


@dataclasses.dataclass(frozen=True, slots=True)
class Level:
    """A budget besides the key's that a request must fit as well: the gateway's ceiling
    (``total``), the key's team, or the key's end user. ``budget`` is where the admitting
    statement reads the budget: a sub-select of the team's or the key's row (so a lowered
    budget binds at once), or a fixed amount (the gateway's option)."""

    scope: str  # "total", "team:3", "user:5:alice"
    who: str  # what a refusal names: "team 'platform'"
    period: str
    window: Window
    budget: Money | tuple[str, int] | None  # Money, ("team" or "user", row id), or None: no budget

    def budget_sql(self) -> tuple[str, tuple]:
        if isinstance(self.budget, tuple):
            table, row_id = self.budget
            column = {"team": "budget_pico FROM pouch_teams", "user": "user_budget_pico FROM pouch_keys"}[table]
            return f"(SELECT {column} WHERE id = ?)", (row_id,)
        return "?", (None if self.budget is None else self.budget.pico,)


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reservation was not admitted: the refusing level's window when it was refused."""

    budget: Money
    spent: Money
    reserved: Money
    window_start: datetime
    window_end: datetime | None
    level: Level | None = None  # None: the key's own budget


class _Refused(Exception):
    """Rolls the whole reservation back: a refusal at one level leaves nothing held at another."""

    def __init__(self, refusal: Refusal):
        self.refusal = refusal


# The hot path (one reservation and one settlement per request) is a few plain statements:
# peewee's query building cost ten times the database work. Both SQLite (3.35+) and
# PostgreSQL take UPDATE/DELETE ... RETURNING; "?" becomes the driver's placeholder.
_FIND_LEDGER = "SELECT id FROM pouch_ledger WHERE key_id = ? AND window_start = ?"
_BUDGET = "(SELECT budget_pico FROM pouch_keys WHERE pouch_keys.id = pouch_ledger.key_id)"
_ADMIT = (  # finds the window's row too (its unique index): one statement for most requests
    "UPDATE pouch_ledger SET reserved_pico = reserved_pico + ? "
    f"WHERE key_id = ? AND window_start = ? AND ({_BUDGET} IS NULL OR spent_pico + reserved_pico + ? <= {_BUDGET}) "
    f"RETURNING id, spent_pico, reserved_pico, {_BUDGET}"
)
_HOLD = (
    "INSERT INTO pouch_reservations (id, key_id, ledger_id, amount_pico, created_at, deadline, owner, "
    "provider, model, endpoint, mock) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_HOLD_LEVELS = _HOLD.replace("mock)", "mock, scopes, slots)").replace("?)", "?, ?, ?)")
_RELEASE = "DELETE FROM pouch_reservations WHERE id = ? RETURNING ledger_id, amount_pico, scopes, slots"
_FIND_LEVEL = "SELECT id FROM pouch_budget_ledger WHERE scope = ? AND window_start = ?"
_ADMIT_LEVEL = (
    "UPDATE pouch_budget_ledger SET reserved_pico = reserved_pico + ? "
    "WHERE scope = ? AND window_start = ? AND ({budget} IS NULL OR spent_pico + reserved_pico + ? <= {budget}) "
    "RETURNING id, spent_pico, reserved_pico, {budget}"
)
_SETTLE_LEVEL = "UPDATE pouch_budget_ledger SET reserved_pico = reserved_pico - ?, spent_pico = spent_pico + ? WHERE id = ?"
_ALERT_AT = "(SELECT alert_at FROM pouch_keys WHERE pouch_keys.id = pouch_ledger.key_id)"
_SETTLE = (  # returns what the alerts need to know whether this settlement crossed a threshold
    "UPDATE pouch_ledger SET reserved_pico = reserved_pico - ?, spent_pico = spent_pico + ? WHERE id = ? "
    f"RETURNING spent_pico, {_BUDGET}, {_ALERT_AT}"
)


def _run(sql: str, params: tuple):
    param = database.obj.param
    return database.execute_sql(sql if param == "?" else sql.replace("?", param), params)


def _stamp(instant: datetime | None):
    """A timestamp as peewee stores it, so raw statements and models agree to the microsecond."""
    return LedgerRow.window_start.db_value(instant)


def _reservation_id() -> str:
    """32 hex digits, the microsecond first: ids in the order they were made, so the indexes
    they go into (the open reservations, the usage rows' unique reservation_id) grow at one end
    instead of touching a random page of an ever larger index per request."""
    return f"{time.time_ns() // 1000:014x}{secrets.token_hex(9)}"


def _ledger_id(key_id: int, window: Window) -> int:
    found = _run(_FIND_LEDGER, (key_id, _stamp(window.start))).fetchone()
    if found:
        return found[0]
    LedgerRow.insert(key=key_id, window_start=window.start, window_end=window.end).on_conflict_ignore().execute()
    return _run(_FIND_LEDGER, (key_id, _stamp(window.start))).fetchone()[0]


@quick
def reserve(
    key_id: int,
    window: Window,
    amount: Money,
    now: datetime,
    *,
    owner: str,
    hold: timedelta,
    provider: str | None = None,
    model: str | None = None,
    endpoint: str | None = None,
    levels: tuple[Level, ...] = (),
    limits: tuple[Limit, ...] = (),
    tokens: int = 0,
    mock: bool = False,
) -> Reservation | Refusal | RateRefusal:
    """Admit ``amount`` against the key's budget window ``window`` and every other level's
    (``levels``: the gateway's, the team's, the end user's) only if it fits them all, in one
    transaction: refused at one, held at none.

    ``hold`` bounds how long the reservation may stay open before recovery settles it
    (see ``recover``). A key without a budget is always admitted (and still metered).

    ``limits`` (the key's, its team's, its end user's rates and requests in flight) are taken
    first, in the same transaction (``pouch.store.limits``), counting ``tokens`` against tokens/min.
    ``mock``: pouch answers the request itself (nothing goes upstream), so recovery releases it.

    Rows are locked in one order, the limits' (team, key, end user), the levels' (total, team,
    end user) and then the key's, and ``finish`` settles them in that order too: on PostgreSQL
    two requests can never each hold a row the other waits for.
    """
    if amount.pico < 0:
        raise ValueError("a reservation cannot be negative")
    reservation_id = _reservation_id()
    if getattr(database.obj, "pouch_schema", 0) >= ONE_CALL and not isinstance(database.obj, pw.SqliteDatabase):
        return _reserve_in_one_call(reservation_id, key_id, window, amount, now, owner, hold, provider, model,
                                    endpoint, levels, limits, tokens, mock)
    try:
        with database.atomic():
            headers = limit_store.take(_run, limits, limit_store.clock(), tokens, reservation_id) if limits else {}
            held = [_admit_level(level, amount) for level in levels]
            admit = (amount.pico, key_id, _stamp(window.start), amount.pico)
            admitted = _run(_ADMIT, admit).fetchone()
            if admitted is None:  # refused, or the window's first request: its row does not exist yet
                ledger_id = _ledger_id(key_id, window)
                admitted = _run(_ADMIT, admit).fetchone()
                if admitted is None:
                    row = LedgerRow.get_by_id(ledger_id)
                    budget = KeyRow.select(KeyRow.budget_pico).where(KeyRow.id == key_id).scalar()
                    raise _Refused(Refusal(Money(budget or 0), Money(row.spent_pico), Money(row.reserved_pico),
                                           row.window_start, row.window_end))
            ledger_id, spent, reserved, budget = admitted
            values = (reservation_id, key_id, ledger_id, amount.pico, _stamp(now), _stamp(now + hold), owner,
                      provider, model, endpoint, mock)
            if held or limits:
                _run(_HOLD_LEVELS, (*values, ",".join(str(level_id) for level_id, _ in held) or None,
                                    "\n".join(limit.scope for limit in limits) or None))
            else:
                _run(_HOLD, values)
    except (_Refused, limit_store.Refused) as refused:
        return refused.refusal
    lefts = [left for _, left in held if left is not None]
    if budget is not None:
        lefts.append(budget - spent - reserved)
    return Reservation(reservation_id, key_id, amount, window.start, Money(min(lefts)) if lefts else None, headers)


def _reserve_in_one_call(reservation_id, key_id, window, amount, now, owner, hold, provider, model, endpoint,
                         levels, limits, tokens, mock) -> Reservation | Refusal | RateRefusal:
    """``reserve`` on PostgreSQL: the same steps in one round trip, ``pouch_reserve``
    (pouch/store/reserve.sql); what it answers read back into the same results."""
    clock = limit_store.clock()
    params = (
        reservation_id, key_id, _stamp(window.start), _stamp(window.end), amount.pico, _stamp(now),
        _stamp(now + hold), owner, provider, model, endpoint,
        json.dumps([_level_json(level) for level in levels]),
        json.dumps([{"scope": limit.scope, "rpm": limit.rpm, "tpm": limit.tpm, "max_concurrent": limit.max_concurrent}
                    for limit in limits]),
        tokens, clock, mock)
    for attempt in range(DEADLOCK_TRIES):
        try:
            found = _run(_RESERVE, params).fetchone()[0]
            break
        except pw.DatabaseError as e:
            # A batch of settlements (several keys' rows) may lock in another order than a
            # reservation does; PostgreSQL then rolls one back. A reservation rolled back holds
            # nothing: it is simply tried again.
            driver_error = getattr(e, "orig", None) or e.__context__  # psycopg2's error, which peewee wraps
            if getattr(driver_error, "pgcode", None) != "40P01" or attempt == DEADLOCK_TRIES - 1 \
                    or database.obj.in_transaction():
                raise
            forget_if_broken(e)
    refused = found.get("refused")
    if refused is not None and "rate" in refused:  # what the refusal says is read as the minute stands
        return limit_store.refusal(_run, limits[refused["rate"]], clock, refused["why"], tokens)
    if refused is not None:
        level = None if refused["level"] is None else levels[refused["level"]]
        shown = level.window if level else window
        return Refusal(Money(refused["budget"] or 0), Money(refused["spent"] or 0), Money(refused["reserved"] or 0),
                       shown.start, shown.end, level)
    lefts = [left for left in found["lefts"] if left is not None]
    if found["left"] is not None:
        lefts.append(found["left"])
    headers = {}
    if found["rate"] is not None:
        index, count, used = found["rate"]
        headers = limit_store.headers_after(limits[index], count, used)
    return Reservation(reservation_id, key_id, amount, window.start, Money(min(lefts)) if lefts else None, headers)


_RESERVE = "SELECT pouch_reserve(" + ", ".join(["?"] * 11) + ", ?::jsonb, ?::jsonb, ?, ?, ?)"
DEADLOCK_TRIES = 3


def _level_json(level: Level) -> dict:
    start, end = _stamp(level.window.start), _stamp(level.window.end)
    found = {"scope": level.scope, "start": start.isoformat(), "end": end.isoformat() if end else None}
    if isinstance(level.budget, tuple):
        found["from"], found["row"] = level.budget
    else:
        found["budget"] = None if level.budget is None else level.budget.pico
    return found


def _admit_level(level: Level, amount: Money) -> tuple[int, int | None]:
    """Hold ``amount`` at one level if it fits: (its ledger row's id, what is left after it, in
    pico-dollars; None: no budget), or raise ``_Refused``."""
    budget, budget_params = level.budget_sql()
    sql = _ADMIT_LEVEL.format(budget=budget)
    start = _stamp(level.window.start)
    params = (amount.pico, level.scope, start, *budget_params, amount.pico, *budget_params, *budget_params)
    admitted = _run(sql, params).fetchone()
    if admitted is None:
        _run(_INSERT_LEVEL, (level.scope, start, _stamp(level.window.end)))
        admitted = _run(sql, params).fetchone()
        if admitted is None:
            level_id, spent, reserved, window_end = _run(_LEVEL_STATE, (level.scope, start)).fetchone()
            limit = _run(f"SELECT {budget}", budget_params).fetchone()[0]
            raise _Refused(Refusal(Money(limit or 0), Money(spent), Money(reserved), level.window.start,
                                   level.window.end, level))
    level_id, spent, reserved, limit = admitted
    return level_id, None if limit is None else limit - spent - reserved


_INSERT_LEVEL = ("INSERT INTO pouch_budget_ledger (scope, window_start, window_end, spent_pico, reserved_pico) "
                 "VALUES (?, ?, ?, 0, 0) ON CONFLICT (scope, window_start) DO NOTHING")
_LEVEL_STATE = "SELECT id, spent_pico, reserved_pico, window_end FROM pouch_budget_ledger WHERE scope = ? AND window_start = ?"


@quick
def count(limits: tuple[Limit, ...], now: float) -> dict[str, str] | RateRefusal:
    """Count a request that holds no reservation (a free endpoint) against its limits'
    requests/min: the x-ratelimit-* headers, or why it is refused."""
    try:
        with database.atomic():
            return limit_store.take(_run, limits, now, 0, None, slot=False)
    except limit_store.Refused as refused:
        return refused.refusal


@quick
def finish(reservation_id: str, cost: Money, usage: dict, tokens: int | None = None) -> bool:
    """Close a reservation exactly once: charge ``cost`` (zero to release) and record usage.

    The usage row is written in the same transaction, so an admitted request has a usage
    row if and only if its reservation is closed. Returns False if it was already closed
    (a concurrent close waits on the row, then finds it gone). The row's cost is ``cost``
    unless ``usage`` names its own ``cost_pico`` (a mock records what it would have cost
    while charging nothing). ``tokens``: what the provider billed, in place of the worst case
    its tokens/min counted (None: unknown, the worst case stands).
    """
    usage = {"cost_pico": cost.pico, **usage, "reservation_id": reservation_id}
    if batches():
        return _finish_in_one_call(reservation_id, cost, usage, tokens)
    with database.atomic():
        released = _run(_RELEASE, (reservation_id,)).fetchone()
        if released is None:
            return False
        ledger_id, amount, scopes, slots = released
        limit_store.free(_run, slots, reservation_id, tokens)  # first: the order reserve locked them in
        for level_id in scopes.split(",") if scopes else ():  # in the order reserve locked them
            _run(_SETTLE_LEVEL, (amount, cost.pico, int(level_id)))
        spent, budget, alert_at = _run(_SETTLE, (amount, cost.pico, ledger_id)).fetchone()
        _insert_usage(usage)
        # Decided here, in the transaction that moved the spend: each threshold is crossed by one
        # settlement, whichever gateway wrote it, and its event is stored with it or not at all.
        outbox.settled(ledger_id, spent - cost.pico, spent, budget, alert_at, usage, reservation_id)
    return True


def _finish_in_one_call(reservation_id: str, cost: Money, usage: dict, tokens: int | None) -> bool:
    """``finish`` on PostgreSQL: ``pouch_finish`` (pouch/store/finish.sql) and the alerts its
    answer calls for, in one transaction: three round trips instead of one per statement."""
    with database.atomic():
        return _call_finish(reservation_id, cost, usage, tokens)


def _call_finish(reservation_id: str, cost: Money, usage: dict, tokens: int | None) -> bool:
    row = {UsageRow._meta.fields[name].column_name: _json_value(UsageRow._meta.fields[name].db_value(value))
           for name, value in usage.items()}
    done = _run(_FINISH, (reservation_id, cost.pico, json.dumps(row), tokens)).fetchone()[0]
    if not done["done"]:
        return False
    spent = done["spent"]
    outbox.settled(done["ledger"], spent - cost.pico, spent, done["budget"], done["alert_at"], usage, reservation_id)
    return True


def finish_together(settlements: list[tuple]) -> list[bool]:
    """Several ``finish`` (their arguments, in order) in one transaction on PostgreSQL: the
    store thread batches settlements that arrive together, one COMMIT for them all. Any failure
    rolls them all back and raises (the caller then runs each alone, with its own retries)."""
    with database.atomic():
        return [_call_finish(reservation_id, cost, {"cost_pico": cost.pico, **usage, "reservation_id": reservation_id},
                             tokens)
                for reservation_id, cost, usage, tokens in settlements]


def batches() -> bool:
    """Whether settlements are batched: on PostgreSQL with pouch_finish (SQLite writes each in
    process, in a fraction of the time a batch would wait)."""
    return getattr(database.obj, "pouch_schema", 0) >= ONE_CALL_FINISH and not isinstance(database.obj, pw.SqliteDatabase)


finish.together, finish.batches = finish_together, batches  # for the store thread (StoreThread.later)


_FINISH = "SELECT pouch_finish(?, ?, ?::jsonb, ?)"


def _json_value(value):
    return value.isoformat() if isinstance(value, datetime) else value


_USAGE_INSERTS: dict[tuple[str, ...], tuple[str, tuple[pw.Field, ...]]] = {}  # by the fields a row names


def _insert_usage(values: dict) -> None:
    names = tuple(values)
    insert = _USAGE_INSERTS.get(names)
    if insert is None:
        fields = tuple(UsageRow._meta.fields[name] for name in names)
        columns = ", ".join(field.column_name for field in fields)
        insert = (f"INSERT INTO pouch_usage ({columns}) VALUES ({', '.join('?' * len(fields))})", fields)
        if len(_USAGE_INSERTS) < 256:  # the links write a few shapes of row; never grows without end
            _USAGE_INSERTS[names] = insert
    sql, fields = insert
    _run(sql, tuple(field.db_value(value) for field, value in zip(fields, values.values())))


@quick
def record(usage: dict, cost: Money = Money(0)) -> None:
    """Record usage that held no reservation (refused requests, observed credentials)."""
    _insert_usage({"cost_pico": cost.pico, **usage})


def recover(now: datetime, *, owner: str | None = None) -> int:
    """Close reservations whose holder can no longer close them; returns how many.

    A gateway that crashed (or was SIGKILLed) could not settle what it had admitted, and
    may have forwarded those requests, so each such reservation is charged in full, its
    worst case: spend is never silently lost. A mock request's (pouch answered it itself) is released. Reservations past their deadline are
    recovered by anyone, unless the gateway holding them is alive (it settles them itself;
    after a day they are recovered all the same); ``owner`` additionally recovers every
    reservation a previous run of that same gateway left open.
    """
    # A request may outlive its deadline (a long generation, a slow reader): while its gateway
    # is alive (a fresh heartbeat) that gateway will settle it, at its real cost, overrun
    # included; recovering it would charge the reservation and drop that settlement.
    live = InstanceRow.select(InstanceRow.name).where(InstanceRow.heartbeat_at > naive(now - STALE_AFTER))
    stale = (ReservationRow.deadline < naive(now)) & (
        ReservationRow.owner.not_in(live) | (ReservationRow.created_at < naive(now - LONGEST_REQUEST)))
    if owner is not None:
        stale |= ReservationRow.owner == owner
    closed = 0
    for row in ReservationRow.select().where(stale):
        usage = {
            "ts": now,
            "key": row.key_id,
            "key_name": row.key.name,
            "provider": row.provider,
            "model": row.model,
            "endpoint": row.endpoint,
            "outcome": "recovered",
            "reserved_pico": row.amount_pico,
            **_attribution(row.scopes),
        }
        if row.mock:  # pouch answered it itself, nothing went upstream: released, never charged
            closed += finish(row.id, Money(0), {**usage, "mock": True, "cost_pico": 0})
        else:
            closed += finish(row.id, Money(row.amount_pico), usage)
    return closed


def _attribution(scopes: str | None) -> dict:
    """The team and end user a recovered reservation was held for, from the levels it holds,
    so its usage row counts where its spend went."""
    found = {}
    ids = [int(level_id) for level_id in scopes.split(",")] if scopes else []
    for (scope,) in BudgetLedgerRow.select(BudgetLedgerRow.scope).where(BudgetLedgerRow.id.in_(ids)).tuples():
        kind, _, rest = scope.partition(":")
        if kind == "team":
            found["team"] = TeamRow.select(TeamRow.name).where(TeamRow.id == int(rest)).scalar()
        elif kind == "user":
            found["end_user"] = rest.partition(":")[2]
    return found


def window_totals(key: Key, now: datetime) -> tuple[Money, Money]:
    """(spent, reserved) in the key's current window."""
    window = key.window(now)
    row = (
        LedgerRow.select(LedgerRow.spent_pico, LedgerRow.reserved_pico)
        .where(LedgerRow.key == key.id, LedgerRow.window_start == naive(window.start))
        .first()
    )
    return (Money(row.spent_pico), Money(row.reserved_pico)) if row else (Money(0), Money(0))


def level_totals(scope: str, window: Window) -> tuple[Money, Money]:
    """(spent, reserved) of a team's, an end user's or the gateway's level ("team:3",
    "user:5:alice", "total") in its window starting ``window.start``."""
    row = (
        BudgetLedgerRow.select(BudgetLedgerRow.spent_pico, BudgetLedgerRow.reserved_pico)
        .where(BudgetLedgerRow.scope == scope, BudgetLedgerRow.window_start == naive(window.start))
        .first()
    )
    return (Money(row.spent_pico), Money(row.reserved_pico)) if row else (Money(0), Money(0))


def prune_rates(now: float) -> int:
    with database.atomic():
        return limit_store.prune(_run, now)


def open_reservations() -> int:
    return ReservationRow.select().count()

