"""Reading usage rows back: listings and totals per key, model, day, team, end user, tag or
session, each filterable by key, time, team, end user, tag and session."""

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
GROUPS = ("key", "model", "day", "team", "user", "tag", "session")
# What a group's value is in SQL; "tag" groups by the whole tags text, split after (``_by_tag``).
_GROUP_COLUMNS = {
    "key": UsageRow.key_name,
    "model": pw.fn.COALESCE(UsageRow.model, ""),
    "day": pw.fn.SUBSTR(pw.Cast(UsageRow.ts, "TEXT"), 1, 10),
    "team": UsageRow.team,
    "user": UsageRow.end_user,
    "tag": UsageRow.tags,
    "session": UsageRow.session,
}
_SUMMED = (*TOKEN_COLUMNS, "cost_pico", "mock_pico", "overruns")


def split_tags(text: str | None) -> list[str]:
    """A row's tags ("checkout,beta", stored comma-joined: a tag never holds a comma) as a list."""
    return [tag for tag in (text or "").split(",") if tag]


def _has_tag(tag: str):
    # Exact and case-sensitive on SQLite and PostgreSQL alike (LIKE is neither: wildcards in a
    # client's tag, and SQLite's LIKE ignores case): ",a,b," holds ",a," iff removing it changes it.
    padded = pw.Value(",").concat(UsageRow.tags).concat(",")
    return UsageRow.tags.is_null(False) & (pw.fn.REPLACE(padded, f",{tag},", "") != padded)


def _where(key_name: str | None, since: datetime | None, until: datetime | None = None, *,
           team: str | None = None, user: str | None = None, tag: str | None = None, session: str | None = None):
    condition = pw.SQL("1 = 1")
    if key_name:
        condition &= UsageRow.key_name == key_name
    if since:
        condition &= UsageRow.ts >= naive(since)
    if until:
        condition &= UsageRow.ts < naive(until)
    if team:
        condition &= UsageRow.team == team
    if user:
        condition &= UsageRow.end_user == user
    if tag:
        condition &= _has_tag(tag)
    if session:
        condition &= UsageRow.session == session
    return condition


def rows(key_name: str | None = None, since: datetime | None = None, until: datetime | None = None, *,
         team: str | None = None, user: str | None = None, tag: str | None = None,
         session: str | None = None) -> list[dict]:
    """Usage rows, oldest first, in the DESIGN's JSON field names (``until`` excluded; ``tag``:
    rows carrying that tag among theirs)."""
    where = _where(key_name, since, until, team=team, user=user, tag=tag, session=session)
    query = UsageRow.select().where(where).order_by(UsageRow.ts, UsageRow.id)
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
        "team": row.team,
        "user": row.end_user,
        "tags": split_tags(row.tags),
        "session": row.session,
    }


def totals(by: str, key_name: str | None = None, since: datetime | None = None,
           until: datetime | None = None, *, team: str | None = None, user: str | None = None,
           tag: str | None = None, session: str | None = None) -> list[dict]:
    """Requests, tokens and cost summed per key, model, day (UTC), team, end user, tag or
    session, with the requests pouch refused there. ``cost_usd`` is real spend only: what mock
    requests would have cost is ``mock_usd``, never added into it.

    A row with several tags counts under each of them, so per-tag sums add up to more than the
    total when rows share tags. Rows without a team, end user, tag or session group under None
    (listed last). An end user is grouped by name across keys: filter by key for one key's.
    Refusals are counted where the refusal log knows the group (key, model, day, team, end
    user); it records no tags or sessions, so per tag or session, or filtered by one, ``refused``
    is 0."""
    if by not in GROUPS:
        raise ValueError(f"group by one of {', '.join(GROUPS)}")
    group = _GROUP_COLUMNS[by]
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
        .where(_where(key_name, since, until, team=team, user=user, tag=tag, session=session))
        .group_by(group)
        .dicts()
    )
    sums_by_group = {(str(row["group"])[:10] if by == "day" else row["group"]): row for row in query}
    if by == "tag":
        sums_by_group = _by_tag(sums_by_group)
    if by in ("tag", "session") or tag or session:
        refused = {}  # the refusal log records no tags or sessions
    else:
        refused = refusals.counts(by, key_name, since, until, team=team, user=user)
    result = {}
    for group_value, row in sums_by_group.items():
        entry = {by: group_value, "requests": int(row["requests"])}
        entry.update({column: int(row[column] or 0) for column in TOKEN_COLUMNS})
        entry["cost_usd"] = Money(int(row["cost_pico"] or 0)).json()
        entry["mock_usd"] = Money(int(row["mock_pico"] or 0)).json()  # would-be cost of mock requests
        entry["overruns"] = int(row["overruns"] or 0)  # requests charged more than they reserved
        entry["refused"] = refused.pop(group_value, 0)
        result[group_value] = entry
    for group_value, count in refused.items():  # refused, never admitted: no usage row there
        result[group_value] = {by: group_value, "requests": 0, **dict.fromkeys(TOKEN_COLUMNS, 0), "cost_usd": "0",
                               "mock_usd": "0", "overruns": 0, "refused": count}
    # A refusal without a known key, a row without a team (user, tag, session): under None, last.
    return [result[g] for g in sorted(result, key=lambda g: (g is None, g or ""))]


def _by_tag(by_tags_text: dict[str | None, dict]) -> dict[str | None, dict]:
    """Sums per distinct tags text ("a,b") merged into sums per tag: each tag of a text gets
    all of that text's sums (a tag named twice in one row still counts the row once)."""
    merged: dict[str | None, dict] = {}
    for text, row in by_tags_text.items():
        for tag in sorted(set(split_tags(text))) or [None]:
            into = merged.setdefault(tag, dict.fromkeys(("requests", *_SUMMED), 0))
            for column in ("requests", *_SUMMED):
                into[column] += int(row[column] or 0)
    return merged
