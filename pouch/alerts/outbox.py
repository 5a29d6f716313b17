"""The outbox: alert events in the store, written where they are detected, delivered later.

Detection is one ``INSERT ... ON CONFLICT DO NOTHING`` on the unique (key, event, period start,
threshold, ref) in the transaction that decides it: the settlement that crossed a threshold
(``settled``, called by ``ledger.finish``), a budget refusal (``refused``), the expiry check
(``expiring``). However many gateways share the store, an event is written once, and once
written it is delivered even if the gateway that wrote it dies the next instant.

Gateways deliver by claiming due rows with a lease (``claim``: a conditional UPDATE, so two never
send one row at once) and recording each try (``attempted``: only while the lease is theirs).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from datetime import datetime, timedelta

import peewee as pw

from pouch.alerts import events
from pouch.domain.money import Money
from pouch.domain.periods import Window
from pouch.store import keys as key_store
from pouch.store.database import KeyRow, LedgerRow, Table, UTCDateTimeField, database, naive

log = logging.getLogger(__name__)

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


class AlertRow(Table):
    """One event, its body as first written (every target and every try get the same), and how
    its delivery goes."""

    id = pw.TextField(primary_key=True)  # the body's "id": receivers de-duplicate on it
    key = pw.ForeignKeyField(KeyRow, column_name="key_id")
    event = pw.TextField()
    period_start = UTCDateTimeField()  # key.expiring: the expiry it warns of
    threshold = pw.IntegerField(default=0)
    ref = pw.TextField(default="")  # spend.overrun: the reservation
    body = pw.TextField()
    created_at = UTCDateTimeField()
    state = pw.TextField(default=PENDING)
    due_at = UTCDateTimeField()
    attempts = pw.IntegerField(default=0)
    lease_until = UTCDateTimeField(null=True)
    delivered_to = pw.TextField(default="[]")  # JSON list of the target URLs that have it
    delivered_at = UTCDateTimeField(null=True)
    last_error = pw.TextField(null=True)

    class Meta:
        table_name = "pouch_alerts"


def _run(sql: str, params: tuple):
    param = database.obj.param
    return database.execute_sql(sql if param == "?" else sql.replace("?", param), params)


_stamp = AlertRow.created_at.db_value
_instant = AlertRow.created_at.python_value
_INSERT = (
    "INSERT INTO pouch_alerts (id, key_id, event, period_start, threshold, ref, body, created_at, due_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id"
)


def add(key_id: int, event: events.Event, period_start: datetime, ref: str = "") -> bool:
    """Write ``event`` unless this key already has it for this period (and threshold, and
    ref); True if it was written."""
    now = _stamp(event.ts)
    params = (event.id, key_id, event.event, _stamp(period_start), event.threshold_pct or 0, ref, event.json(),
              now, now)
    return _run(_INSERT, params).fetchone() is not None


@functools.lru_cache(maxsize=256)
def _percents(alert_at: str | None) -> tuple[int, ...]:
    return tuple(int(p) for p in (alert_at or "").split(",") if p)


def settled(ledger_id: int, before: int, after: int, budget: int | None, alert_at: str | None, usage: dict,
            reservation_id: str) -> None:
    """Inside ``ledger.finish``'s transaction, after it moved the window's spend from ``before``
    to ``after``: the events that settlement caused. Costs a few comparisons when it caused
    none; a failure here is logged and rolled back alone, never the settlement."""
    overran = usage.get("outcome") == "overrun"
    percents = events.crossed(before, after, budget, _percents(alert_at))
    whole = events.exhausted(before, after, budget)
    if not (percents or whole or overran):
        return
    try:
        with database.atomic():  # a savepoint inside the settlement's transaction
            key_id, start, end = _run("SELECT key_id, window_start, window_end FROM pouch_ledger WHERE id = ?",
                                      (ledger_id,)).fetchone()
            window = Window(_instant(start), _instant(end))
            name = usage.get("key_name") or KeyRow.get_by_id(key_id).name
            spent, limit = Money(after), None if budget is None else Money(budget)
            for pct in percents:
                add(key_id, events.threshold(name, pct, spent, limit, window), window.start)
            if whole:
                add(key_id, events.exhausted_by_spend(name, spent, limit, window), window.start)
            if overran:
                reserved = usage.get("reserved_pico")
                event = events.overrun(name, Money(after - before), None if reserved is None else Money(reserved),
                                       usage.get("model"), spent, limit, window)
                add(key_id, event, window.start, ref=reservation_id)
    except Exception:
        log.exception("pouch: recording an alert for key %s failed (the settlement stands)", usage.get("key_name"))


def _window_totals(key_id: int, window: Window) -> tuple[Money, Money]:
    row = _run("SELECT spent_pico, reserved_pico FROM pouch_ledger WHERE key_id = ? AND window_start = ?",
               (key_id, _stamp(window.start))).fetchone()
    return (Money(row[0]), Money(row[1])) if row else (Money(0), Money(0))


def _has(key_id: int, event: str, period_start: datetime, threshold: int = 0) -> bool:
    return _run("SELECT 1 FROM pouch_alerts WHERE key_id = ? AND event = ? AND period_start = ? AND threshold = ? "
                "AND ref = ''", (key_id, event, _stamp(period_start), threshold)).fetchone() is not None


def refused(key_id: int, now: datetime) -> bool:
    """A request of the key was refused for budget: ``budget.exhausted`` for its current
    window, unless it has been sent this period (spend reached the budget, or an earlier
    refusal). True if this wrote it."""
    key = key_store.get(key_id)
    if key.budget is None:
        return False
    window = key.window(now)
    if _has(key.id, events.EXHAUSTED, window.start, 100):  # the usual case: no write at all
        return False
    spent, reserved = _window_totals(key.id, window)
    return add(key.id, events.exhausted_by_refusal(key.name, spent, reserved, key.budget, window), window.start)


def expiring(now: datetime) -> int:
    """``key.expiring`` for every live key without auto-renewal that expires within
    ``EXPIRY_NOTICE`` and has not been warned of that expiry; returns how many were written."""
    warned = AlertRow.select(AlertRow.id).where(
        AlertRow.key == KeyRow.id, AlertRow.event == events.EXPIRING, AlertRow.period_start == KeyRow.expires_at)
    soon = KeyRow.select().where(
        KeyRow.expires_at > naive(now), KeyRow.expires_at <= naive(now + events.EXPIRY_NOTICE),
        KeyRow.revoked == False, KeyRow.auto_renew == False, ~pw.fn.EXISTS(warned))  # noqa: E712
    written = 0
    for row in soon:
        key = key_store.to_key(row)
        window = key.window(now)
        spent, _ = _window_totals(key.id, window)
        written += add(key.id, events.expiring(key.name, key.expires_at, now, spent, key.budget, window),
                       key.expires_at)
    return written


@dataclasses.dataclass(frozen=True, slots=True)
class Claimed:
    """A row this gateway may deliver until ``lease`` (its lease_until as stored)."""

    id: str
    key_id: int
    event: str
    body: str
    attempts: int
    delivered_to: tuple[str, ...]
    webhook: str | None  # the key's own target, as it is now
    lease: object


def claim(now: datetime, lease_for: timedelta, limit: int, *, only_keys_with_webhook: bool) -> list[Claimed]:
    """Lease up to ``limit`` due rows to this gateway. Rows another gateway holds (an unexpired
    lease) are skipped; of two gateways claiming one row at once, the conditional UPDATE lets
    one win. ``only_keys_with_webhook``: this gateway has no webhook of its own, so it takes
    only rows it has somewhere to send (another gateway may have)."""
    webhook = "AND EXISTS (SELECT 1 FROM pouch_keys WHERE pouch_keys.id = key_id AND webhook IS NOT NULL) " \
        if only_keys_with_webhook else ""
    free = "state = 'pending' AND due_at <= ? AND (lease_until IS NULL OR lease_until < ?) "
    due = [row[0] for row in _run(
        f"SELECT id FROM pouch_alerts WHERE {free}{webhook}ORDER BY due_at, created_at, threshold LIMIT ?",
        (_stamp(now), _stamp(now), limit))]
    if not due:
        return []  # the usual poll: a read, no write lock taken
    lease = _stamp(now + lease_for)
    marks = ", ".join("?" * len(due))
    with database.atomic():
        won = _run(f"UPDATE pouch_alerts SET lease_until = ? WHERE id IN ({marks}) AND {free}"
                   "RETURNING id, key_id, event, body, attempts, delivered_to, created_at, threshold",
                   (lease, *due, _stamp(now), _stamp(now))).fetchall()
        hooks = dict(KeyRow.select(KeyRow.id, KeyRow.webhook).where(KeyRow.id.in_([r[1] for r in won])).tuples())
    won.sort(key=lambda r: (str(r[6]), r[7]))
    return [Claimed(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), hooks.get(r[1]), lease) for r in won]


def attempted(claimed: Claimed, now: datetime, delivered_to: tuple[str, ...], error: str | None,
              retry_at: datetime | None) -> bool:
    """Record a try: delivered (``error`` None), to be tried again at ``retry_at``, or given up
    (neither). Only while this gateway's lease holds: False if it expired and another took it."""
    state = DELIVERED if error is None else PENDING if retry_at is not None else FAILED
    updated = _run(
        "UPDATE pouch_alerts SET attempts = attempts + 1, delivered_to = ?, state = ?, due_at = ?, "
        "lease_until = NULL, last_error = ?, delivered_at = ? WHERE id = ? AND lease_until = ?",
        (json.dumps(list(delivered_to)), state, _stamp(retry_at or now), error,
         _stamp(now) if error is None else None, claimed.id, claimed.lease))
    return updated.rowcount == 1
