"""Usage as operators read it, the same for ``pouch usage`` and the admin API's ``/api/usage``:
one row per request (oldest first), totals per key / model / day / team / user / tag / session,
or the refused requests; as JSON rows or CSV (safe to open in a spreadsheet)."""

from __future__ import annotations

import csv
import io
import json
from typing import NamedTuple

from pouch.domain.errors import InvalidInput
from pouch.domain.periods import utcnow
from pouch.services.keys import parse_when
from pouch.store import refusals as refusal_store
from pouch.store import usage as usage_store

ROW_COLUMNS = ["id", "ts", "key", "provider", "model", "endpoint", "status", "streamed",
               "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "mock", "outcome"]
ATTRIBUTION_COLUMNS = ["team", "user", "tags", "session"]  # in a table only when some row has one
REFUSAL_COLUMNS = ["id", "ts", "key", "provider", "model", "endpoint", "status", "reason", "message"]
GROUPS = usage_store.GROUPS
# A cell a spreadsheet would run as a formula (OWASP "CSV injection"). Tags, sessions, end-user
# ids and model names come from whoever holds a key, so every text cell starting so gets a "'".
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class Report(NamedTuple):
    rows: list[dict]
    columns: list[str]  # what a table shows (and a CSV's header when there are no rows)


def report(key: str | None = None, since: str | None = None, until: str | None = None, by: str | None = None,
           refused: bool = False, *, team: str | None = None, user: str | None = None, tag: str | None = None,
           session: str | None = None) -> Report:
    """``since`` / ``until``: a date, a time or a span back from now (24h, 7d); ``until`` excluded.
    ``tag``: rows carrying it among their tags. Refusals are filtered by key, team and user (the
    refusal log has no tags or sessions: filtered by one, there are none)."""
    if by is not None and by not in GROUPS:
        raise InvalidInput(f"cannot group usage by {by!r}: group by one of {', '.join(GROUPS)}")
    now = utcnow()
    since_time = parse_when(since, now, back=True)
    until_time = parse_when(until, now, back=True)
    if refused:
        if tag or session:
            return Report([], REFUSAL_COLUMNS)
        return Report(refusal_store.rows(key, since_time, until_time, team=team, user=user), REFUSAL_COLUMNS)
    filters = {"team": team, "user": user, "tag": tag, "session": session}
    if by:
        columns = [by, "requests", *usage_store.TOKEN_COLUMNS, "cost_usd", "mock_usd", "overruns", "refused"]
        return Report(usage_store.totals(by, key, since_time, until_time, **filters), columns)
    found = usage_store.rows(key, since_time, until_time, **filters)
    attributed = [column for column in ATTRIBUTION_COLUMNS if any(row[column] for row in found)]
    return Report(found, ROW_COLUMNS + attributed)


def csv_cell(value):
    """A value as a CSV cell: lists and objects (a row's tags, tool_calls) as JSON; text a
    spreadsheet would take for a formula prefixed with "'" (shown, never run)."""
    if isinstance(value, (dict, list)):
        value = json.dumps(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(found: Report) -> str:
    """Every field of the rows (the columns when there are none), each cell through ``csv_cell``."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(found.rows[0]) if found.rows else found.columns,
                            extrasaction="ignore")
    writer.writeheader()
    for row in found.rows:
        writer.writerow({field: csv_cell(value) for field, value in row.items()})
    return out.getvalue()
