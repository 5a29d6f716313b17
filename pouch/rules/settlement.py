"""What an ended request is charged, and why (its outcome).

The link that saw the request end says what it saw (``Ending``); ``measure`` turns that into
usage and whether the provider bills it; ``settle`` prices it against the reservation.
Outcomes:

- ``ok``: the provider's own usage; ``cut_after_usage``: a stream cut after its usage came;
- ``mock``: a mock answer (never charged); ``refused``: pouch answered itself; ``not_sent``:
  nothing reached the provider; ``upstream_error``: the provider answered 4xx/5xx (not billed);
- ``no_usage``, ``cut_short``, ``abandoned``, ``measure_failed``: the provider may have billed
  anything up to the worst case, and pouch cannot tell: the reservation is charged;
- ``overrun``: the provider's usage cost more than the reservation (charged in full, flagged).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from pouch.domain.money import Money
from pouch.domain.usage import Usage

# Outcomes whose billed amount pouch cannot know: the reservation is what the provider can bill.
WORST_CASE = frozenset({"measure_failed", "no_usage", "abandoned", "cut_short"})
# Outcomes whose tokens are the provider's own count (tokens/min settles to it).
MEASURED = frozenset({"ok", "cut_after_usage", "mock", "overrun"})


@dataclasses.dataclass(frozen=True, slots=True)
class Ending:
    """How a metered request ended, as the chain saw it."""

    refused: str | None = None  # the kind of refusal pouch answered with ("upstream": unreachable)
    mock: Usage | None = None  # a mock answer's usage
    status: int | None = None  # the provider's status, None: no response
    followed: bool = False  # a stream pouch followed as it passed
    usage: Usage | None = None  # the provider's usage (stream or body), None: none reported
    reported: str | None = None  # the model the provider says answered
    error: str | None = None  # the connection error, None: the exchange completed
    sent: bool = True  # the request reached the provider
    streamed: bool = False  # the request asked for a stream
    input_tokens: int = 0  # the prompt as counted at admission
    seen_output: int = 0  # output tokens seen in a stream cut before its usage


@dataclasses.dataclass(frozen=True, slots=True)
class Measured:
    usage: Usage
    billed: bool  # the provider bills it
    outcome: str
    reported: str | None = None


def measure(ending: Ending) -> Measured:
    """Usage, whether the provider bills it, and the outcome, from how the request ended."""
    if ending.refused is not None:  # pouch answered: nothing was sent, unless the route failed late
        return Measured(Usage(), False, "not_sent" if ending.refused == "upstream" else "refused")
    if ending.mock is not None:
        return Measured(ending.mock, False, "mock")
    if ending.status is not None and ending.status >= 400:
        return Measured(Usage(), False, "upstream_error")
    if ending.followed or ending.status is not None:
        if ending.usage is not None:
            cut = ending.followed and ending.error is not None
            return Measured(ending.usage, True, "cut_after_usage" if cut else "ok", ending.reported)
        if not ending.followed or ending.error is None:  # a whole answer, but no usage in it
            return Measured(Usage(), True, "no_usage", ending.reported)
        # Cut short before the provider's usage: it bills what it generated, and some of that
        # is never seen (hidden reasoning, tool rounds, what it generated after the client left).
        return Measured(Usage(input_tokens=ending.input_tokens, output_tokens=ending.seen_output), True,
                        "cut_short", ending.reported)
    if not ending.sent:
        return Measured(Usage(), False, "not_sent")
    # Sent, and no answer came back: the provider finishes (and bills) a generation the client
    # left, and an aborted one may have billed anything up to the worst case.
    client_left = "server" not in (ending.error or "").lower()
    outcome = "abandoned" if client_left and not ending.streamed else "cut_short"
    return Measured(Usage(input_tokens=ending.input_tokens), True, outcome)


@dataclasses.dataclass(frozen=True, slots=True)
class Settlement:
    usage: Usage
    outcome: str
    cost: Money  # what the request would cost (mock and refused requests too)
    charge: Money  # what the key is charged
    billed: bool  # the provider bills it

    @property
    def measured_tokens(self) -> int | None:
        """What a tokens/min limit settles to: the provider's count, 0 for what was not
        billed, None (the worst case stands) when pouch cannot tell."""
        if self.outcome in MEASURED:
            return self.usage.total_tokens
        return None if self.billed else 0


def settle(measured: Measured, reserved: Money | None,
           bill: Callable[[Usage, str | None], tuple[Usage, Money]]) -> Settlement:
    """Price ``measured`` (``bill``: usage and the reported model -> usage as billed, cost);
    an outcome pouch cannot measure costs the reservation; a cost above it is an overrun."""
    usage, outcome = measured.usage, measured.outcome
    if outcome in WORST_CASE and reserved is not None:
        cost = reserved
    else:
        usage, cost = bill(usage, measured.reported)
    charge = cost if measured.billed else Money(0)
    if reserved is not None and charge > reserved:
        outcome = "overrun"
    return Settlement(usage, outcome, cost, charge, measured.billed)
