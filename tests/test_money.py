from decimal import Decimal

import pytest

from pouch.domain.money import AmountTooLarge, Money


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


@pytest.mark.parametrize("bad", [1.5, 1.0, True, False, Decimal("1"), "1", None])
def test_holds_only_integer_pico_dollars(bad):
    # A float would make every sum inexact; True would pass for 1 pico-dollar.
    with pytest.raises(TypeError, match="integer pico-dollars"):
        Money(bad)


def test_multiplies_by_whole_counts_only():
    assert Money(7) * 3 == 3 * Money(7) == Money(21)
    with pytest.raises(TypeError, match="integer counts"):
        Money(7) * 1.5
    with pytest.raises(TypeError, match="integer counts"):
        Money(7) * Decimal("1.5")


@pytest.mark.parametrize(
    "text, shown",
    [("1.234567", "$1.23"), ("-1.234567", "$-1.23"), ("1", "$1.00"), ("0.999", "$0.999"), ("-0.25", "$-0.25")],
)
def test_str_rounds_to_cents_from_one_dollar(text, shown):
    assert str(Money.usd(text)) == shown


@pytest.mark.parametrize("pico, truth", [(0, False), (1, True), (-1, True), (10**12, True)])
def test_only_zero_is_falsy(pico, truth):
    assert bool(Money(pico)) is truth


@pytest.mark.parametrize(
    "text, pico",
    [
        ("9223372.036854775807", 2**63 - 1),  # the most a signed 64-bit column holds
        ("-9223372.036854775807", -(2**63 - 1)),
        ("5." + "0" * 40, 5 * 10**12),  # more digits than decimal's context keeps, all exact
        ("0.000000000001", 1),
        ("-0", 0),
        ("0e999999999", 0),
    ],
)
def test_parse_is_exact_at_the_edges(text, pico):
    assert Money.usd(text).pico == pico


@pytest.mark.parametrize("huge", ["1e999999999", "1e9", "1e7", "9223372.036854775808", "-1e8", "1E+400000"])
def test_amounts_beyond_the_store_are_refused_as_too_large(huge):
    # "1e999999999" raised decimal.Overflow (a traceback in `pouch keys create --budget`).
    with pytest.raises(AmountTooLarge, match="what pouch's store can hold"):
        Money.usd(huge)


@pytest.mark.parametrize("fine", ["1e-999999999", "1e-30", "1.0000000000000000000000000000001", "0.0000000000005"])
def test_amounts_finer_than_a_pico_dollar_are_refused(fine):
    # decimal's 28-digit context used to round "1.000...0001" to $1 and accept it.
    with pytest.raises(ValueError, match="finer than a pico-dollar"):
        Money.usd(fine)
