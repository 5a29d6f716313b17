"""The price table the gateway charges by: shipped prices overlaid by the operator's
``$POUCH_HOME/prices.json``, loaded once and shared by the links (reload to pick up edits);
and prices as operators read them (``pouch prices --json``, the admin API)."""

from __future__ import annotations

import datetime
import functools

from pouch.domain.errors import InvalidInput
from pouch.home import home
from pouch.pricing.price import PRICE_FIELDS, Price, Retirement, per_million_text, tier_json
from pouch.pricing.table import PriceTable


class UnknownPrice(InvalidInput):
    """Seen by an operator asking for the price of a model pouch has none for, or a retired one."""


@functools.cache
def price_table() -> PriceTable:
    return PriceTable.default()


def reload() -> PriceTable:
    price_table.cache_clear()
    return price_table()


def describe(price: Price) -> dict:
    """A price as JSON: USD per 1M tokens as exact decimal strings."""
    described = {"model": price.model, "provider": price.provider, "mode": price.mode}
    described.update({field: per_million_text(getattr(price, field)) for field in PRICE_FIELDS})
    described["tiers"] = [tier_json(tier) for tier in price.tiers]
    described.update(max_input_tokens=price.max_input_tokens, max_output_tokens=price.max_output_tokens,
                     per_request_usd=None if price.per_request is None else format(price.per_request.as_usd, "f"),
                     aliases=list(price.aliases), source=price.source, as_of=price.as_of.isoformat(),
                     **{"from": price.effective.isoformat() if price.effective else None})
    if price.priced_as:
        described["priced_as"] = price.priced_as
    if price.differs_from_map:
        described["differs_from_map"] = dict(price.differs_from_map)
    return described


def describe_retirement(retired: Retirement) -> dict:
    return {"model": retired.model, "provider": retired.provider, "retired": retired.effective.date().isoformat(),
            "use": retired.use, "message": retired.message, "source": retired.source, "as_of": retired.as_of.isoformat()}


def describe_entry(entry) -> dict:
    return describe_retirement(entry) if isinstance(entry, Retirement) else describe(entry)


def listed(table: PriceTable, provider: str | None = None) -> list[dict]:
    """Every price in the table (of one provider's models when given), as JSON."""
    return [describe(price) for price in table if not provider or price.provider == provider]


def shown(table: PriceTable, model: str, provider: str | None = None, at: datetime.datetime | None = None) -> dict:
    """The price ``model`` resolves to (at ``at``, default now) as JSON, with its other dated
    entries (a price change, a retirement ahead) as ``other_dates`` when it has any."""
    entry = table.lookup(model, provider, at)
    if isinstance(entry, Retirement):
        raise UnknownPrice(f"{entry.message}: requests for it are refused ({entry.source})")
    if entry is None:
        raise UnknownPrice(f"no price for {model!r}: requests for it are refused (add it to {home() / 'prices.json'})")
    others = [describe_entry(e) for e in table.versions(model, provider) if e is not entry]
    return describe(entry) | ({"other_dates": others} if others else {})
