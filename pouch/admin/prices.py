"""``/api/prices``: the price table the gateway charges by (``pouch prices --json``)."""

from __future__ import annotations

from pouch.admin.handler import ApiError, Handler
from pouch.pricing.price_file import parse_instant
from pouch.services import prices


class PriceList(Handler):
    query = frozenset({"provider"})

    async def get(self):
        provider = self.argument("provider")
        # The table is read on the store thread too: the first read of it parses the files.
        await self.answer(lambda: prices.listed(prices.price_table(), provider))


class PriceItem(Handler):
    query = frozenset({"provider", "at"})

    async def get(self, model: str):
        when = self.argument("at")
        try:
            at = parse_instant(when) if when else None
        except ValueError:
            raise ApiError(400, f"at: {when!r} is not a date: use an ISO date or date-time, e.g. 2026-12-01") from None
        provider = self.argument("provider")
        await self.answer(lambda: prices.shown(prices.price_table(), model, provider, at))
