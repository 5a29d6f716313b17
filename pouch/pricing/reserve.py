"""The worst case a request can cost: what the budget reserves and the tokens/min limit counts.

Pure functions, no I/O. What a provider can bill for one request is bounded by

- input: the prompt's tokens (exact for OpenAI models, an upper bound otherwise), or the
  model's whole context window when the provider adds stored context the body does not show,
  at the dearest input-side price of the tier that input selects (cache writes may cost more
  than plain input);
- output: the request's output cap, else the model's maximum, per generated choice, at the
  dearest output or reasoning price of any tier (hidden reasoning included);
- a fee the model charges per request, if any;
- paid server-side tools: each allowed call's fee, plus the model round that call may start,
  which re-reads the growing context: at most the context window, at the dearest input price
  of any tier.
"""

from __future__ import annotations

import dataclasses

from pouch.domain.money import ZERO, Money
from pouch.pricing.price import Price

DEFAULT_MAX_OUTPUT = 32_768  # when neither the request nor the price table caps output
DEFAULT_MAX_INPUT = 1_000_000  # a model's context window, when the price table does not say
LONG_CONTEXT = 1_000_000  # the window a long-context beta (Claude's context-1m) opens


@dataclasses.dataclass(frozen=True, slots=True)
class Bounds:
    """What a request lets the provider do: read from the request, with pouch's defaults."""

    input_tokens: int  # the prompt as counted
    max_output: int | None  # the output cap the request sets (None: the model's maximum)
    choices: int = 1
    hidden_input: bool = False  # stored context the provider adds as input
    tool_calls: tuple[tuple[tuple[str, ...], int], ...] = ()  # (tools sharing a bound, the bound)
    long_context: bool = False  # the request opens a longer context than the model's default
    exact: bool = True  # input_tokens is the exact count, not an upper bound

    @property
    def tool_rounds(self) -> int:
        return sum(calls for _, calls in self.tool_calls)


@dataclasses.dataclass(frozen=True, slots=True)
class WorstCase:
    fixed: Money  # input, tool fees and the input tool rounds re-bill
    per_output: Money  # one more output token, across every choice
    max_output: int  # output tokens per choice

    @property
    def total(self) -> Money:
        return self.fixed + self.per_output * self.max_output


def context_window(price: Price | None, bounds: Bounds) -> int:
    window = (price.max_input_tokens if price else None) or DEFAULT_MAX_INPUT
    return max(window, LONG_CONTEXT) if bounds.long_context else window


def unpriced_context(price: Price, bounds: Bounds) -> str | None:
    """Why pouch cannot price the context this request may use, or None. Never the
    short-context rate for a long context: a request exactly counted above the model's window
    (the provider would refuse it anyway), or one opening a long-context beta where the table
    has no price above the window, is refused."""
    window = price.max_input_tokens
    if window is None:
        return None
    if bounds.exact and not price.prices_beyond(bounds.input_tokens):
        return (f"this request has {bounds.input_tokens:,} input tokens, more than the {window:,} "
                f"model '{price.model}' takes")
    if bounds.long_context and not price.prices_beyond(LONG_CONTEXT):
        return (f"this request opens a long context (a context-1m beta) for model '{price.model}', and pouch "
                f"has no price for its input above {window:,} tokens (the provider bills that at a higher rate)")
    return None


def max_output(price: Price | None, bounds: Bounds) -> int:
    if bounds.max_output is not None:  # 0 for embeddings: they generate nothing
        return bounds.max_output
    return (price.max_output_tokens if price else None) or DEFAULT_MAX_OUTPUT


def input_tokens(price: Price | None, bounds: Bounds) -> int:
    if bounds.hidden_input:
        return max(bounds.input_tokens, context_window(price, bounds))
    return bounds.input_tokens


def worst_tokens(price: Price | None, bounds: Bounds) -> int:
    """Every token the request may be billed for: what a tokens/min limit counts."""
    return (input_tokens(price, bounds) + bounds.tool_rounds * context_window(price, bounds)
            + max_output(price, bounds) * bounds.choices)


def worst_case(price: Price, bounds: Bounds) -> WorstCase:
    """The most the request can cost. ``ValueError`` when a tool in it has no fee."""
    tokens = input_tokens(price, bounds)
    tier = price.for_input(tokens)
    dearest_input = max(p for p in (tier.input, tier.cache_write_5m, tier.cache_write_1h) if p is not None)
    fees = price.per_request or ZERO
    for tools, calls in bounds.tool_calls:
        known = [price.tool_fee(tool) for tool in tools]
        if None in known:
            missing = ", ".join(t for t, fee in zip(tools, known, strict=True) if fee is None)
            raise ValueError(f"no price for the tool(s) {missing}")
        fees += max(known) * calls
    rounds = price.dearest_input * (bounds.tool_rounds * context_window(price, bounds))
    return WorstCase(dearest_input * tokens + fees + rounds, price.highest_output * bounds.choices,
                     max_output(price, bounds))


def affordable_output(worst: WorstCase, left: Money) -> int:
    """The largest output cap whose worst case fits in ``left`` (0: not even one token)."""
    if not worst.per_output.pico:
        return worst.max_output if worst.fixed <= left else 0
    return max((left - worst.fixed).pico // worst.per_output.pico, 0)
