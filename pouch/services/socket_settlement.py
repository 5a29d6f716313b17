"""Settling each response of a Responses WebSocket, once, by the rules an HTTP request settles by
(``pouch.rules.settlement``): its reservation closed with one usage row (endpoint
``responses.websocket``, streamed), its rate-limit slot and tokens/min given back, and a line of
its story for mitmweb.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.metrics.traffic import traffic
from pouch.pricing.price import Price
from pouch.rules import settlement
from pouch.rules.settlement import Ending
from pouch.services.instance import instance
from pouch.services.response_socket import Response, Socket
from pouch.services.store_thread import store_thread
from pouch.store import ledger
from pouch.store.database import LedgerRow, database

log = logging.getLogger(__name__)
SETTLE_RETRIES = 12  # as the usage link's: about 3.5 minutes of pauses, well inside pouch_hold
ENDPOINT = "responses.websocket"

# (usage, model, tool calls, provider, reported model, requested at, known price) -> (usage as billed, cost):
# the usage link's ``billed``, which prices an HTTP request the same way.
Bill = Callable[..., tuple[Usage, Money]]


def settle(socket: Socket, response: Response, ending: Ending, bill: Bill) -> dict:
    """Close ``response`` as ``ending`` says it ended; what was recorded (its ``result``)."""
    try:
        measured = settlement.measure(ending)
    except Exception:
        log.exception("pouch: measuring a WebSocket response failed; charging the full reservation")
        measured = settlement.Measured(Usage(), True, "measure_failed")
    call, reservation = response.call, response.reservation
    reserved = reservation.amount if reservation else None
    known = response.entry if isinstance(response.entry, Price) else None
    settled = settlement.settle(measured, reserved, lambda usage, reported: bill(
        usage, call.model, response.tool_calls, socket.provider.name, reported, response.requested_at, known))
    if settled.outcome == "overrun":
        log.warning("pouch: overrun: key %s was charged %s for a %s WebSocket response that reserved %s (usage %s)",
                    socket.who, settled.charge, call.model, reserved, settled.usage)
    row = _row(socket, response, ending, settled)
    if reservation is not None:
        # Retried while the store is unavailable (finish is idempotent), as the usage link does.
        store_thread.later(ledger.finish, reservation.id, settled.charge, row, settled.measured_tokens,
                           retries=SETTLE_RETRIES)
    elif socket.key is not None and settled.charge.pico:
        store_thread.later(_charge_unreserved, socket.key, settled.charge, row)
    else:
        store_thread.later(ledger.record, row)
    traffic.settled(row, settled.charge, response.entry)  # /metrics, as the usage link counts an HTTP request
    socket.settled += 1
    socket.cost_pico += settled.cost.pico
    socket.charged_pico += settled.charge.pico
    result = {
        "index": response.index, "lane": response.lane, "model": call.model, "response_id": response.response_id,
        **{f.name: getattr(settled.usage, f.name) for f in dataclasses.fields(settled.usage) if f.name != "tool_calls"},
        "tool_calls": dict(settled.usage.tool_calls),
        "cost_usd": settled.cost.json(), "charged_usd": settled.charge.json(), "outcome": settled.outcome,
        "reserved_usd": reserved.json() if reserved is not None else None,
        "output_capped": response.output_capped, "tools_capped": response.tools_capped,
        "latency_ms": row["latency_ms"], "ttft_ms": row["ttft_ms"],
    }
    socket.stories.append(result)
    return result


def _row(socket: Socket, response: Response, ending: Ending, settled: settlement.Settlement) -> dict:
    ended = time.time()
    first = response.first_event
    return {
        "ts": datetime.fromtimestamp(response.sent_at, UTC),
        "key": socket.key.id if socket.key else None,
        "key_name": socket.who,
        "provider": socket.provider.name,
        "model": response.call.model,
        "endpoint": ENDPOINT,
        "status": ending.status,
        "streamed": True,
        **{f.name: getattr(settled.usage, f.name) for f in dataclasses.fields(settled.usage) if f.name != "tool_calls"},
        "tool_calls": dict(settled.usage.tool_calls) or None,
        "cost_pico": settled.cost.pico,
        "latency_ms": round((ended - response.sent_at) * 1000),
        "ttft_ms": round((first - response.sent_at) * 1000) if first else None,
        "mock": response.mock is not None,
        "observed": socket.key is None,
        "request_id": response.response_id,
        "outcome": settled.outcome,
        "reserved_pico": response.reservation.amount.pico if response.reservation else None,
        **response.attribution.columns(socket.key),
    }


def _charge_unreserved(key, charge: Money, row: dict) -> None:
    """In the store thread: charge a response nothing was reserved for (a successor the server
    started on its own, when the operator allows unmetered steering) through a reservation of
    nothing, closed at once at its cost. A key already over its budget cannot be admitted even
    that: its spend goes up all the same, in the transaction that writes its row (outcome
    ``overrun``), because the provider billed it."""
    now = datetime.now(UTC)
    with database.atomic():
        held = ledger.reserve(key.id, key.window(now), Money(0), now, owner=instance.name or "pouch",
                              hold=ledger.LONGEST_REQUEST, endpoint=ENDPOINT)
        if isinstance(held, ledger.Refusal):
            log.error("pouch: overrun: key %s is over its budget and was charged %s more for a WebSocket response "
                      "nothing was reserved for", key.name, charge)
            LedgerRow.update(spent_pico=LedgerRow.spent_pico + charge.pico).where(
                (LedgerRow.key == key.id) & (LedgerRow.window_start == held.window_start)).execute()
            ledger.record({**row, "outcome": "overrun"}, charge)
            return
        ledger.finish(held.id, charge, row)
