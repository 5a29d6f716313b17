"""The outbox: alert events in the store, written where they are detected, delivered later.

Detection is one ``INSERT ... ON CONFLICT DO NOTHING`` on the unique (key, event, period start,
threshold, ref) in the transaction that decides it: the settlement that crossed a threshold
(``settled``, called by ``ledger.finish``), a budget refusal (``refused``), the expiry check
(``expiring``). However many gateways share the store, an event is written once, and once
written it is delivered even if the gateway that wrote it dies the next instant.

Gateways deliver by claiming due rows with a lease (``claim``: a conditional UPDATE, so two never
send one row at once) and recording each try (``attempted``: only while the lease is theirs).

Gateways on one store may have different ``pouch_webhook`` lists. So a row records the targets it
is owed when it is written (``owed``): a fingerprint of each webhook of the gateway that wrote it,
and ``key`` for the key's own webhook (as it is when sent). A gateway claims only rows owed
something it can send, sends that, and leaves the rest to a gateway that knows those webhooks;
the row is delivered once nothing is owed. The store never holds a gateway's webhook URLs (a
Slack webhook's path is its credential), only their fingerprints.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
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
KEEP = timedelta(days=7)  # a sent or given-up event is kept this long after its period ended
KEY = "key"  # in ``owed``: the key's own webhook


def fingerprint(url: str) -> str:
    """What the store keeps of a gateway's webhook: enough to tell two apart, not the URL."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


# What an event written by this process is owed: set by the alerts addon (addons/alerts.py)
# from pouch_webhook while the gateway runs. None: not recorded (NULL), and whichever gateway
# delivers the row sends it to its own webhooks and the key's, as before migration 10.
_owed_at_write: str | None = None


def owe(webhooks: tuple[str, ...] | None) -> None:
    """Events written from now on are owed these webhooks (this gateway's pouch_webhook) and the
    key's own; None: record nothing (each deliverer decides)."""
    global _owed_at_write
    _owed_at_write = None if webhooks is None else " ".join([*dict.fromkeys(map(fingerprint, webhooks)), KEY])


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
    delivered_to = pw.TextField(default="[]")  # JSON list of the fingerprints (URLs before migration 10) that have it
    delivered_at = UTCDateTimeField(null=True)
    last_error = pw.TextField(null=True)
    owed = pw.TextField(null=True)  # space-separated targets still owed (fingerprints, KEY); NULL: not recorded

    class Meta:
        table_name = "pouch_alerts"


def _run(sql: str, params: tuple):
    param = database.obj.param
    return database.execute_sql(sql if param == "?" else sql.replace("?", param), params)


_stamp = AlertRow.created_at.db_value
_instant = AlertRow.created_at.python_value
_INSERT = (
    "INSERT INTO pouch_alerts (id, key_id, event, period_start, threshold, ref, body, created_at, due_at, owed) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id"
)


def add(key_id: int, event: events.Event, period_start: datetime, ref: str = "") -> bool:
    """Write ``event`` unless this key already has it for this period (and threshold, and
    ref); True if it was written."""
    now = _stamp(event.ts)
    params = (event.id, key_id, event.event, _stamp(period_start), event.threshold_pct or 0, ref, event.json(),
              now, now, _owed_at_write)
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
    owed: tuple[str, ...] | None = None  # the targets still owed (fingerprints, KEY); None: not recorded


