"""One typed ``Exchange`` per LLM flow: what the chain's links find out about a request,
found once and read by every later link — nothing re-parses the body, re-classifies the path
or re-resolves the price.

Created by the first link that looks (``exchange(flow)``: the provider of the host the client
called), held in one per-flow map, and gone with the flow. When the flow ends, its JSON
``snapshot()`` is what mitmweb, saved flows and the explanations read, in
``flow.metadata["pouch"]`` (flow metadata must stay JSON-serialisable).
"""

from __future__ import annotations

import dataclasses
import datetime
import weakref

from mitmproxy import http

from pouch.domain.keys import Key
from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.pricing.price import Price, Retirement
from pouch.providers.base import METERED, Call, Endpoint, Provider
from pouch.providers.registry import for_host
from pouch.services.attribution import NONE, Attribution

SNAPSHOT = "pouch"  # flow.metadata[SNAPSHOT]: the exchange as JSON, once the flow has ended


@dataclasses.dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    amount: Money  # the worst case held
    remaining: Money | None  # the budget left while it is held (None: the key has no budget)
    price_model: str  # the entry it was priced by


@dataclasses.dataclass(slots=True, eq=False)
class Exchange:
    provider: Provider
    requested_at: datetime.datetime  # when the client made the request: what prices it
    endpoint: Endpoint | None = None  # classified by the path the client sent
    client_path: str | None = None  # the path as the client sent it, once a route prefixed it
    key: Key | None = None  # the pouch key it is charged to, as checked (renewed) by the keys link
    observed: str | None = None  # fingerprint of a foreign credential let through (observe mode)
    own_credential: bool = False  # charged to ``key``, but the client's own credential goes upstream
    call: Call | None = None  # what the request asks for (metered endpoints)
    attribution: Attribution = NONE  # its end user, tags and session
    tool_calls: tuple[tuple[tuple[str, ...], int], ...] = ()  # server tools sharing a bound, the bound
    long_context: bool = False  # a long-context beta opened (Claude's context-1m)
    body: dict | None = None  # the parsed request while it is in the chain
    body_changed: bool = False  # a link changed ``body``: it goes upstream re-serialised
    injected_usage: bool = False  # pouch asked the provider for stream usage
    input_tokens: int | None = None  # the prompt, counted once (exact, or an upper bound)
    exact: bool = True
    entry: Price | Retirement | None = None  # what the price table says of the model at requested_at
    priced: bool = False  # ``entry`` was looked up
    reservation: Reservation | None = None
    limits: tuple = ()  # the rate limits it is taken at with its reservation (pouch.store.limits.Limit)
    limit_tokens: int = 0  # what it counts against tokens/min: the worst case, settled to what was billed
    limit_headers: dict | None = None  # x-ratelimit-* for the client
    output_capped: int | None = None  # the output cap pouch set on a request that had none
    tools_capped: int | None = None  # the bound on server tool calls pouch set
    mock: Usage | None = None  # a mock answer was served, with this usage
    local: str | None = None  # pouch answered it itself, never forwarded: why ("mock key", "telemetry blocked")
    refusal: dict | None = None  # {"kind", "code", "status", "message"}: pouch answered with an error
    result: dict | None = None  # what was recorded when it settled

    @property
    def metered(self) -> bool:
        return self.endpoint is not None and self.endpoint.metering == METERED

    @property
    def who(self) -> str:
        """The name ``pouch usage`` gives the caller."""
        return self.key.name if self.key else f"observed:{self.observed or '?'}"

    def output_cap(self) -> int | None:
        """The cap that binds the output: the client's, or the one pouch set."""
        return self.output_capped or (self.call.max_output if self.call else None)

    def snapshot(self) -> dict:
        """The exchange as JSON, for mitmweb, saved flows and the explanations."""
        endpoint, key, call = self.endpoint, self.key, self.call
        return {
            "provider": self.provider.name,
            "endpoint": {"name": endpoint.name, "metering": endpoint.metering, "api": endpoint.api} if endpoint else None,
            "client_path": self.client_path,
            "key": key_facts(key) if key else None,
            **self.attribution.json(),
            "observed": self.observed,
            "own_credential": self.own_credential,
            "call": {"model": call.model, "stream": call.stream, "max_output": call.max_output,
                     "choices": call.choices, "hidden_input": call.hidden_input,
                     "tool_calls": [[list(tools), calls] for tools, calls in self.tool_calls],
                     "long_context": self.long_context, "input_tokens": self.input_tokens,
                     "exact": self.exact} if call else None,
            "reservation": {"id": self.reservation.id, "amount_usd": self.reservation.amount.json(),
                            "price_model": self.reservation.price_model,
                            "remaining_usd": None if self.reservation.remaining is None
                            else self.reservation.remaining.json()} if self.reservation else None,
            "output_capped": self.output_capped,
            "tools_capped": self.tools_capped,
            "mock": {"input_tokens": self.mock.input_tokens, "output_tokens": self.mock.output_tokens}
            if self.mock else None,
            "local": self.local,
            "refused": self.refusal,
            "usage": self.result,
        }


def key_facts(key: Key) -> dict:
    return {
        "id": key.id, "name": key.name, "prefix": key.prefix, "mock": key.mock,
        "rpm": key.rpm, "tpm": key.tpm, "max_concurrent": key.max_concurrent,
        "period": str(key.period), "anchor": key.anchor.isoformat(),
        "team": key.team.name if key.team else None,
    }


# One per flow to an LLM host (None for other flows: the host is looked up once).
_exchanges: weakref.WeakKeyDictionary[http.HTTPFlow, Exchange | None] = weakref.WeakKeyDictionary()


def exchange(flow: http.HTTPFlow) -> Exchange | None:
    """The flow's exchange, or None when the host the client called is not an LLM host."""
    try:
        return _exchanges[flow]
    except KeyError:
        provider = for_host(flow.request.host, flow.request.port)
        found = _exchanges[flow] = None if provider is None else Exchange(
            provider, datetime.datetime.fromtimestamp(flow.request.timestamp_start, datetime.UTC))
        return found


def existing(flow: http.HTTPFlow) -> Exchange | None:
    """The flow's exchange if a link made one (never looks the host up)."""
    return _exchanges.get(flow)


def end(flow: http.HTTPFlow) -> None:
    """The flow has ended: its snapshot goes to ``flow.metadata`` (again, if it changed)."""
    found = _exchanges.get(flow)
    if found is not None:
        flow.metadata[SNAPSHOT] = found.snapshot()


def snapshot(flow: http.HTTPFlow) -> dict | None:
    """The flow's exchange as JSON: live while it is in the chain, else as saved with it."""
    found = _exchanges.get(flow)
    if found is not None:
        return found.snapshot()
    saved = flow.metadata.get(SNAPSHOT)
    return saved if isinstance(saved, dict) else None
