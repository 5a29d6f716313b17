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
from pouch.pricing.price import Price, cost
from pouch.providers.base import StreamTracker
from pouch.services import chain, prompt
from pouch.services.prices import price_table
from pouch.services.refusal_log import refusal_log
from pouch.services.store_thread import store_thread
from pouch.store import ledger
from pouch.tokens.count import count_text

log = logging.getLogger(__name__)
SETTLE_RETRIES = 12  # pauses of 0.5 s doubling to 30 s: about 3.5 minutes, well inside pouch_hold
# Outcomes whose billed amount pouch cannot know: the reservation is what the provider can bill.
WORST_CASE = frozenset({"measure_failed", "no_usage", "abandoned", "cut_short"})
# Outcomes whose tokens are the provider's own count (tokens/min settles to it).
MEASURED = frozenset({"ok", "cut_after_usage", "mock", "overrun"})


def billed(usage: Usage, call: dict, provider: str, reported: str | None,
           at: datetime | None = None) -> tuple[Usage, Money]:
    """(usage with its tool calls named as billed, what it cost) at the prices in effect at
    ``at``, the request's time. Priced as the model the provider says answered when that is
    dearer than the one requested (a fallback model, a router's choice), or when the
    requested one has no price (an observed alias)."""
    names = [call["model"]] + ([reported] if reported and reported != call["model"] else [])
    best: tuple[Money, Usage] | None = None
    for name in names:
        price = price_table().resolve(name, provider, at)
        if price is not None:
            price = price.of_provider(provider)
            if not price.prices_beyond(usage.input_tokens):
                log.warning("pouch: %s billed %d input tokens of %s, above the %d-token window the price table "
                            "knows for it: charged at the table's rates, which may be the short-context ones; "
                            "check `pouch prices show %s`", provider, usage.input_tokens, name,
                            price.max_input_tokens, name)
            named = priced_tools(usage, call, price)
            charge = cost(price, named)
            if best is None or charge > best[0]:
                best = (charge, named)
    return (usage, Money(0)) if best is None else (best[1], best[0])


