"""Spend over time and recent requests, as the admin API's overview and a key's page read them.

Cost here is real spend only, as in ``pouch.store.usage.totals``: what mock requests would
have cost is never added in."""

from __future__ import annotations

from datetime import datetime

import peewee as pw

from pouch.store import refusals
from pouch.store import usage as usage_store
from pouch.store.database import KeyRow, RefusalRow, UsageRow, naive

_REAL_COST = pw.fn.SUM(pw.Case(None, [(UsageRow.mock, 0)], UsageRow.cost_pico))
_DAY = pw.fn.SUBSTR(pw.Cast(UsageRow.ts, "TEXT"), 1, 10)


def spend_since(since: datetime) -> tuple[int, int, int]:
    """(cost in pico-dollars, requests, refused requests) since ``since``."""
    row = (UsageRow.select(_REAL_COST.alias("cost"), pw.fn.COUNT(UsageRow.id).alias("requests"))
           .where(UsageRow.ts >= naive(since)).dicts().get())
    refused = RefusalRow.select().where(RefusalRow.ts >= naive(since)).count()
    return int(row["cost"] or 0), int(row["requests"] or 0), refused


def daily(since: datetime, by: str) -> list[tuple[str, str, int, int]]:
    """(UTC day, model or key name, cost in pico-dollars, requests) since ``since``."""
    group = {"model": pw.fn.COALESCE(UsageRow.model, ""), "key": UsageRow.key_name}[by]
    query = (UsageRow.select(_DAY.alias("day"), group.alias("group"), _REAL_COST.alias("cost"),
                             pw.fn.COUNT(UsageRow.id).alias("requests"))
             .where(UsageRow.ts >= naive(since)).group_by(_DAY, group).dicts())
    return [(str(r["day"])[:10], r["group"], int(r["cost"] or 0), r["requests"]) for r in query]


def top_teams(since: datetime, limit: int) -> list[tuple[str, int, int]]:
    """(team name, cost in pico-dollars, requests) since ``since``, most spent first; requests
    made without a team are left out."""
    cost = _REAL_COST.alias("cost")
    query = (UsageRow.select(UsageRow.team, cost, pw.fn.COUNT(UsageRow.id).alias("requests"))
             .where((UsageRow.ts >= naive(since)) & UsageRow.team.is_null(False)).group_by(UsageRow.team)
             .order_by(pw.SQL("cost").desc(), pw.SQL("requests").desc(), UsageRow.team).limit(limit).tuples())
    return [(team, int(cost or 0), requests) for team, cost, requests in query]


def refusal_reasons(since: datetime) -> list[tuple[str, int]]:
    """(reason, refused requests) since ``since``, most first."""
    count = pw.fn.COUNT(RefusalRow.id)
    query = (RefusalRow.select(RefusalRow.reason, count.alias("count")).where(RefusalRow.ts >= naive(since))
             .group_by(RefusalRow.reason).order_by(count.desc(), RefusalRow.reason).tuples())
    return list(query)


def recent(key_id: int, limit: int) -> list[tuple[datetime, str, dict]]:
    """A key's last ``limit`` usage rows and refusals together, newest first, as
    (time, "usage" or "refusal", the row's JSON with its mitmproxy ``flow_id``)."""
    used = (UsageRow.select().where(UsageRow.key == key_id)
            .order_by(UsageRow.ts.desc(), UsageRow.id.desc()).limit(limit))
    refused = (RefusalRow.select(*refusals.COLUMNS, RefusalRow.flow_id).join(KeyRow, on=(RefusalRow.key == KeyRow.id))
               .where(RefusalRow.key == key_id).order_by(RefusalRow.ts.desc(), RefusalRow.id.desc())
               .limit(limit).dicts())
    found = [(row.ts, "usage", {**usage_store.row_json(row), "flow_id": row.flow_id}) for row in used]
    found += [(RefusalRow.ts.python_value(row["ts"]), "refusal", refusals.row_json(row)) for row in refused]
    found.sort(key=lambda entry: entry[0], reverse=True)
    return found[:limit]
