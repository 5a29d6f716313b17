"""The money path: reserve before a request leaves, settle or release exactly once after.

Every change is one atomic conditional SQL statement inside a transaction; nothing is read,
decided in Python and written back. The budget in the admission condition is read from the
key's row in the same statement, so a budget lowered by ``pouch keys update`` binds at once.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta

import peewee as pw

from pouch.domain.keys import Key
from pouch.domain.periods import Window
from pouch.domain.money import Money
from pouch.store.database import KeyRow, LedgerRow, ReservationRow, UsageRow, database, naive


@dataclasses.dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    key_id: int
    amount: Money
    window_start: datetime
    remaining: Money | None  # budget left after this reservation; None: no budget


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reservation was not admitted: the window's state when it was refused."""

    budget: Money
    spent: Money
    reserved: Money
    window_start: datetime
    window_end: datetime | None


def _ledger_id(key_id: int, window: Window) -> int:
    LedgerRow.insert(
        key=key_id, window_start=window.start, window_end=window.end
    ).on_conflict_ignore().execute()
    return (
        LedgerRow.select(LedgerRow.id)
        .where(LedgerRow.key == key_id, LedgerRow.window_start == naive(window.start))
        .scalar()
    )


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
) -> Reservation | Refusal:
    """Admit ``amount`` against the key's budget window ``window`` only if it fits.

    ``hold`` bounds how long the reservation may stay open before recovery settles it
    (see ``recover``). A key without a budget is always admitted (and still metered).
    """
    if amount.pico < 0:
        raise ValueError("a reservation cannot be negative")
    budget = KeyRow.select(KeyRow.budget_pico).where(KeyRow.id == LedgerRow.key)
    with database.atomic():
        ledger_id = _ledger_id(key_id, window)
        admitted = (
            LedgerRow.update(reserved_pico=LedgerRow.reserved_pico + amount.pico)
            .where(
                LedgerRow.id == ledger_id,
                pw.Expression(budget, pw.OP.IS, None)
                | (LedgerRow.spent_pico + LedgerRow.reserved_pico + amount.pico <= budget),
            )
            .execute()
        )
        row = LedgerRow.get_by_id(ledger_id)
        budget_pico = KeyRow.select(KeyRow.budget_pico).where(KeyRow.id == key_id).scalar()
        if not admitted:
            return Refusal(
                budget=Money(budget_pico or 0),
                spent=Money(row.spent_pico),
                reserved=Money(row.reserved_pico),
                window_start=row.window_start,
                window_end=row.window_end,
            )
        reservation_id = uuid.uuid4().hex
        ReservationRow.insert(
            id=reservation_id,
            key=key_id,
            ledger=ledger_id,
            amount_pico=amount.pico,
            created_at=now,
            deadline=now + hold,
            owner=owner,
            provider=provider,
            model=model,
            endpoint=endpoint,
        ).execute()
    remaining = None if budget_pico is None else Money(budget_pico - row.spent_pico - row.reserved_pico)
    return Reservation(reservation_id, key_id, amount, window.start, remaining)


def finish(reservation_id: str, cost: Money, usage: dict) -> bool:
    """Close a reservation exactly once: charge ``cost`` (zero to release) and record usage.

    The usage row is written in the same transaction, so an admitted request has a usage
    row if and only if its reservation is closed. Returns False if it was already closed.
    The row's cost is ``cost`` unless ``usage`` names its own ``cost_pico`` (a mock records
    what it would have cost while charging nothing).
    """
    with database.atomic() as tx:
        row = (
            ReservationRow.select(ReservationRow.ledger, ReservationRow.amount_pico)
            .where(ReservationRow.id == reservation_id)
            .first()
        )
        if row is None:
            return False
        deleted = ReservationRow.delete().where(ReservationRow.id == reservation_id).execute()
        if deleted != 1:  # closed by a concurrent finish (PostgreSQL row lock)
            tx.rollback()
            return False
        LedgerRow.update(
            reserved_pico=LedgerRow.reserved_pico - row.amount_pico,
            spent_pico=LedgerRow.spent_pico + cost.pico,
        ).where(LedgerRow.id == row.ledger_id).execute()
        UsageRow.insert({"cost_pico": cost.pico, **usage, "reservation_id": reservation_id}).execute()
    return True


def record(usage: dict, cost: Money = Money(0)) -> None:
    """Record usage that held no reservation (refused requests, observed credentials)."""
    UsageRow.insert({"cost_pico": cost.pico, **usage}).execute()


def recover(now: datetime, *, owner: str | None = None) -> int:
    """Close reservations whose holder can no longer close them; returns how many.

    A gateway that crashed (or was SIGKILLed) could not settle what it had admitted, and
    may have forwarded those requests, so each such reservation is charged in full, its
    worst case: spend is never silently lost. Reservations past their deadline are
    recovered by anyone; ``owner`` additionally recovers every reservation a previous run
    of that same gateway left open.
    """
    stale = ReservationRow.deadline < naive(now)
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
        }
        closed += finish(row.id, Money(row.amount_pico), usage)
    return closed


def window_totals(key: Key, now: datetime) -> tuple[Money, Money]:
    """(spent, reserved) in the key's current window."""
    window = key.window(now)
    row = (
        LedgerRow.select(LedgerRow.spent_pico, LedgerRow.reserved_pico)
        .where(LedgerRow.key == key.id, LedgerRow.window_start == naive(window.start))
        .first()
    )
    return (Money(row.spent_pico), Money(row.reserved_pico)) if row else (Money(0), Money(0))


def open_reservations() -> int:
    return ReservationRow.select().count()

