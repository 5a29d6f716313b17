"""Exact money: integer pico-dollars (1e-12 USD), never binary floats.

Pico-dollars make every published per-token price exact: $0.0375 per million tokens is
37,500 pico-dollars per token, so a cost is tokens x price with no rounding at all.
A signed 64-bit column holds up to ~$9.2 million, far above any key budget; ``Money.usd``
refuses larger amounts, since no store column could hold them.
"""

from __future__ import annotations

import dataclasses
import decimal
from decimal import Decimal

PICO_PER_USD = 10**12
MAX_PICO = 2**63 - 1  # what the store's signed 64-bit columns hold: about $9.2 million


class AmountTooLarge(ValueError, OverflowError):
    """An amount beyond what the store can hold; the operator who typed it sees the message.
    Also an ArithmeticError, as decimal's Overflow was for price files that catch that."""

    @classmethod
    def of(cls, amount) -> AmountTooLarge:
        return cls(f"{amount!r} is outside ±${MAX_USD.as_usd:,}, what pouch's store can hold")


@dataclasses.dataclass(frozen=True, order=True, slots=True)
class Money:
    pico: int

    def __post_init__(self):
        if not isinstance(self.pico, int) or isinstance(self.pico, bool):
            raise TypeError(f"Money holds integer pico-dollars, not {type(self.pico).__name__}")

    @classmethod
    def usd(cls, amount: str | int | Decimal) -> Money:
        """Parse a USD amount ("5", "0.15", Decimal("1e-7")); floats are refused as inexact."""
        if isinstance(amount, float):
            raise TypeError("pass USD amounts as str or Decimal, not float")
        try:
            value = Decimal(str(amount).strip().removeprefix("$"))
        except decimal.InvalidOperation:
            raise ValueError(f"not an amount of USD: {amount!r}") from None
        if not value.is_finite():
            raise ValueError(f"not an amount of USD: {amount!r}")
        # Scaled by hand, not by decimal arithmetic: its context rounds past 28 digits (so
        # "1.000...0001" would pass as $1) and overflows on an exponent such as 1e999999999.
        sign, digits, exponent = value.as_tuple()
        significant = "".join(map(str, digits)).rstrip("0")
        if not significant:
            return cls(0)
        if value.adjusted() > 6:  # 10 million dollars or more
            raise AmountTooLarge.of(amount)
        exponent += len(digits) - len(significant) + 12  # now of pico-dollars
        if exponent < 0:
            raise ValueError(f"{amount!r} is finer than a pico-dollar ($0.000000000001)")
        pico = int(significant) * 10**exponent  # at most 19 digits, by the check above
        if pico > MAX_PICO:
            raise AmountTooLarge.of(amount)
        return cls(-pico if sign else pico)

    @classmethod
    def per_million(cls, usd_per_million_tokens: str | Decimal) -> Money:
        """A per-token price from the usual "$ per 1M tokens" figure."""
        return cls.usd(Decimal(str(usd_per_million_tokens)) / 10**6)

    @property
    def as_usd(self) -> Decimal:
        return Decimal(self.pico) / PICO_PER_USD

    def json(self) -> str:
        """Exact decimal string for JSON output: "0.00000015", "5", "-1.5"."""
        text = format(self.as_usd.normalize(), "f")
        return text

    def __str__(self) -> str:
        """Human form: cents for ordinary amounts, more digits only when they matter."""
        usd = self.as_usd
        if usd == usd.quantize(Decimal("0.01")) or abs(usd) >= 1:
            return f"${usd.quantize(Decimal('0.01'), rounding=decimal.ROUND_HALF_UP):,}"
        return f"${format(usd.normalize(), 'f')}"

    def __add__(self, other: Money) -> Money:
        return Money(self.pico + other.pico)

    def __sub__(self, other: Money) -> Money:
        return Money(self.pico - other.pico)

    def __mul__(self, count: int) -> Money:
        if not isinstance(count, int):
            raise TypeError("Money multiplies by integer counts only")
        return Money(self.pico * count)

    __rmul__ = __mul__

    def __bool__(self) -> bool:
        return self.pico != 0


ZERO = Money(0)
MAX_USD = Money(MAX_PICO)