def claim(now: datetime, lease_for: timedelta, limit: int, *, known: tuple[str, ...]) -> list[Claimed]:
    """Lease up to ``limit`` due rows to this gateway, whose own webhooks have the fingerprints
    ``known``: rows owed the key's webhook or one of those; of rows that record nothing owed,
    every row if it has webhooks, else those whose key has one. Rows another gateway holds (an
    unexpired lease) are skipped; of two gateways claiming one row at once, the conditional
    UPDATE lets one win."""
    unrecorded = "owed IS NULL" if known else \
        "owed IS NULL AND EXISTS (SELECT 1 FROM pouch_keys WHERE pouch_keys.id = key_id AND webhook IS NOT NULL)"
    owed_one_of = tuple(f"%{target}%" for target in (KEY, *known))  # parameters: '%' is psycopg's marker
    sendable = " OR ".join([f"({unrecorded})", *["owed LIKE ?"] * len(owed_one_of)])
    free = "state = 'pending' AND due_at <= ? AND (lease_until IS NULL OR lease_until < ?) "
    due = [row[0] for row in _run(
        f"SELECT id FROM pouch_alerts WHERE {free}AND ({sendable}) ORDER BY due_at, created_at, threshold LIMIT ?",
        (_stamp(now), _stamp(now), *owed_one_of, limit))]
    if not due:
        return []  # the usual poll: a read, no write lock taken
    lease = _stamp(now + lease_for)
    marks = ", ".join("?" * len(due))
    with database.atomic():
        won = _run(f"UPDATE pouch_alerts SET lease_until = ? WHERE id IN ({marks}) AND {free}"
                   "RETURNING id, key_id, event, body, attempts, delivered_to, created_at, threshold, owed",
                   (lease, *due, _stamp(now), _stamp(now))).fetchall()
        hooks = dict(KeyRow.select(KeyRow.id, KeyRow.webhook).where(KeyRow.id.in_([r[1] for r in won])).tuples())
    won.sort(key=lambda r: (str(r[6]), r[7]))
    return [Claimed(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), hooks.get(r[1]), lease,
                    None if r[8] is None else tuple(r[8].split())) for r in won]


def attempted(claimed: Claimed, now: datetime, delivered_to: tuple[str, ...], error: str | None,
              retry_at: datetime | None, owed: tuple[str, ...]) -> bool:
    """Record a try: delivered (``error`` None: nothing is owed any more), due again at
    ``retry_at`` (for the targets still ``owed``), or given up (neither). Only while this
    gateway's lease holds: False if it expired and another took it."""
    state = DELIVERED if error is None else PENDING if retry_at is not None else FAILED
    updated = _run(
        "UPDATE pouch_alerts SET attempts = attempts + 1, delivered_to = ?, state = ?, due_at = ?, "
        "lease_until = NULL, last_error = ?, delivered_at = ?, owed = ? WHERE id = ? AND lease_until = ?",
        (json.dumps(list(delivered_to)), state, _stamp(retry_at or now), error,
         _stamp(now) if error is None else None, " ".join(owed), claimed.id, claimed.lease))
    return updated.rowcount == 1


def stranded(known: tuple[str, ...]) -> dict[str, int]:
    """Pending rows owed a webhook this gateway does not have: how many, by its fingerprint."""
    counts: dict[str, int] = {}
    for owed, count in _run("SELECT owed, COUNT(*) FROM pouch_alerts WHERE state = 'pending' AND owed IS NOT NULL "
                            "GROUP BY owed", ()):
        for target in set(owed.split()) - {KEY, *known}:
            counts[target] = counts.get(target, 0) + count
    return counts


def prune(now: datetime, batch: int = 500) -> int:
    """Delete delivered and given-up events whose period ended over ``KEEP`` ago (for
    ``key.expiring``, whose key expired that long ago); returns how many. Only those: the row of
    an event is what keeps it from being written again for its period (the unique index, and
    ``refused``'s look), so a period that has not ended keeps its rows, pending ones always."""
    cutoff = now - KEEP
    deleted, after = 0, ""
    while True:  # in batches, in id order: a long outbox is never read whole
        rows = _run("SELECT id, event, body FROM pouch_alerts WHERE state IN (?, ?) AND period_start < ? AND id > ? "
                    "AND (event = ? OR body NOT LIKE ?) ORDER BY id LIMIT ?",  # a period that never ends: kept
                    (DELIVERED, FAILED, _stamp(cutoff), after, events.EXPIRING, '%"period_end": null%',
                     batch)).fetchall()
        if not rows:
            return deleted
        after = rows[-1][0]
        ended = [id_ for id_, event, body in rows if event == events.EXPIRING or _ended_before(body, cutoff)]
        if ended:
            marks = ", ".join("?" * len(ended))
            deleted += _run(f"DELETE FROM pouch_alerts WHERE id IN ({marks}) AND state IN (?, ?)",
                            (*ended, DELIVERED, FAILED)).rowcount


def _ended_before(body: str, cutoff: datetime) -> bool:
    end = json.loads(body).get("period_end")
    return end is not None and datetime.fromisoformat(end) < cutoff