def priced_tools(usage: Usage, call: dict, price: Price | None) -> Usage:
    """Name each reported tool call as the request's tool it is billed as: OpenAI reports a
    ``web_search`` call for both ``web_search`` and the dearer ``web_search_preview``."""
    requested = [tool for tools, _ in call.get("tool_calls", ()) for tool in tools]
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
        if flow.response or flow.error or not chain.metered(flow):
            return
        if chain.OBSERVED in flow.metadata:
            await prompt.input_tokens(flow)  # no budget link counted it; a cut stream needs it
        if not flow.metadata[chain.CALL]["stream"]:
            return
        provider = chain.provider_of(flow)
        endpoint = chain.endpoint_of(flow)
        if provider.prepare_stream(endpoint, flow.metadata[chain.BODY]):
            flow.metadata[chain.INJECTED_USAGE] = flow.metadata[chain.BODY_CHANGED] = True

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # Every streamed answer is followed as it passes: SSE, or Gemini's streamed JSON array.
        if (not chain.metered(flow) or chain.REFUSED in flow.metadata or chain.MOCK in flow.metadata
                or flow.response.status_code >= 400 or not flow.metadata[chain.CALL]["stream"]):
            return
        provider = chain.provider_of(flow)
        endpoint = chain.endpoint_of(flow)
        followed = Followed(provider.stream_tracker(endpoint, flow.metadata.get(chain.INJECTED_USAGE, False)))
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
        refusal_log.note(flow)  # whichever link refused it: recorded for `pouch usage --refused`
        self._close(flow)

    @chain.fail_closed
    async def error(self, flow: http.HTTPFlow) -> None:
        refusal_log.note(flow)
        self._close(flow)

    def _close(self, flow: http.HTTPFlow) -> None:
        reservation = flow.metadata.get(chain.RESERVATION)
        observed = chain.OBSERVED in flow.metadata
        followed = self._streams.pop(flow, None)
        if not chain.metered(flow) or not (reservation or observed) or chain.RESULT in flow.metadata:
            return
        try:
            usage, charged, outcome, reported = self._measure(flow, followed)
        except Exception:
            log.exception("pouch: measuring usage failed; charging the full reservation")
            usage, charged, outcome, reported = Usage(), True, "measure_failed", None
        call, provider_name = flow.metadata[chain.CALL], flow.metadata[chain.PROVIDER]
        reserved = Money.usd(reservation["amount_usd"]) if reservation else None
        if outcome in WORST_CASE and reserved is not None:  # we cannot tell: what the provider can bill
            would_cost = reserved
        else:
            usage, would_cost = billed(usage, call, provider_name, reported, chain.requested_at(flow))
        charge = would_cost if charged else Money(0)
        if reserved is not None and charge > reserved:
            outcome = "overrun"
            log.warning("pouch: overrun: key %s was charged %s for a %s request that reserved %s (usage %s)",
                        flow.metadata[chain.KEY]["name"], charge, call["model"], reserved, usage)
        row = self._row(flow, followed, usage, outcome, would_cost)
        row["reserved_pico"] = reserved.pico if reserved is not None else None
        if reservation:
            # Retried while the store is unavailable (finish is idempotent): a settlement given
            # up would leave the worst case held, and recovery would charge all of it.
            store_thread.later(ledger.finish, reservation["id"], charge, row, retries=SETTLE_RETRIES)
        else:
            store_thread.later(ledger.record, row)
        chain.measured(flow, usage.total_tokens if outcome in MEASURED else 0 if not charged else None)
        flow.metadata[chain.RESULT] = {
            **{f.name: getattr(usage, f.name) for f in dataclasses.fields(usage) if f.name != "tool_calls"},
            "tool_calls": dict(usage.tool_calls),
            "cost_usd": would_cost.json(), "charged_usd": charge.json(), "outcome": outcome,
            "reserved_usd": reserved.json() if reserved is not None else None,
            "latency_ms": row["latency_ms"], "ttft_ms": row["ttft_ms"],
        }

    def _measure(self, flow: http.HTTPFlow, followed: Followed | None) -> tuple[Usage, bool, str, str | None]:
        """(usage, whether it is charged, outcome, model the provider reported) for a flow that has ended."""
        call = flow.metadata[chain.CALL]
        if chain.REFUSED in flow.metadata:  # an unreachable upstream: pouch answered, nothing was sent
            return Usage(), False, "not_sent" if flow.metadata[chain.REFUSED]["kind"] == "upstream" else "refused", None
        if chain.MOCK in flow.metadata:
            return Usage(**flow.metadata[chain.MOCK]), False, "mock", None
        if flow.response is not None and flow.response.status_code >= 400:
            return Usage(), False, "upstream_error", None
        if followed is not None:
            usage, reported = followed.tracker.usage(), followed.tracker.model()
            if usage is not None:
                return usage, True, "ok" if flow.error is None else "cut_after_usage", reported
            if flow.error is None:  # a whole stream, but the provider reported no usage
                return Usage(), True, "no_usage", reported
            # Cut short before the provider's usage: it bills what it generated, and some of
            # that is never seen (hidden reasoning, tool rounds, what it generated after the
            # client left). The reservation is charged; the row keeps what was seen.
            seen = count_text(call["model"], followed.tracker.output_text())
            return Usage(input_tokens=call.get("input_tokens", 0), output_tokens=seen), True, "cut_short", reported
        if flow.response is not None:
            provider = chain.provider_of(flow)
            endpoint = chain.endpoint_of(flow)
            try:
                body = json.loads(flow.response.get_content(strict=False) or b"null")
            except (ValueError, RecursionError):
                body = None
            # Gemini answers a streamed request that pouch could not follow with a JSON array.
            usage, reported = provider.usage_from_body(endpoint, body) if isinstance(body, dict | list) else (None, None)
            return (usage, True, "ok", reported) if usage is not None else (Usage(), True, "no_usage", reported)
        if not sent_upstream(flow):
            return Usage(), False, "not_sent", None
        # Sent, and no answer came back: the provider finishes (and bills) a generation the
        # client left, and an aborted one may have billed anything up to the worst case.
        client_left = "server" not in (flow.error.msg if flow.error else "").lower()
        outcome = "abandoned" if client_left and not call["stream"] else "cut_short"
        return Usage(input_tokens=call.get("input_tokens", 0)), True, outcome, None

    @staticmethod
    def _row(flow: http.HTTPFlow, followed: Followed | None, usage: Usage, outcome: str, would_cost: Money) -> dict:
        key, call, response = flow.metadata.get(chain.KEY), flow.metadata[chain.CALL], flow.response
        started = flow.request.timestamp_start
        ended = response.timestamp_end if response is not None and response.timestamp_end else time.time()
        first = followed.first_byte if followed else (response.timestamp_start if response is not None else None)
        return {
            "ts": datetime.fromtimestamp(started, UTC),
            "key": key["id"] if key else None,
            "key_name": key["name"] if key else f"observed:{flow.metadata[chain.OBSERVED]}",
            "provider": flow.metadata[chain.PROVIDER],
            "model": call["model"],
            "endpoint": flow.metadata[chain.ENDPOINT]["name"],
            "status": response.status_code if response is not None else None,
            "streamed": bool(call["stream"]),
            **{f.name: getattr(usage, f.name) for f in dataclasses.fields(usage) if f.name != "tool_calls"},
            "tool_calls": dict(usage.tool_calls) or None,
            "cost_pico": would_cost.pico,
            "latency_ms": round((ended - started) * 1000),
            "ttft_ms": round((first - started) * 1000) if first else None,
            "mock": chain.MOCK in flow.metadata,
            "observed": key is None,
            "request_id": (response.headers.get("x-request-id") or response.headers.get("request-id"))
            if response is not None else None,
            "outcome": outcome,
        }
