"""One model's prices, a model's retirement, a tool's fee, and the cost function.

Prices are USD per 1M tokens held as exact ``Money``; the file format that writes them is in
``pouch.pricing.price_file``.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterator

from pouch.domain.money import ZERO, Money
from pouch.domain.usage import Usage

PRICE_FIELDS = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output", "reasoning")


@dataclasses.dataclass(frozen=True, slots=True)
class Tier:
    """Long-context prices, for requests with more than ``above_input_tokens`` input tokens."""

    above_input_tokens: int
    input: Money | None = None
    cached_input: Money | None = None
    cache_write_5m: Money | None = None
    cache_write_1h: Money | None = None
    output: Money | None = None
    reasoning: Money | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Price:
    """Per-token prices of one model; ``None``: no separate price (see ``price_file``)."""

    model: str
    provider: str
    mode: str
    input: Money
    output: Money
    source: str
    as_of: datetime.date
    cached_input: Money | None = None
    cache_write_5m: Money | None = None
    cache_write_1h: Money | None = None
    reasoning: Money | None = None
    tiers: tuple[Tier, ...] = ()  # ascending thresholds
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    tool_fees: tuple[tuple[str, Money], ...] = ()  # (tool, fee per call) for this provider's tools
    effective: datetime.datetime | None = None  # in effect from this instant (UTC); None: always
    aliases: tuple[str, ...] = ()  # other names of this model at this price
    differs_from_map: tuple[tuple[str, str], ...] = ()  # (field, why): deliberate differences from the public map
    per_request: Money | None = None  # a fee every request pays (a search model searches each time)
    priced_as: str | None = None  # set when a name resolved through another seller's entry: why that price holds

    def of_provider(self, provider: str) -> Price:
        """This price for a request to ``provider``: a model priced only under another provider
        (a name several sell) keeps its token prices, but that provider's tool fees say nothing
        about what this one bills for its tools."""
        return self if provider == self.provider or not self.tool_fees else dataclasses.replace(self, tool_fees=())

    def tool_fee(self, tool: str) -> Money | None:
        """The fee of one call of ``tool``; None: pouch has no price for it."""
        return next((fee for name, fee in self.tool_fees if name == tool), None)

    @property
    def dearest_input(self) -> Money:
        """The most one input token can cost, cache writes and every tier included: what a
        token of context re-read by a server-side tool round is reserved at."""
        levels = [self, *self.tiers]
        return max(p for level in levels for p in (level.input, level.cache_write_5m, level.cache_write_1h)
                   if p is not None)

    def for_input(self, input_tokens: int) -> Price:
        """The prices that apply to a request with this many input tokens (tiers layered)."""
        changes = {}
        for tier in self.tiers:
            if input_tokens > tier.above_input_tokens:
                changes |= {f: getattr(tier, f) for f in PRICE_FIELDS if getattr(tier, f) is not None}
        return dataclasses.replace(self, **changes) if changes else self

    @property
    def highest_output(self) -> Money:
        """The most any output or reasoning token can cost, in any tier: for worst-case reservations."""
        levels = [self, *self.tiers]
        return max(p for level in levels for p in (level.output, level.reasoning) if p is not None)

    def prices_beyond(self, input_tokens: int) -> bool:
        """Whether the table knows the price of a request with this many input tokens: within the
        model's window, or above it in a tier that starts at or past the window (a long-context
        price such as Claude's ``context-1m`` beta rate)."""
        window = self.max_input_tokens
        return (window is None or input_tokens <= window
                or any(tier.above_input_tokens >= window for tier in self.tiers))


@dataclasses.dataclass(frozen=True, slots=True)
class Retirement:
    """From ``effective`` on, the provider no longer serves ``model``: requests for it are
    refused with the date and the replacement instead of sent to fail upstream."""

    model: str
    provider: str
    effective: datetime.datetime
    use: str | None
    source: str
    as_of: datetime.date
    aliases: tuple[str, ...] = ()
    differs_from_map: tuple[tuple[str, str], ...] = ()

    @property
    def message(self) -> str:
        instead = f": use {self.use} instead" if self.use else ""
        return f"model '{self.model}' was retired by {self.provider} on {self.effective:%Y-%m-%d}{instead}"


@dataclasses.dataclass(frozen=True, slots=True)
class ToolFee:
    """What one call of a provider's paid server-side tool costs."""

    provider: str
    tool: str
    per_call: Money
    source: str
    as_of: datetime.date


def per_million_text(price: Money | None) -> str | None:
    """A price as USD per 1M tokens, an exact decimal string ("2.5", "0.075"); None: no price."""
    return None if price is None else format((price.as_usd * 10**6).normalize(), "f")


def tier_json(tier: Tier) -> dict:
    """A tier as JSON, in the price file's names, with only the prices it sets."""
    return {"above_input_tokens": tier.above_input_tokens,
            **{f: per_million_text(getattr(tier, f)) for f in PRICE_FIELDS if getattr(tier, f) is not None}}


def cost(price: Price, usage: Usage) -> Money:
    """What a request cost, exactly, in the tier its total input tokens select."""
    p = price.for_input(usage.input_tokens)
    return (
        p.input * usage.uncached_input_tokens
        + _or(p.cached_input, p.input) * usage.cached_tokens
        + _or(p.cache_write_5m, p.input) * usage.cache_write_5m_tokens
        + _or(p.cache_write_1h, p.input) * usage.cache_write_1h_tokens
        + p.output * usage.visible_output_tokens
        + _or(p.reasoning, p.output) * usage.reasoning_tokens
        + sum((fee * calls for fee, calls in _tool_charges(price, usage)), ZERO)
        + _or(price.per_request, ZERO)
    )


def _tool_charges(price: Price, usage: Usage) -> Iterator[tuple[Money, int]]:
    for tool, calls in usage.tool_calls:
        fee = price.tool_fee(tool)
        if fee is not None:  # a tool without a fee was let through unmetered by the operator
            yield fee, calls


def _or(price: Money | None, fallback: Money) -> Money:
    # Not `price or fallback`: an operator's explicit "0" is a price, and Money(0) is falsy.
    return fallback if price is None else price
