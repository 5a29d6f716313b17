"""Invariant 8: every request is billed what its provider billed, request by request.

- A complete answer's row has the tokens the fake reported (prompt, tool rounds, reply,
  reasoning), the tool calls it made (the calls asked for, held to the bound it was sent, unless
  it was told to ignore bounds) and their fees, the reservation the harness works out itself
  (``expect.worst_case``), and outcome ``overrun`` exactly when that bill is above the
  reservation: an overrun only where one was injected, and every injected one flagged.
- Where the gateway cannot know what the provider billed (a stream cut short before its usage,
  an answer without usage, a client that left), the row is charged exactly its reservation.
- A tool request is sent upstream with a bound: its own, or the gateway's default, which the
  client is told of.

Rows are found by the provider's request id (OpenAI, Anthropic). Gemini sends none, so a key's
Gemini rows are paired with its Gemini requests as a whole, where its faults let the plan know
which requests were billed as reported.
"""

from __future__ import annotations

import collections
import json

from pouch.domain.money import Money
from pouch.tokens.count import count_prompt

from . import expect
from .kinds import DEFAULT_TOOL_CALLS, KINDS
from .send import Outcome

# charged their reservation ("recovered": left open by a gateway process that died)
WORST_CASE = {"cut_short", "no_usage", "abandoned", "measure_failed", "recovered"}
CLIENT_FAULTS = {"client_cancel", "client_close"}  # after which a complete answer may end either way
USAGE_ENDS_STREAM = {"openai", "anthropic"}  # their streams report the billed usage at the end only


def check_charges(rows, flag) -> None:
    """Each row is charged by its outcome: what the gateway cannot know at the reservation,
    an overrun above it, anything else within it."""
    for row in rows:
        if row.mock or row.reservation_id is None:
            continue
        where = f"row {row.id} ({row.endpoint}, {row.outcome}, request-id {row.request_id})"
        if row.reserved_pico is None:
            flag(f"{where}: no reserved amount recorded")
        elif row.outcome in WORST_CASE and row.cost_pico != row.reserved_pico:
            flag(f"{where}: charged {Money(row.cost_pico).json()}, not its reservation "
                                   f"{Money(row.reserved_pico).json()}")
        elif (row.outcome == "overrun") != (row.cost_pico > row.reserved_pico):
            flag(f"{where}: charged {Money(row.cost_pico).json()} of "
                                   f"{Money(row.reserved_pico).json()} reserved")


def check_requests(spec, key_id: int, mine: list[Outcome], by_request_id, reached, flag,
                   unsettled: frozenset[str] = frozenset(), recovered: int = 0) -> None:
    """Request by request where the client saw the provider's request id. A request whose
    gateway process was killed before it settled (``unsettled``: under way then; even a complete
    answer whose settlement had not committed) has its row among the key's ``recovered`` ones,
    which carry no request id (its reservation knew none): at most one each."""
    orphans = []
    for o in mine:
        if not o.request_id or o.result == "refused" or o.pouch_error:
            continue
        found = by_request_id.get(o.request_id, [])
        where = f"{o.planned.id} {o.planned.kind} fault={o.planned.fault} request-id {o.request_id}"
        if not found and o.planned.id in unsettled:
            orphans.append(o.planned.id)
            continue
        if len(found) != 1 or found[0].key_id != key_id:
            flag(f"{where}: {len(found)} usage rows (keys {[r.key_id for r in found]}), not one under key {key_id}",
                 2)
            continue
        row, records = found[0], reached.get(o.planned.id, ())
        if o.planned.tool and records:
            check_tool_bound(o, records[0].body, where, flag)
        if (o.result == "connection_error" and o.planned.fault == "abort" and o.planned.provider in USAGE_ENDS_STREAM
                and row.outcome != "cut_short"):
            flag(f"{where}: upstream died before its usage, but the row is {row.outcome}")
        if billed_as_reported(o, spec):
            expected = expected_row(o, records)
            seen = row_facts(row)
            if seen != expected:
                flag(f"{where}: row {describe(seen)}; the provider billed {describe(expected)}")
        if row.outcome == "overrun" and not o.planned.overrun:
            flag(f"{where}: an overrun nobody injected: {describe(row_facts(row))}")
    if len(orphans) > recovered:
        flag(f"{len(orphans)} requests of a killed gateway process saw their request id but have no row, and only "
             f"{recovered} recovered rows can be theirs: {orphans[:5]}", 2)


