"""``/api/usage``: usage rows or totals per key / model / day / team / user / tag / session, as
JSON or CSV (``pouch usage``), filterable by key, time, team, user, tag and session."""

from __future__ import annotations

from pouch.admin.handler import ApiError, Handler
from pouch.services import usage_report

FORMATS = ("json", "csv")
FILTERS = ("team", "user", "tag", "session")


class Usage(Handler):
    query = frozenset({"key", "since", "until", "by", "format", *FILTERS})

    async def get(self):
        by, fmt = self.argument("by"), self.argument("format") or "json"
        if fmt not in FORMATS:
            raise ApiError(400, f"format={fmt}: give json or csv")
        key, since, until = self.argument("key"), self.argument("since"), self.argument("until")
        filters = {name: self.argument(name) for name in FILTERS}

        def found():
            return usage_report.report(key, since, until, by, **filters)

        if fmt == "json":
            await self.answer(lambda: {"rows": found().rows})
            return
        text = await self.store(lambda: usage_report.csv_text(found()))  # made on the store thread too
        self.set_header("Content-Type", "text/csv; charset=UTF-8")
        self.set_header("Content-Disposition", f'attachment; filename="pouch-usage{"-by-" + by if by else ""}.csv"')
        self.finish(text)
