"""Exact money: integer pico-dollars (1e-12 USD), never binary floats.

Pico-dollars make every published per-token price exact: $0.0375 per million tokens is
37,500 pico-dollars per token, so a cost is tokens x price with no rounding at all.
A signed 64-bit column holds up to ~$9.2 million, far above any key budget.
"""

from __future__ import annotations

import dataclasses
import decimal
from decimal import Decimal

PICO_PER_USD = 10**12


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
            value = Decimal(str(amount).strip().removeprefix("$")) * PICO_PER_USD
        except decimal.InvalidOperation:
            raise ValueError(f"not an amount of USD: {amount!r}") from None
        if not value.is_finite():
            raise ValueError(f"not an amount of USD: {amount!r}")
        if value != value.to_integral_value():
            raise ValueError(f"{amount!r} is finer than a pico-dollar")
        return cls(int(value))

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
