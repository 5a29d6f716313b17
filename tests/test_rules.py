"""The money rules as pure functions: admission (what to reserve, or why not) and settlement
(what an ended request is charged, and its outcome) — every outcome, without mitmproxy."""

from __future__ import annotations

import datetime

import pytest

from pouch.domain.errors import ContextTooLong, ModelNotPriced, ModelRetired, ToolNotMetered
from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.pricing.price import Price, Retirement, cost
from pouch.pricing.reserve import Bounds
from pouch.rules import admission, settlement
from pouch.rules.settlement import Ending, Measured, measure, settle

M = Money.per_million
PRICE = Price(model="m", provider="openai", mode="chat", input=M("2"), output=M("10"), source="t",
              as_of=datetime.date(2026, 11, 27), max_input_tokens=1000, max_output_tokens=100,
              tool_fees=(("web_search", Money.usd("0.01")),))
GONE = Retirement(model="old", provider="openai", effective=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
                  use="m", source="t", as_of=datetime.date(2026, 11, 27))


# --- admission ---------------------------------------------------------------------------------

def test_the_plan_reserves_the_worst_case():
    plan = admission.plan(PRICE, "m", "openai", Bounds(10, 50), allow_unmetered=False)
    assert plan.amount == Money(10 * 2_000_000 + 50 * 10_000_000)  # 10 in at $2/M + 50 out at $10/M


def test_without_a_cap_the_models_maximum_output_is_reserved():
    assert admission.plan(PRICE, "m", "openai", Bounds(10, None), allow_unmetered=False).worst.max_output == 100


@pytest.mark.parametrize("entry, bounds, refusal, words", [
    (GONE, Bounds(10, 5), ModelRetired, "retired by openai on 2026-01-01: use m instead"),
    (None, Bounds(10, 5), ModelNotPriced, "no price for model 'x'"),
    (PRICE, Bounds(1001, 5), ContextTooLong, "more than the 1,000"),
    (PRICE, Bounds(10, 5, tool_calls=((("code_interpreter",), 1),)), ToolNotMetered, "code_interpreter"),
])
def test_what_cannot_be_budgeted_is_refused(entry, bounds, refusal, words):
    with pytest.raises(refusal, match=words):
        admission.plan(entry, "x", "openai", bounds, allow_unmetered=False)


def test_an_unmetered_tool_the_operator_allows_is_reserved_without_it():
    bounds = Bounds(10, 5, tool_calls=((("code_interpreter",), 1),))
    assert admission.plan(PRICE, "m", "openai", bounds, allow_unmetered=True).amount == Money(10 * 2_000_000 + 5 * 10_000_000)


def test_another_providers_tool_fees_do_not_count():
    bounds = Bounds(10, 5, tool_calls=((("web_search",), 1),))
    assert admission.plan(PRICE, "m", "openai", bounds, allow_unmetered=False).amount > Money.usd("0.01")
    with pytest.raises(ToolNotMetered, match="of openrouter"):
        admission.plan(PRICE, "m", "openrouter", bounds, allow_unmetered=False)


@pytest.mark.parametrize("left, has_cap, may_cap, expected", [
    (Money(10 * 2_000_000 + 7 * 10_000_000), False, True, 7),  # the output that fits
    (Money(10 * 2_000_000 + 7 * 10_000_000 + 1), False, True, 7),
    (Money(10 * 2_000_000 + 10_000_000 - 1), False, True, None),  # not one token fits
    (Money.usd("1"), True, True, None),  # the request set its own cap: refused, not changed
    (Money.usd("1"), False, False, None),  # capping is off
])
def test_a_request_that_does_not_fit_is_capped_to_what_fits(left, has_cap, may_cap, expected):
    plan = admission.plan(PRICE, "m", "openai", Bounds(10, None), allow_unmetered=False)
    assert admission.capped(plan, left, has_cap=has_cap, may_cap=may_cap) == expected
    if expected:
        assert admission.with_cap(plan, expected).amount <= left


# --- settlement: measure ------------------------------------------------------------------------

USAGE = Usage(input_tokens=10, output_tokens=5)


@pytest.mark.parametrize("ending, expected", [
    (Ending(refused="budget"), Measured(Usage(), False, "refused")),
    (Ending(refused="upstream"), Measured(Usage(), False, "not_sent")),
    (Ending(mock=USAGE, status=200), Measured(USAGE, False, "mock")),
    (Ending(status=500, usage=USAGE), Measured(Usage(), False, "upstream_error")),
    (Ending(status=200, usage=USAGE, reported="m-2026"), Measured(USAGE, True, "ok", "m-2026")),
    (Ending(status=200), Measured(Usage(), True, "no_usage")),
    (Ending(status=200, followed=True, usage=USAGE), Measured(USAGE, True, "ok")),
    (Ending(status=200, followed=True, usage=USAGE, error="client disconnected"),
     Measured(USAGE, True, "cut_after_usage")),
    (Ending(status=200, followed=True), Measured(Usage(), True, "no_usage")),
    (Ending(status=200, followed=True, error="client disconnected", input_tokens=10, seen_output=3),
     Measured(Usage(input_tokens=10, output_tokens=3), True, "cut_short")),
    (Ending(sent=False, error="connection refused"), Measured(Usage(), False, "not_sent")),
    (Ending(error="client disconnected", input_tokens=10), Measured(Usage(input_tokens=10), True, "abandoned")),
    (Ending(error="client disconnected", streamed=True, input_tokens=10),
     Measured(Usage(input_tokens=10), True, "cut_short")),
    (Ending(error="server disconnected", input_tokens=10), Measured(Usage(input_tokens=10), True, "cut_short")),
])
def test_measure(ending, expected):
    assert measure(ending) == expected


