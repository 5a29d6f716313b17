"""The prices the chain's tests run at, whatever the calendar says.

Shipped prices change on dates and models retire (claude-sonnet-4-5 on 2026-11-30, the gpt-5
family on 2026-12-11, gpt-4o-mini on 2027-01-14): a gateway prices a request at the prices in
effect when it is made, so a test of the chain that used the shipped table as is would start
failing on one of those days with no change to the code. Each test's ``POUCH_HOME`` therefore
gets an operator price file holding the shipped entries of the models the tests use that have
a dated change, as they were in effect at ``PINNED_AT`` (an operator price replaces every
shipped date of its model, retirement included). Tests of the shipped table itself resolve it
at ``PINNED_AT`` (``tests/conftest.py``) or at the instants they name.

``test_pinned_prices.py`` fails when a test names a model with a dated change that is not pinned.
"""

from __future__ import annotations

import datetime
import importlib.resources
import json
from decimal import Decimal
from pathlib import Path

from pouch.pricing.price_file import parse_instant, parse_prices, parse_tool_fees
from pouch.pricing.table import PriceTable

PINNED_AT = datetime.datetime(2026, 11, 27, 12, tzinfo=datetime.UTC)  # the day the table was read
MODELS = frozenset({
    ("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("openai", "gpt-4.1"), ("openai", "gpt-4.1-mini"),
    ("openai", "gpt-5"), ("openai", "gpt-5-mini"), ("openai", "gpt-5-nano"), ("openai", "gpt-5-pro"),
    ("openai", "o3"), ("openai", "o3-pro"), ("anthropic", "claude-sonnet-4-5"), ("gemini", "gemini-2.5-pro"),
    ("gemini", "gemini-3.8-flash"), ("gemini", "gemini-flash-latest"), ("gemini", "gemini-4-argon"),
})


def shipped_entries() -> list[dict]:
    text = importlib.resources.files("pouch.pricing").joinpath("prices.json").read_text(encoding="utf-8")
    return json.loads(text)["models"]


def document(extra: list[dict] = ()) -> dict:
    """The pinned entries (each model's shipped price in effect at PINNED_AT, undated), then ``extra``."""
    chosen: dict[tuple[str, str], dict] = {}
    for entry in shipped_entries():
        name = (entry["provider"], entry["model"])
        if name not in MODELS or "retired" in entry:
            continue
        if "from" in entry and parse_instant(entry["from"]) > PINNED_AT:
            continue
        if name not in chosen or entry.get("from", "") >= chosen[name].get("from", ""):
            chosen[name] = entry
    pinned = [{k: v for k, v in entry.items() if k != "from"} | {"source": f"pinned for the tests: {entry['source']}"}
              for entry in chosen.values()]
    return {"models": pinned + list(extra)}


def write(home: Path, extra: list[dict] = ()) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "prices.json"
    path.write_text(json.dumps(document(extra)))
    return path


def table() -> PriceTable:
    """The table a gateway with the pinned file has: what the tests compute expected costs by."""
    text = importlib.resources.files("pouch.pricing").joinpath("prices.json").read_text(encoding="utf-8")
    shipped = json.loads(text, parse_float=Decimal)
    return PriceTable(parse_prices(shipped, "shipped"), parse_tool_fees(shipped, "shipped"),
                      parse_prices(document(), "pinned"))
