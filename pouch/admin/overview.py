"""``/api/overview``: spend today and this month, each key's budget window summed, spend per
day by model and by key, the top keys and teams and refusals by reason (the dashboard's first page)."""

from __future__ import annotations

from pouch.admin.handler import ApiError, Handler
from pouch.services import overview

MAX_DAYS = 366


class Overview(Handler):
    query = frozenset({"days"})

    async def get(self):
        text = self.argument("days") or "30"
        if not text.isdigit() or not 1 <= int(text) <= MAX_DAYS:
            raise ApiError(400, f"days: give a whole number from 1 to {MAX_DAYS}")
        await self.answer(overview.overview, int(text))