# --- settlement: settle -------------------------------------------------------------------------

def bill(usage, reported):
    return usage, cost(PRICE, usage)


RESERVED = Money(1_000_000_000)  # $0.001


@pytest.mark.parametrize("measured, charge, outcome, tokens", [
    (Measured(USAGE, True, "ok"), Money(10 * 2_000_000 + 5 * 10_000_000), "ok", 15),
    (Measured(USAGE, False, "mock"), Money(0), "mock", 15),
    (Measured(Usage(), False, "refused"), Money(0), "refused", 0),
    (Measured(Usage(), False, "upstream_error"), Money(0), "upstream_error", 0),
    (Measured(Usage(), True, "no_usage"), RESERVED, "no_usage", None),  # pouch cannot tell: the worst case
    (Measured(Usage(input_tokens=10), True, "abandoned"), RESERVED, "abandoned", None),
    (Measured(Usage(), True, "measure_failed"), RESERVED, "measure_failed", None),
    (Measured(Usage(input_tokens=10, output_tokens=3), True, "cut_short"), RESERVED, "cut_short", None),
    (Measured(Usage(input_tokens=100, output_tokens=200), True, "ok"), Money(100 * 2_000_000 + 200 * 10_000_000),
     "overrun", 300),  # above the reservation: charged in full, flagged
])
def test_settle(measured, charge, outcome, tokens):
    settled = settle(measured, RESERVED, bill)
    assert (settled.charge, settled.outcome, settled.measured_tokens) == (charge, outcome, tokens)


def test_a_mock_records_what_it_would_have_cost():
    settled = settle(Measured(USAGE, False, "mock"), RESERVED, bill)
    assert settled.cost == cost(PRICE, USAGE) and settled.charge == Money(0)


def test_without_a_reservation_an_observed_request_is_priced_by_its_usage():
    assert settle(Measured(Usage(), True, "no_usage"), None, bill).charge == Money(0)  # nothing reported, nothing known
    assert settle(Measured(USAGE, True, "ok"), None, bill).charge == cost(PRICE, USAGE)


def test_outcome_sets_are_disjoint():
    assert not settlement.WORST_CASE & settlement.MEASURED


class TestAllowed:
    """What a key may call at all, before anything is priced (HTTP and WebSocket alike)."""

    def call(self, model="gpt-4o-mini", tools=()):
        from pouch.providers.base import Call

        return Call(model=model, stream=False, max_output=None, unmetered_tools=tuple(tools))

    def key(self, models=(), team_models=None, require_user=False):
        from datetime import UTC, datetime

        from pouch.domain.keys import Key
        from pouch.domain.teams import Team

        now = datetime(2026, 11, 1, tzinfo=UTC)
        team = None if team_models is None else Team(7, "platform", now, now, models=team_models)
        return Key(1, "alice", "pouch-abc", "h", now, now, models=models, team=team, require_user=require_user)

    def test_a_model_outside_the_allowlist_is_refused(self):
        from pouch.domain.errors import ModelNotAllowed

        with pytest.raises(ModelNotAllowed, match="may not use model 'gpt-4o'"):
            admission.allowed(self.key(("gpt-4o-mini",)), self.call("gpt-4o"), allow_unmetered=False)
        admission.allowed(self.key(("gpt-4o-mini",)), self.call(), allow_unmetered=False)
        admission.allowed(None, self.call("anything"), allow_unmetered=False)  # observed: no allowlist

    def test_a_key_in_a_team_may_use_what_both_allow(self):
        from pouch.domain.errors import ModelNotAllowed

        both = self.key(("gpt-4o*",), team_models=("gpt-4o-mini", "claude-*"))
        admission.allowed(both, self.call("gpt-4o-mini"), allow_unmetered=False)
        with pytest.raises(ModelNotAllowed, match="team 'platform' may not use model 'gpt-4o'"):
            admission.allowed(both, self.call("gpt-4o"), allow_unmetered=False)
        with pytest.raises(ModelNotAllowed, match="key 'alice' may not use model 'claude-3'"):
            admission.allowed(both, self.call("claude-3"), allow_unmetered=False)
        admission.allowed(self.key(team_models=()), self.call("anything"), allow_unmetered=False)

    def test_a_key_requiring_an_end_user_refuses_a_request_without_one(self):
        from pouch.domain.errors import BadRequest

        with pytest.raises(BadRequest, match="key 'alice' requires an end-user id"):
            admission.identified(self.key(require_user=True), None)
        admission.identified(self.key(require_user=True), "u-1")
        admission.identified(self.key(), None)
        admission.identified(None, None)

    def test_unmetered_tools_only_when_the_operator_allows(self):
        from pouch.domain.errors import ToolNotMetered

        with pytest.raises(ToolNotMetered, match="code_interpreter bills"):
            admission.allowed(self.key(), self.call(tools=("code_interpreter",)), allow_unmetered=False)
        admission.allowed(self.key(), self.call(tools=("code_interpreter",)), allow_unmetered=True)
