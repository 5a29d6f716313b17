"""``/api/usage``: usage rows or totals per key / model / day, as JSON or CSV (``pouch usage``)."""

from __future__ import annotations

from pouch.admin.handler import ApiError, Handler
from pouch.services import usage_report

LATER_GROUPS = ("team", "user", "tag", "session")  # DESIGN's, with teams and end users (a later issue)
FORMATS = ("json", "csv")


class Usage(Handler):
    query = frozenset({"key", "since", "until", "by", "format"})

    async def get(self):
        by, fmt = self.argument("by"), self.argument("format") or "json"
        if by in LATER_GROUPS:
            raise ApiError(400, f"by={by}: not yet (teams, users, tags and sessions come with a later issue); "
                                f"group by one of {', '.join(usage_report.GROUPS)}")
        if fmt not in FORMATS:
            raise ApiError(400, f"format={fmt}: give json or csv")
        key, since, until = self.argument("key"), self.argument("since"), self.argument("until")

        def found():
            return usage_report.report(key, since, until, by)

        if fmt == "json":
            await self.answer(lambda: {"rows": found().rows})
            return
        text = await self.store(lambda: usage_report.csv_text(found()))  # made on the store thread too
        self.set_header("Content-Type", "text/csv; charset=UTF-8")
        self.set_header("Content-Disposition", f'attachment; filename="pouch-usage{"-by-" + by if by else ""}.csv"')
        self.finish(text)
