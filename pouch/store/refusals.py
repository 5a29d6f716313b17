"""Refused requests: what pouch answered with an error instead of sending on (never charged).

Written in batches by the gateway (``pouch.services.refusal_log``), read back by ``pouch
usage --refused`` and counted per key / model / day next to the usage totals. A refusal's key
is the key's current name (a renamed key keeps its refusals); an unknown key has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import peewee as pw

from pouch.store.database import KeyRow, RefusalRow, database, naive

FIELDS = ("ts", "key", "provider", "model", "endpoint", "status", "reason", "message", "flow_id", "team", "end_user")
BATCH = 90  # rows per INSERT: 990 parameters, within every SQLite's limit (999)
# One multi-row statement per batch, built by hand: peewee's insert_many spent four times
# the database's own time building the query, in the store thread, under the GIL.
_INSERT = ("INSERT INTO pouch_refusals (ts, key_id, provider, model, endpoint, status, reason, message, flow_id, "
           "team, end_user) VALUES ")
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def record(refusals: Sequence[dict]) -> None:
    """Insert refusal rows (``FIELDS``; ``key`` is the key's id or None; ``flow_id``, ``team``
    and ``end_user`` may be left out) in one transaction."""
    stamp = RefusalRow.ts.db_value
    with database.atomic():
        for start in range(0, len(refusals), BATCH):
            batch = refusals[start:start + BATCH]
            params = [value for r in batch for value in (
                stamp(r["ts"]), r.get("key"), r["provider"], r.get("model"), r.get("endpoint"), r["status"],
                r["reason"], r["message"], r.get("flow_id"), r.get("team"), r.get("end_user"))]
            sql = _INSERT + ", ".join([_ROW] * len(batch))
            database.execute_sql(sql.replace("?", database.obj.param), params)


def _select(*columns, key_name: str | None, since: datetime | None, until: datetime | None = None,
            team: str | None = None, user: str | None = None):
    query = RefusalRow.select(*columns).join(KeyRow, pw.JOIN.LEFT_OUTER, on=(RefusalRow.key == KeyRow.id))
    if key_name:
        query = query.where(KeyRow.name == key_name)
    if team:
        query = query.where(RefusalRow.team == team)
    if user:
        query = query.where(RefusalRow.end_user == user)
    if since:
        query = query.where(RefusalRow.ts >= naive(since))
    if until:
        query = query.where(RefusalRow.ts < naive(until))
    return query


COLUMNS = [RefusalRow.id, RefusalRow.ts, KeyRow.name.alias("key"), RefusalRow.provider, RefusalRow.model,
           RefusalRow.endpoint, RefusalRow.status, RefusalRow.reason, RefusalRow.message]


def rows(key_name: str | None = None, since: datetime | None = None, until: datetime | None = None, *,
         team: str | None = None, user: str | None = None) -> list[dict]:
    """Refusals, oldest first, in the JSON field names of ``pouch usage --refused --json``."""
    query = (_select(*COLUMNS, key_name=key_name, since=since, until=until, team=team, user=user)
             .order_by(RefusalRow.ts, RefusalRow.id))
    return [row_json(row) for row in query.dicts()]


def row_json(row: dict) -> dict:
    """A refusal selected as ``COLUMNS`` (``.dicts()``), as JSON."""
    return {**row, "ts": RefusalRow.ts.python_value(row["ts"]).isoformat()}


def counts(by: str, key_name: str | None = None, since: datetime | None = None,
           until: datetime | None = None, *, team: str | None = None,
           user: str | None = None) -> dict[str | None, int]:
    """Refusals per key name (None: no known key), model ("" when none was read), UTC day,
    team or end user (None: none), grouped as ``pouch.store.usage.totals`` groups usage."""
    group = {
        "key": KeyRow.name,
        "model": pw.fn.COALESCE(RefusalRow.model, ""),
        "day": pw.fn.SUBSTR(pw.Cast(RefusalRow.ts, "TEXT"), 1, 10),
        "team": RefusalRow.team,
        "user": RefusalRow.end_user,
    }[by]
    query = _select(group.alias("group"), pw.fn.COUNT(RefusalRow.id).alias("refused"), key_name=key_name,
                    since=since, until=until, team=team, user=user).group_by(group).dicts()
    return {(str(r["group"])[:10] if by == "day" else r["group"]): r["refused"] for r in query}