def check_tool_bound(o: Outcome, sent: dict, where: str, flag) -> None:
    """The provider was sent a bound on tool calls, and the client told when it was pouch's."""
    if o.planned.provider == "gemini":
        return  # Google's own bounds: nothing is sent
    tool = sent.get("tools", [{}])[0] if isinstance(sent, dict) else {}
    bound = sent.get("max_tool_calls") if o.planned.provider == "openai" else tool.get("max_uses")
    if bound != expect.bound_of(o.planned):
        flag(f"{where}: sent upstream with a tool bound of {bound}, not {expect.bound_of(o.planned)}")
    told = DEFAULT_TOOL_CALLS if o.planned.tool_bound is None else None
    if o.status is not None and o.status < 300 and o.tools_capped != told:
        flag(f"{where}: x-pouch-tool-calls-capped {o.tools_capped}, expected {told}")


def billed_as_reported(o: Outcome, spec) -> bool:
    """The client read a whole answer that reported usage: its bill is known."""
    return o.result == "response" and o.planned.fault != "no_usage" and not spec.mock


def expected_row(o: Outcome, records) -> tuple:
    planned = o.planned
    sent = records[0].body if records else expect.forwarded_body(planned)
    bill = expect.bill(planned, count_prompt(planned.model, sent, KINDS[planned.kind].api), o.text)
    reserved = expect.worst_case(planned, o.output_capped)
    outcome = "overrun" if bill.cost > reserved else "ok"
    return (outcome, bill.input_tokens, bill.cached_tokens, bill.output_tokens, bill.reasoning_tokens,
            tuple(sorted(bill.tool_calls.items())), bill.cost.pico, reserved.pico)


def row_facts(row) -> tuple:
    return (row.outcome, row.input_tokens, row.cached_tokens, row.output_tokens, row.reasoning_tokens,
            tuple(sorted((row.tool_calls or {}).items())), row.cost_pico, row.reserved_pico)


def describe(facts: tuple) -> str:
    outcome, input_tokens, cached, output, reasoning, tools, cost, reserved = facts
    return (f"{outcome}: {input_tokens} in ({cached} cached) + {output} out ({reasoning} reasoning), "
            f"tools {json.dumps(dict(tools))}, {Money(cost).json()} of {Money(reserved).json()} reserved")


def check_gemini_rows(spec, rows, mine: list[Outcome], reached, flag, unsettled: frozenset[str] = frozenset()) -> None:
    """Gemini rows carry no request id: where every Gemini request of the key either reads a
    whole answer or is billed without usage, its complete answers and its rows billed at usage
    are the same bills; but a complete answer ``unsettled`` when its gateway process died may
    have a recovered row instead (one each)."""
    if spec.mock or CLIENT_FAULTS & set(spec.faults or CLIENT_FAULTS):
        return
    expected = collections.Counter(expected_row(o, reached.get(o.planned.id, ())) for o in mine
                                   if o.planned.provider == "gemini" and billed_as_reported(o, spec))
    seen = collections.Counter(row_facts(r) for r in rows if r.provider == "gemini" and r.outcome in ("ok", "overrun"))
    for facts, n in (seen - expected).items():
        flag(f"{n} Gemini row(s) {describe(facts)}, billed for no complete answer")
    missing = expected - seen
    recovered = sum(r.provider == "gemini" and r.outcome == "recovered" for r in rows)
    may_be_recovered = sum(o.planned.provider == "gemini" and o.planned.id in unsettled and billed_as_reported(o, spec)
                           for o in mine)
    if sum(missing.values()) <= min(recovered, may_be_recovered):
        return
    for facts, n in missing.items():
        flag(f"{n} complete Gemini answer(s) billed {describe(facts)} have no such row")


def injected_overruns(mine: list[Outcome]) -> int:
    """Injected overruns the client read whole: each must be a row flagged ``overrun``."""
    return sum(o.planned.overrun and o.result == "response" for o in mine)
