"""The tests' prices hold whatever the date (tests/pinned_prices.py)."""

from __future__ import annotations

import ast
import datetime
from pathlib import Path

from pouch.pricing.table import PriceTable
from tests import pinned_prices

ROOT = Path(__file__).resolve().parent.parent
# Files that test the shipped table itself, at the instants they name.
TABLE_TESTS = {"test_price_data.py", "test_pinned_prices.py", "pinned_prices.py", "test_pricing.py",
               "test_pricing_check.py", "test_pricing_dates.py", "test_pricing_import.py", "test_pricing_names.py",
               "test_pricing_retired.py", "test_pricing_long_context.py", "test_pricing_reserve.py",
               "test_cli_prices.py"}


def test_a_pinned_model_keeps_its_price_and_never_retires():
    shipped, pinned = PriceTable.load(), pinned_prices.table()
    for provider, model in pinned_prices.MODELS:
        then = shipped.resolve(model, provider, pinned_prices.PINNED_AT)
        assert then is not None, (provider, model)
        for year in (2026, 2027, 2030):
            later = pinned.resolve(model, provider, datetime.datetime(year, 12, 31, tzinfo=datetime.UTC))
            assert later is not None and (later.input, later.output, later.cached_input, later.tiers) == \
                (then.input, then.output, then.cached_input, then.tiers), (provider, model, year)


def test_every_model_the_chain_tests_name_with_a_dated_change_is_pinned():
    """A model whose shipped entry changes (or retires) after PINNED_AT, named in a test of the
    chain, would make that test fail on the day: it must be pinned."""
    shipped = PriceTable.load()
    changing = {(e.provider, e.model.lower()) for e in shipped.entries()
                if e.effective is not None and e.effective > pinned_prices.PINNED_AT}
    changing_names = {model for _, model in changing}
    pinned = {model.lower() for _, model in pinned_prices.MODELS}
    files = [*(ROOT / "tests").glob("*.py"), *(ROOT / "scripts" / "invariantlib").glob("*.py"),
             *(ROOT / "scripts" / "benchlib").glob("*.py")]
    unpinned = set()
    for path in files:
        if path.name in TABLE_TESTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value.strip().lower()
                if name in changing_names and name not in pinned:
                    unpinned.add((path.name, name))
    assert not unpinned, f"pin these in tests/pinned_prices.py (or name a model without a dated change): {unpinned}"
