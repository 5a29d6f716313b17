"""Reading usage rows back: listings and per key / model / day totals."""

from __future__ import annotations

from datetime import datetime

import peewee as pw

from pouch.domain.money import Money
from pouch.store import refusals
from pouch.store.database import UsageRow, naive

TOKEN_COLUMNS = (
    "input_tokens", "cached_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
    "output_tokens", "reasoning_tokens",
)
GROUPS = ("key", "model", "day")


def _where(key_name: str | None, since: datetime | None, until: datetime | None = None):
    condition = pw.SQL("1 = 1")
    if key_name:
        condition &= UsageRow.key_name == key_name
    if since:
        condition &= UsageRow.ts >= naive(since)
    if until:
        condition &= UsageRow.ts < naive(until)
    return condition


def rows(key_name: str | None = None, since: datetime | None = None, until: datetime | None = None) -> list[dict]:
    """Usage rows, oldest first, in the DESIGN's JSON field names (``until`` excluded)."""
    query = UsageRow.select().where(_where(key_name, since, until)).order_by(UsageRow.ts, UsageRow.id)
    return [row_json(row) for row in query]


def row_json(row: UsageRow) -> dict:
    return {
        "id": row.id,
        "ts": row.ts.isoformat(),
        "key": row.key_name,
        "provider": row.provider,
        "model": row.model,
        "endpoint": row.endpoint,
        "status": row.status,
        "streamed": row.streamed,
        "input_tokens": row.input_tokens,
        "cached_tokens": row.cached_tokens,
        "cache_write_tokens": row.cache_write_5m_tokens + row.cache_write_1h_tokens,
        "output_tokens": row.output_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "cost_usd": Money(row.cost_pico).json(),
        "mock": row.mock,
        "observed": row.observed,
        "latency_ms": row.latency_ms,
        "ttft_ms": row.ttft_ms,
        "request_id": row.request_id,
        "outcome": row.outcome,
        "tool_calls": row.tool_calls or {},
        "reserved_usd": Money(row.reserved_pico).json() if row.reserved_pico is not None else None,
    }


def totals(by: str, key_name: str | None = None, since: datetime | None = None,
           until: datetime | None = None) -> list[dict]:
    """Requests, tokens and cost summed per key, model or day (UTC), with the requests pouch
    refused there. ``cost_usd`` is real spend only: what mock requests would have cost is
    ``mock_usd``, never added into it."""
    if by not in GROUPS:
        raise ValueError(f"group by one of {', '.join(GROUPS)}")
    group = {
        "key": UsageRow.key_name,
        "model": pw.fn.COALESCE(UsageRow.model, ""),
        "day": pw.fn.SUBSTR(pw.Cast(UsageRow.ts, "TEXT"), 1, 10),
    }[by]
    sums = [pw.fn.SUM(getattr(UsageRow, column)).alias(column) for column in TOKEN_COLUMNS]
    query = (
        UsageRow.select(
            group.alias("group"),
            pw.fn.COUNT(UsageRow.id).alias("requests"),
            *sums,
            pw.fn.SUM(pw.Case(None, [(UsageRow.mock, 0)], UsageRow.cost_pico)).alias("cost_pico"),
            pw.fn.SUM(pw.Case(None, [(UsageRow.mock, UsageRow.cost_pico)], 0)).alias("mock_pico"),
            pw.fn.SUM(pw.Case(None, [(UsageRow.outcome == "overrun", 1)], 0)).alias("overruns"),
        )
        .where(_where(key_name, since, until))
        .group_by(group)
        .dicts()
    )
    refused = refusals.counts(by, key_name, since, until)
    result = {}
    for row in query:
        group_value = str(row["group"])[:10] if by == "day" else row["group"]
        entry = {by: group_value, "requests": row["requests"]}
        entry.update({column: int(row[column] or 0) for column in TOKEN_COLUMNS})
        entry["cost_usd"] = Money(int(row["cost_pico"] or 0)).json()
        entry["mock_usd"] = Money(int(row["mock_pico"] or 0)).json()  # would-be cost of mock requests
        entry["overruns"] = int(row["overruns"] or 0)  # requests charged more than they reserved
        entry["refused"] = refused.pop(group_value, 0)
        result[group_value] = entry
    for group_value, count in refused.items():  # refused, never admitted: no usage row there
        result[group_value] = {by: group_value, "requests": 0, **dict.fromkeys(TOKEN_COLUMNS, 0), "cost_usd": "0",
                               "mock_usd": "0", "overruns": 0, "refused": count}
    # A refusal without a known key groups under None: listed last.
    return [result[g] for g in sorted(result, key=lambda g: (g is None, g or ""))]
