"""Chain link 5: measure what each request used, price it, and close its reservation.

Streams are followed as they pass (never buffered). Every way a metered request can end
closes its reservation exactly once, with one usage row:

- provider usage (JSON body or stream)            -> charged at cost: tokens and tool fees
- ... above what was reserved                     -> charged all the same, outcome "overrun"
                                                     (logged; the key stays refused until
                                                     it is within its budget again)
- a stream cut short (client hung up, upstream
  aborted) before the provider's usage arrived    -> the full reservation: providers bill
                                                     tokens never streamed (hidden reasoning,
                                                     tool rounds, what they generate after
                                                     the client left)
- the client left before a non-streamed answer    -> the full reservation (the provider
                                                     finishes and bills it anyway)
- a 2xx response without usage                    -> the full reservation (never $0)
- upstream 4xx/5xx, pouch refusal, never sent     -> released (nothing charged)
- mock                                            -> recorded at what it would cost, not charged
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import weakref
from datetime import UTC, datetime

from mitmproxy import http

from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.metrics.traffic import traffic
from pouch.pricing.price import Price, cost
from pouch.rules import settlement
from pouch.providers.base import StreamTracker
from pouch.services import chain, exchange, prompt
from pouch.services.prices import price_table
from pouch.services.refusal_log import refusal_log
from pouch.services.store_thread import store_thread
from pouch.store import ledger
from pouch.tokens.count import count_text

log = logging.getLogger(__name__)
SETTLE_RETRIES = 12  # pauses of 0.5 s doubling to 30 s: about 3.5 minutes, well inside pouch_hold


def billed(usage: Usage, model: str, tool_calls: tuple, provider: str, reported: str | None,
           at: datetime | None = None, known: Price | None = None) -> tuple[Usage, Money]:
    """(usage with its tool calls named as billed, what it cost) at the prices in effect at
    ``at``, the request's time. Priced as the model the provider says answered when that is
    dearer than the one requested (a fallback model, a router's choice), or when the
    requested one has no price (an observed alias). ``known``: the requested model's price,
    as admission already resolved it."""
    names = [model] + ([reported] if reported and reported != model else [])
    best: tuple[Money, Usage] | None = None
    for name in names:
        price = known if name == model and known is not None else price_table().resolve(name, provider, at)
        if price is not None:
            price = price.of_provider(provider)
            if not price.prices_beyond(usage.input_tokens):
                log.warning("pouch: %s billed %d input tokens of %s, above the %d-token window the price table "
                            "knows for it: charged at the table's rates, which may be the short-context ones; "
                            "check `pouch prices show %s`", provider, usage.input_tokens, name,
                            price.max_input_tokens, name)
            named = priced_tools(usage, tool_calls, price)
            charge = cost(price, named)
            if best is None or charge > best[0]:
                best = (charge, named)
    return (usage, Money(0)) if best is None else (best[1], best[0])


def priced_tools(usage: Usage, tool_calls: tuple, price: Price | None) -> Usage:
    """Name each reported tool call as the request's tool it is billed as: OpenAI reports a
    ``web_search`` call for both ``web_search`` and the dearer ``web_search_preview``."""
    requested = [tool for tools, _ in tool_calls for tool in tools]
    if not usage.tool_calls or not requested or price is None:
        return usage
    calls: dict[str, int] = {}
    for kind, count in usage.tool_calls:
        billed_as = [t for t in requested if t == kind or t.startswith(kind + "_")]
        name = max(billed_as, key=lambda t: price.tool_fee(t) or Money(0)) if billed_as else kind
        calls[name] = calls.get(name, 0) + count
    return dataclasses.replace(usage, tool_calls=Usage.tools(calls))


@dataclasses.dataclass(slots=True)
class Followed:
    tracker: StreamTracker
    first_byte: float | None = None


def sent_upstream(flow: http.HTTPFlow) -> bool:
    conn = flow.server_conn
    return conn.timestamp_tcp_setup is not None and (not conn.tls or conn.timestamp_tls_setup is not None)


class UsageMeter:
    def __init__(self):
        self._streams: weakref.WeakKeyDictionary[http.HTTPFlow, Followed] = weakref.WeakKeyDictionary()

    @chain.fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        found = chain.existing(flow)
        if flow.response or flow.error or found is None or not found.metered:
            return
        if found.observed:
            await prompt.input_tokens(flow)  # no budget link counted it; a cut stream needs it
        if found.call.stream and found.provider.prepare_stream(found.endpoint, found.body):
            found.injected_usage = found.body_changed = True

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # Every streamed answer is followed as it passes: SSE, or Gemini's streamed JSON array.
        found = chain.existing(flow)
        if (found is None or not found.metered or found.refusal or found.mock
                or flow.response.status_code >= 400 or not found.call.stream):
            return
        followed = Followed(found.provider.stream_tracker(found.endpoint, found.injected_usage))
        self._streams[flow] = followed

        def feed(data: bytes) -> bytes:
            try:
                if followed.first_byte is None and data:
                    followed.first_byte = time.time()
                # never b"": on a chunked HTTP/1 response an empty chunk ends the body
                return followed.tracker.feed(data) or []
            except Exception:  # a stream callable must never raise: pass the bytes on
                log.exception("pouch: stream tracking failed")
                return data

        flow.response.stream = feed

    @chain.fail_closed
    async def response(self, flow: http.HTTPFlow) -> None:
        self._end(flow)

    @chain.fail_closed
    async def error(self, flow: http.HTTPFlow) -> None:
        self._end(flow)

    def _end(self, flow: http.HTTPFlow) -> None:
        refusal_log.note(flow)  # whichever link refused it: recorded for `pouch usage --refused`
        try:
            self._close(flow)
        finally:
            exchange.end(flow)  # the flow's JSON snapshot, for mitmweb and saved flows

    def _close(self, flow: http.HTTPFlow) -> None:
        found = chain.existing(flow)
        followed = self._streams.pop(flow, None)
        if found is None or not found.metered or not (found.reservation or found.observed) or found.result:
            return
        reservation = found.reservation
        try:
            measured = settlement.measure(self._ending(flow, found, followed))
        except Exception:
            log.exception("pouch: measuring usage failed; charging the full reservation")
            measured = settlement.Measured(Usage(), True, "measure_failed")
        call, provider_name, tools = found.call, found.provider.name, found.tool_calls
        reserved = reservation.amount if reservation else None
        at, known = found.requested_at, found.entry if isinstance(found.entry, Price) else None
        settled = settlement.settle(measured, reserved, lambda usage, reported: billed(
            usage, call.model, tools, provider_name, reported, at, known))
        usage, outcome, would_cost, charge = settled.usage, settled.outcome, settled.cost, settled.charge
        if outcome == "overrun":
            log.warning("pouch: overrun: key %s was charged %s for a %s request that reserved %s (usage %s)",
                        found.who, charge, call.model, reserved, usage)
        row = self._row(flow, found, followed, usage, outcome, would_cost)
        row["reserved_pico"] = reserved.pico if reserved is not None else None
        if reservation:
            # Retried while the store is unavailable (finish is idempotent): a settlement given
            # up would leave the worst case held, and recovery would charge all of it.
            store_thread.later(ledger.finish, reservation.id, charge, row, settled.measured_tokens,
                               retries=SETTLE_RETRIES)
        else:
            store_thread.later(ledger.record, row)
        traffic.settled(row, charge, found.entry)  # /metrics: counted where the row is made, once
        found.result = {
            **{f.name: getattr(usage, f.name) for f in dataclasses.fields(usage) if f.name != "tool_calls"},
            "tool_calls": dict(usage.tool_calls),
            "cost_usd": would_cost.json(), "charged_usd": charge.json(), "outcome": outcome,
            "reserved_usd": reserved.json() if reserved is not None else None,
            "latency_ms": row["latency_ms"], "ttft_ms": row["ttft_ms"],
        }

    def _ending(self, flow: http.HTTPFlow, found, followed: Followed | None) -> settlement.Ending:
        """How the flow ended, as ``settlement.measure`` reads it."""
        call, response, refused, mock = found.call, flow.response, found.refusal, found.mock
        ending = settlement.Ending(
            refused=refused["kind"] if refused else None, mock=mock,
            status=response.status_code if response is not None else None, followed=followed is not None,
            error=flow.error.msg if flow.error else None, sent=sent_upstream(flow), streamed=bool(call.stream),
            input_tokens=found.input_tokens or 0)
        if refused or mock or (response is not None and response.status_code >= 400):
            return ending
        if followed is not None:
            usage, reported = followed.tracker.usage(), followed.tracker.model()
            seen = count_text(call.model, followed.tracker.output_text()) if usage is None and flow.error else 0
            return dataclasses.replace(ending, usage=usage, reported=reported, seen_output=seen)
        if response is not None:
            try:
                body = json.loads(response.get_content(strict=False) or b"null")
            except (ValueError, RecursionError):
                body = None
            # Gemini answers a streamed request that pouch could not follow with a JSON array.
            if isinstance(body, dict | list):
                usage, reported = found.provider.usage_from_body(found.endpoint, body)
                return dataclasses.replace(ending, usage=usage, reported=reported)
        return ending

    @staticmethod
    def _row(flow: http.HTTPFlow, found, followed: Followed | None, usage: Usage, outcome: str,
             would_cost: Money) -> dict:
        key, call, response = found.key, found.call, flow.response
        started = flow.request.timestamp_start
        ended = response.timestamp_end if response is not None and response.timestamp_end else time.time()
        first = followed.first_byte if followed else (response.timestamp_start if response is not None else None)
        return {
            "ts": datetime.fromtimestamp(started, UTC),
            "key": key.id if key else None,
            "key_name": found.who,
            "provider": found.provider.name,
            "model": call.model,
            "endpoint": found.endpoint.name,
            "status": response.status_code if response is not None else None,
            "streamed": bool(call.stream),
            **{f.name: getattr(usage, f.name) for f in dataclasses.fields(usage) if f.name != "tool_calls"},
            "tool_calls": dict(usage.tool_calls) or None,
            "cost_pico": would_cost.pico,
            "latency_ms": round((ended - started) * 1000),
            "ttft_ms": round((first - started) * 1000) if first else None,
            "mock": found.mock is not None,
            "observed": key is None,
            "request_id": (response.headers.get("x-request-id") or response.headers.get("request-id"))
            if response is not None else None,
            "outcome": outcome,
            "flow_id": flow.id,  # the dashboard links the row to mitmweb's view of the flow
            **found.attribution.columns(key),
        }
