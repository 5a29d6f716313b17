"""Reserving a request's worst case at every budget level it belongs to, or refusing it: shared
by the budget link (HTTP) and the Responses WebSocket's admission (each ``response.create``).

A request with no output cap that one level cannot cover is capped to the output that level
covers and tried again; another level may then cap it lower still, so this repeats (the cap
only falls) until it fits or one level cannot cover a single token."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta

from pouch.domain.errors import BudgetExhausted, RateLimited, StoreUnavailable
from pouch.domain.keys import Key
from pouch.domain.money import Money
from pouch.rules import admission
from pouch.services.instance import instance
from pouch.services.store_thread import store_thread
from pouch.store import ledger

log = logging.getLogger(__name__)


def exhausted_message(key: Key, refusal: ledger.Refusal, needed: Money) -> str:
    level = refusal.level
    who, period = (level.who, level.period) if level else (f"key '{key.name}'", str(key.period))
    resets = f"{refusal.window_end:%Y-%m-%d %H:%M}" if refusal.window_end else None
    return admission.exhausted_message(who, refusal.spent, refusal.reserved, refusal.budget, period, resets, needed)


async def reserve(key: Key, levels: tuple[ledger.Level, ...], plan: admission.Plan, now: datetime, *,
                  hold: timedelta, has_cap: bool, may_cap: bool, cap: Callable[[int], None],
                  provider: str, model: str, endpoint: str, limits: tuple = (),
                  tokens: int = 0, choices: int = 1, mock: bool = False) -> tuple[ledger.Reservation, int | None]:
    """The reservation and the output cap pouch set (None: none), or BudgetExhausted naming the
    level that refused (RateLimited: the limit); ``cap(tokens)`` writes a cap into the request.
    ``limits`` are taken in the same transaction, ``tokens`` counted against tokens/min (the
    worst case at the plan's output; a cap takes the output it cuts, ``choices`` times, off it);
    ``mock``: pouch answers it itself (recovery then releases it)."""
    window, needed, capped, counted = key.window(now), plan.amount, None, tokens
    for _ in range(len(levels) + 2):
        result = await store(ledger.reserve, key.id, window, needed, now, owner=instance.name, hold=hold,
                             provider=provider, model=model, endpoint=endpoint, levels=levels,
                             limits=limits, tokens=counted, mock=mock)
        if isinstance(result, ledger.RateRefusal):
            raise rate_limited(result, counted, has_cap=has_cap or capped is not None)
        if isinstance(result, ledger.Reservation):
            return result, capped
        output = admission.capped(plan, result.budget - result.spent - result.reserved,
                                  has_cap=has_cap, may_cap=may_cap)
        if output is None or (capped is not None and output >= capped):
            break
        cap(output)
        capped, needed = output, admission.with_cap(plan, output).amount
        if tokens:
            counted = tokens - (plan.worst.max_output - output) * choices
    raise BudgetExhausted(exhausted_message(key, result, needed), {"x-should-retry": "false"})


async def store(fn, *args, **kwargs):
    """A store step admission waits for; a store that fails refuses the request (503): nothing
    unaccounted goes upstream."""
    try:
        return await store_thread.run(fn, *args, **kwargs)
    except Exception as e:
        log.error("pouch: admission failed in the store: %s", e)
        raise StoreUnavailable("the gateway cannot reach its budget store; nothing was sent, "
                               "try again shortly") from e


def rate_limited(refusal: ledger.RateRefusal, tokens: int, *, has_cap: bool) -> RateLimited:
    """The 429 a client gets: Retry-After when waiting helps, x-should-retry: false when not."""
    headers = dict(refusal.headers)
    reason = refusal.reason
    if math.isinf(refusal.retry_after):
        headers["x-should-retry"] = "false"
        if tokens and not has_cap:
            reason += " (the request sets no output cap, so the model's maximum output counts: set one)"
    else:
        headers["retry-after"] = str(math.ceil(refusal.retry_after))
        headers["retry-after-ms"] = str(math.ceil(refusal.retry_after * 1000))
    return RateLimited(reason, headers)
