"""Usage as operators read it, the same for ``pouch usage`` and the admin API's ``/api/usage``:
one row per request (oldest first), totals per key / model / day, or the refused requests;
as JSON rows or CSV."""

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
REFUSAL_COLUMNS = ["id", "ts", "key", "provider", "model", "endpoint", "status", "reason", "message"]
GROUPS = usage_store.GROUPS


class Report(NamedTuple):
    rows: list[dict]
    columns: list[str]  # what a table shows (and a CSV's header when there are no rows)


def report(key: str | None = None, since: str | None = None, until: str | None = None, by: str | None = None,
           refused: bool = False) -> Report:
    """``since`` / ``until``: a date, a time or a span back from now (24h, 7d); ``until`` excluded."""
    if by is not None and by not in GROUPS:
        raise InvalidInput(f"cannot group usage by {by!r}: group by one of {', '.join(GROUPS)}")
    now = utcnow()
    since_time = parse_when(since, now, back=True)
    until_time = parse_when(until, now, back=True)
    if refused:
        return Report(refusal_store.rows(key, since_time, until_time), REFUSAL_COLUMNS)
    if by:
        columns = [by, "requests", *usage_store.TOKEN_COLUMNS, "cost_usd", "mock_usd", "overruns", "refused"]
        return Report(usage_store.totals(by, key, since_time, until_time), columns)
    return Report(usage_store.rows(key, since_time, until_time), ROW_COLUMNS)


def csv_text(found: Report) -> str:
    """Every field of the rows (the columns when there are none); lists and objects (a row's
    tool_calls) as JSON."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(found.rows[0]) if found.rows else found.columns,
                            extrasaction="ignore")
    writer.writeheader()
    for row in found.rows:
        writer.writerow({field: json.dumps(value) if isinstance(value, (dict, list)) else value
                         for field, value in row.items()})
    return out.getvalue()
