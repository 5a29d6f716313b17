from decimal import Decimal

import pytest

from pouch.domain.money import Money


@pytest.mark.parametrize(
    "text, pico",
    [("5", 5 * 10**12), ("0.15", 150_000_000_000), ("$1.50", 1_500_000_000_000), ("1e-7", 100_000), ("0", 0)],
)
def test_parse_usd(text, pico):
    assert Money.usd(text).pico == pico


@pytest.mark.parametrize("bad", ["abc", "", "nan", "inf", "1e-13"])
def test_parse_rejects(bad):
    with pytest.raises(ValueError):
        Money.usd(bad)


def test_float_refused():
    with pytest.raises(TypeError):
        Money.usd(0.1)


def test_per_million_is_exact():
    price = Money.per_million("0.0375")
    assert price.pico == 37_500
    assert (price * 3).json() == "0.0000001125"


def test_arithmetic_and_json():
    total = Money.usd("0.1") + Money.usd("0.2")
    assert total == Money.usd("0.3")
    assert total.json() == "0.3"
    assert (Money.usd("5") - Money.usd("5")).json() == "0"
    assert Money.usd("0.00000015").json() == "0.00000015"
    assert Money.usd("5").as_usd == Decimal(5)


@pytest.mark.parametrize(
    "text, shown", [("5", "$5.00"), ("1234.5", "$1,234.50"), ("0.5", "$0.50"), ("0.00000015", "$0.00000015")]
)
def test_str(text, shown):
    assert str(Money.usd(text)) == shown
