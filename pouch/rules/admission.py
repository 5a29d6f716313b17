"""What a request must reserve before anything leaves the gateway, or why it is refused.

Worst case (``pouch.pricing.reserve``) = input tokens (exact for OpenAI models, an upper bound
otherwise) at the dearest input-side price + every output token the request may produce at the
dearest output price + each paid server-side tool call it allows, with the context its round may
re-read. A request without an output cap that does not fit the budget may be capped to the
output the budget still covers.
"""

from __future__ import annotations

import dataclasses

from pouch.domain.errors import BadRequest, ContextTooLong, ModelNotAllowed, ModelNotPriced, ModelRetired, ToolNotMetered
from pouch.domain.money import Money
from pouch.pricing import reserve
from pouch.pricing.price import Price, Retirement
from pouch.pricing.reserve import Bounds, WorstCase


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What to reserve for a request: its price for this provider and its worst case."""

    price: Price
    worst: WorstCase

    @property
    def amount(self) -> Money:
        return self.worst.total


def allowed(key, call, *, allow_unmetered: bool) -> None:
    """Refuse a call the key may not make: a model outside its allowlist, or tools that bill in
    ways pouch cannot bound (unless the operator allows them). ``key`` None: observed traffic."""
    if key is not None and not key.allows_model(call.model):
        team = key.team
        if team is not None and not team.allows_model(call.model):
            raise ModelNotAllowed(f"team '{team.name}' may not use model '{call.model}' "
                                  f"(allowed for key '{key.name}''s team: {', '.join(team.models)})")
        raise ModelNotAllowed(
            f"key '{key.name}' may not use model '{call.model}' (allowed: {', '.join(key.models)})")
    if call.unmetered_tools and not allow_unmetered:
        raise ToolNotMetered(
            f"{', '.join(call.unmetered_tools)} bills in ways pouch cannot bound or price, so this request "
            "is refused (the operator can allow it with pouch_unmetered=allow)")


def identified(key, end_user: str | None) -> None:
    """Refuse a request without an end user on a key that requires one (``--require-user``)."""
    if key is not None and key.require_user and end_user is None:
        raise BadRequest(
            f"key '{key.name}' requires an end-user id on every request: send the header x-pouch-user, or the "
            "SDK's own field (OpenAI safety_identifier or user, Anthropic metadata.user_id)")


def plan(entry: Price | Retirement | None, model: str, provider: str, bounds: Bounds, *,
         allow_unmetered: bool) -> Plan:
    """The worst case of a request for ``model`` priced by ``entry`` (what the table says of it
    when the request was made). Raises the refusal a client sees: retired, unpriced, a context
    pouch cannot price, or a paid tool without a fee (unless the operator allows it unmetered)."""
    if isinstance(entry, Retirement):
        raise ModelRetired(f"{entry.message} (pouch refuses it rather than send a request the provider "
                           "no longer answers)", {"x-should-retry": "false"})
    if entry is None:
        raise ModelNotPriced(
            f"pouch has no price for model '{model}', so it cannot budget it: ask the operator "
            "to add one (pouch prices import, or $POUCH_HOME/prices.json)")
    if why := reserve.unpriced_context(entry, bounds):
        raise ContextTooLong(f"{why}: pouch refuses it rather than price it at the short-context rate")
    price = entry.of_provider(provider)
    try:
        return Plan(price, reserve.worst_case(price, bounds))
    except ValueError as e:  # a server tool this provider's price list has no fee for
        if not allow_unmetered:
            raise ToolNotMetered(f"pouch has {e} of {provider}, so this request is refused (the operator "
                                 "can allow it with pouch_unmetered=allow)") from None
        return Plan(price, reserve.worst_case(price, dataclasses.replace(bounds, tool_calls=())))


def capped(plan_: Plan, left: Money, *, has_cap: bool, may_cap: bool) -> int | None:
    """The output cap that makes a refused request fit in ``left`` (what the budget still
    covers), or None: the request set its own cap, capping is off, or not one token fits."""
    if has_cap or not may_cap:
        return None
    affordable = reserve.affordable_output(plan_.worst, left)
    return affordable if affordable >= 1 else None


def with_cap(plan_: Plan, cap: int) -> Plan:
    return dataclasses.replace(plan_, worst=dataclasses.replace(plan_.worst, max_output=cap))


def exhausted_message(who: str, spent: Money, reserved: Money, budget: Money, period: str,
                      resets: str | None, needed: Money) -> str:
    """``who``: the level that refused ("key 'alice'", "team 'platform'", ...)."""
    held = f" and {reserved} held by requests in flight" if reserved else ""
    resets = f", resets {resets} UTC" if resets else ""
    return (f"budget of {who} exhausted: {spent} spent{held} of {budget} "
            f"(period {period}{resets}); this request may cost up to {needed}")
