"""The price table the gateway charges by: shipped prices overlaid by the operator's
``$POUCH_HOME/prices.json``, loaded once and shared by the links (reload to pick up edits)."""

from __future__ import annotations

import functools

from pouch.pricing.table import PriceTable


@functools.cache
def price_table() -> PriceTable:
    return PriceTable.default()


def reload() -> PriceTable:
    price_table.cache_clear()
    return price_table()
