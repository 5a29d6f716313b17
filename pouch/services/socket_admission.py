"""Admitting one ``response.create`` of a Responses WebSocket before it is forwarded.

The same checks, in the same order and by the same rules, as the chain's links make for
``POST /v1/responses`` (keys, ratelimit, budget): the key is still usable (a key revoked while
its socket is open stops at its next create), the body reads, the model is allowed, every paid
tool is bounded, the rate limits admit it (the ratelimit link's own state), the model is priced,
and its worst case is reserved (``pouch.rules.admission``: capping the output when the budget
cannot cover the model's maximum). Whatever refuses it raises the ``PouchError`` the client
gets as an error event; nothing is held after a refusal. A key made a mock key (or
``pouch_mock=all`` turned on) while its socket to the provider is open raises ``Reconnect``:
that socket goes to the provider, so the link closes it and the client's next one goes to
pouch's own answerer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Callable
from datetime import timedelta

from pouch.domain import errors
from pouch.domain.keys import Key
from pouch.domain.periods import utcnow
from pouch.pricing import reserve
from pouch.pricing.price import Price
from pouch.pricing.reserve import Bounds
from pouch.providers.base import Endpoint
from pouch.providers.openai import websocket
from pouch.rules import admission
from pouch.services import attribution, key_cache, prompt, reserving
from pouch.services.exchange import Reservation
from pouch.services.levels import limits
from pouch.services.prices import price_table
from pouch.services.response_socket import Response, Socket
from pouch.tokens.count import count_prompt, input_upper_bound, is_exact


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """The options admission reads (declared by the links that own them)."""

    tool_calls: int = 3  # pouch_tool_calls
    allow_unmetered: bool = False  # pouch_unmetered == "allow"
    cap_output: bool = True  # pouch_cap_output
    hold: timedelta = timedelta(seconds=900)  # pouch_hold
    mock_all: bool = False  # pouch_mock == "all"
    levels: Callable = lambda key, end_user, now: ()  # the budget link's: the ceiling, team and end user levels


class Reconnect(errors.PouchError):
    """Seen by a client whose socket pouch closes after this error event: the socket no longer
    goes where the key's requests go (its key became a mock key, pouch_mock=all was turned on,
    the gateway's script was reloaded under it). A new socket is admitted as it is now."""

    status = 409
    code = "reconnect_required"
    kind = "endpoint"


async def admit(socket: Socket, endpoint: Endpoint, body: dict, sent_at: float,
                settings: Settings) -> tuple[Response, bool]:
    """The admitted response (its reservation held, its rate-limit slot taken) and whether
    ``body`` changed (an output cap, a bound on tool calls: forward it re-serialised)."""
    provider, requested_at = socket.provider, datetime.datetime.fromtimestamp(sent_at, datetime.UTC)
    socket.creates += 1
    index = socket.creates
    if socket.key is not None:
        socket.key = await _usable(socket.key)
    key = socket.key
    if not socket.mock and (settings.mock_all or (key is not None and key.mock)):
        why = "pouch_mock=all is on" if settings.mock_all else f"key '{key.name}' is now a mock key"
        raise Reconnect(f"{why}, and this WebSocket goes to the provider: pouch closes it, nothing was sent; "
                        "open a new one (pouch answers it)")
    call = dataclasses.replace(provider.read_call(endpoint, "", body), stream=True)  # a socket always streams
    admission.allowed(key, call, allow_unmetered=settings.allow_unmetered)
    found = socket.attribution
    end_user = found.end_user or attribution.from_client(call.end_user)
    admission.identified(key, end_user)
    response = Response(index, websocket.lane_of(body), call, requested_at, sent_at,
                        attribution=dataclasses.replace(found, end_user=end_user))
    changed = _bound_tools(response, endpoint, provider, body, settings.tool_calls)
    response.input_tokens, response.exact = await _count(call.model, body)
    if key is None:
        return response, changed  # observed: measured and recorded, nothing to admit against
    response.entry = price_table().lookup(call.model, provider.name, requested_at)
    bounds = Bounds(response.input_tokens, call.max_output, call.choices, call.hidden_input, response.tool_calls,
                    False, response.exact)
    changed |= await _reserve(response, key, endpoint, provider, body, bounds, settings, socket.mock)
    return response, changed


async def _usable(key: Key) -> Key:
    found = await key_cache.keys.lookup(key.secret_hash)
    if found is None:
        raise errors.InvalidKey(f"key '{key.name}' no longer exists")
    return await key_cache.keys.check(found)


def _bound_tools(response: Response, endpoint, provider, body: dict, default: int) -> bool:
    """The request's paid server tools with their bound: pouch's default where it set none."""
    changed = False
    if any(bound.max_calls is None for bound in response.call.server_tools):
        provider.bound_tools(endpoint, body, default)
        response.tools_capped, changed = default, True
    response.tool_calls = tuple((tuple(bound.tools), default if bound.max_calls is None else bound.max_calls)
                                for bound in response.call.server_tools)
    return changed


async def _count(model: str, body: dict) -> tuple[int, bool]:
    """The prompt's tokens: exact for OpenAI's models, an upper bound for others."""
    def count() -> int:
        try:
            return count_prompt(model, body, "responses")
        except ValueError as e:
            raise errors.BadRequest(f"cannot read the prompt: {e}") from None
    # a big prompt is tokenized off the event loop, which every other flow shares
    big = sum(len(str(value)) for value in (body.get("input"), body.get("instructions"), body.get("tools")))
    counted = await asyncio.to_thread(count) if big > prompt.OFF_LOOP_BYTES else count()
    exact = is_exact(model)
    return (counted if exact else input_upper_bound(model, counted)), exact


async def _reserve(response: Response, key: Key, endpoint: Endpoint, provider, body: dict, bounds: Bounds,
                   settings: Settings, response_mock: bool) -> bool:
    """Reserve the worst case at every level (``reserving``); True if it capped the output to fit."""
    call = response.call
    plan = admission.plan(response.entry, call.model, provider.name, bounds, allow_unmetered=settings.allow_unmetered)
    now = utcnow()

    def cap(tokens: int) -> None:
        provider.cap_output(endpoint, body, tokens)
        response.output_capped = tokens
        response.call = dataclasses.replace(call, max_output=tokens)

    end_user = response.attribution.end_user
    rates = limits(key, end_user)
    tokens = reserve.worst_tokens(response.entry if isinstance(response.entry, Price) else None, bounds) \
        if any(limit.tpm for limit in rates) else 0
    result, capped = await reserving.reserve(
        key, settings.levels(key, end_user, now), plan, now, hold=settings.hold,
        has_cap=bool(call.max_output), may_cap=settings.cap_output, cap=cap,
        provider=provider.name, model=call.model, endpoint=endpoint.name, limits=rates, tokens=tokens,
        choices=call.choices, mock=response_mock)
    response.reservation = Reservation(result.id, result.amount, result.remaining, plan.price.model)
    return capped is not None
