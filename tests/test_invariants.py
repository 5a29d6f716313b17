"""The invariant harness (scripts/invariants), bounded: a few hundred requests of mixed faults
through one real gateway must break no invariant, nor through pouch run --workers 3 on
PostgreSQL (one worker SIGKILLed mid-run too); and the checks must see a broken store."""

import collections
import dataclasses
import os

import pytest

from pouch.cli import haproxy

from pouch.store.database import BudgetLedgerRow, LedgerRow, ReservationRow, UsageRow
from scripts.invariantlib import harness, levels, plan
from scripts.invariantlib.checks import check_run, most_at_once, most_within_a_minute, tokens_counted

REQUESTS = 300


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    with harness.Environment(tmp_path_factory.mktemp("invariants")) as env:
        yield env, harness.run_once(env, index=1, requests=REQUESTS, concurrency=24, seed=9)


@pytest.mark.timeout(180)
def test_no_invariant_breaks_under_load_faults_and_bad_input(run):
    _, result = run
    assert not result.violations, harness.summary(result)
    # not vacuous: every API and fault was tried, and the budgets and limits were met
    assert {o.planned.kind for o in result.outcomes} == set(plan.KINDS)
    assert {o.planned.fault for o in result.outcomes} == set(plan.FAULTS)
    refused = sum((r.refused for r in result.reports), collections.Counter())
    assert refused["budget"] and refused["rate"] and refused["request"] and refused["auth"]
    assert {o.result for o in result.outcomes} >= {"response", "refused", "upstream_error", "connection_error",
                                                   "cancelled", "closed"}
    # paid tools were called and billed, upstreams over-reported and were flagged, and a tpm key
    # without output caps admitted again once its worst cases had settled
    assert result.tool_rows and result.injected and result.overruns == result.injected
    assert result.token_probes.get("tpm-nocap")
    # teams, end users and the ceiling each had requests; a run this short may not exhaust them
    assert {r.kind for r in result.levels if r.rows} == {"team", "users", "total"}


def test_the_checks_see_a_store_that_breaks_them(run):
    env, result = run
    env.gateway.open_store()
    key = next(k for k in result.keys if k.spec.role == "oa-load")
    row = UsageRow.select().where(UsageRow.key == key.id).first()
    ledger = LedgerRow.get(LedgerRow.key == key.id)
    try:
        LedgerRow.update(spent_pico=LedgerRow.spent_pico + 1).where(LedgerRow.id == ledger.id).execute()
        ReservationRow.insert(id="leaked", key=key.id, ledger=ledger.id, amount_pico=5, created_at=row.ts,
                              deadline=row.ts, owner="test").execute()
        reports = check_run(result.keys, result.outcomes, env.upstream())
        found = {v.invariant for r in reports for v in r.violations if r.name == key.name}
        assert found >= {3, 4}
    finally:
        ReservationRow.delete().where(ReservationRow.id == "leaked").execute()
        LedgerRow.update(spent_pico=ledger.spent_pico).where(LedgerRow.id == ledger.id).execute()


def test_the_checks_see_wrong_bills(run):
    """A tool row short of a call, and an overrun nobody injected, break invariant 8."""
    env, result = run
    env.gateway.open_store()
    tools = next(k for k in result.keys if k.spec.role == "oa-tools")
    load = next(k for k in result.keys if k.spec.role == "oa-load")
    tool_row = UsageRow.get(UsageRow.key == tools.id, UsageRow.tool_calls.is_null(False), UsageRow.outcome == "ok")
    plain_row = UsageRow.get(UsageRow.key == load.id, UsageRow.outcome == "ok", UsageRow.request_id.is_null(False))
    try:
        UsageRow.update(tool_calls={name: calls - 1 for name, calls in tool_row.tool_calls.items()}).where(
            UsageRow.id == tool_row.id).execute()
        UsageRow.update(outcome="overrun").where(UsageRow.id == plain_row.id).execute()
        reports = {r.role: r for r in check_run(result.keys, result.outcomes, env.upstream())}
        assert any(v.invariant == 8 and "tools" in v.message for v in reports["oa-tools"].violations)
        assert any(v.invariant == 8 and "nobody injected" in v.message for v in reports["oa-load"].violations)
    finally:
        UsageRow.update(tool_calls=tool_row.tool_calls).where(UsageRow.id == tool_row.id).execute()
        UsageRow.update(outcome=plain_row.outcome).where(UsageRow.id == plain_row.id).execute()


def test_the_checks_see_levels_that_break_them(run):
    """A team's ledger off by a unit and holding a reservation, an end user's ledger off by a
    unit, and a refusal that names a level its request does not belong to, each break an
    invariant of levels.py."""
    env, result = run
    env.gateway.open_store()
    team = result.teams["team-a"]
    users = next(k for k in result.keys if k.spec.role == "users")
    team_window = BudgetLedgerRow.get(BudgetLedgerRow.scope == team.scope)
    user_window = BudgetLedgerRow.select().where(BudgetLedgerRow.scope.startswith(f"user:{users.id}:")).first()
    teamless = {k.role for k in plan.KEYS if not k.team}
    refused = next(o for o in result.outcomes if o.planned.role in teamless and o.message.startswith("budget of key"))
    misnamed = dataclasses.replace(refused, message=refused.message.replace("key '", f"team '{team.name}' of '", 1))
    outcomes = [misnamed if o is refused else o for o in result.outcomes]
    try:
        BudgetLedgerRow.update(spent_pico=BudgetLedgerRow.spent_pico + 1, reserved_pico=5).where(
            BudgetLedgerRow.id == team_window.id).execute()
        BudgetLedgerRow.update(spent_pico=BudgetLedgerRow.spent_pico + 1).where(
            BudgetLedgerRow.id == user_window.id).execute()
        reports, found = levels.check_levels(result.keys, result.teams, result.ceiling, outcomes)
        by_name = {(r.kind, r.name): r for r in reports}
        assert {v.invariant for v in by_name["team", team.name].violations} >= {3, 4}
        assert any(v.invariant == 4 for v in by_name["users", "users"].violations)
        assert any(v.invariant == 9 and refused.planned.id in v.message for v in found)
    finally:
        BudgetLedgerRow.update(spent_pico=team_window.spent_pico, reserved_pico=0).where(
            BudgetLedgerRow.id == team_window.id).execute()
        BudgetLedgerRow.update(spent_pico=user_window.spent_pico).where(BudgetLedgerRow.id == user_window.id).execute()


@pytest.mark.parametrize("spans, weights, expected", [
    ([], [], 0),
    ([(0, 1), (30, 31), (59, 59.5)], [1, 1, 1], 3),
    ([(0, 1), (30, 31), (60, 61)], [1, 1, 1], 2),  # a minute apart: the first has left the window
    ([(0, 70), (1, 2), (2, 3)], [1, 1, 1], 2),  # admitted some time in a long span: it proves nothing
    ([(0, 1), (1, 2)], [500, 700], 1200),
])
def test_most_within_a_minute(spans, weights, expected):
    assert most_within_a_minute(spans, weights) == expected


@pytest.mark.parametrize("spans, extras, expected", [
    ([(0, 1)], [16_000], 16_050),  # admitted alone, it counted its whole worst case
    ([(0, 1), (2, 3)], [16_000, 100], 200),  # either came last: the smaller worst case is what is proven
    ([(0, 1), (70, 71)], [16_000, 16_000], 16_050),  # a minute apart: never counted together
])
def test_most_within_a_minute_counts_the_last_admitted_at_its_worst(spans, extras, expected):
    assert most_within_a_minute(spans, [50] * len(spans), extras) == expected


@pytest.mark.parametrize("outcome, expected", [
    ("ok", (30 + 40, 30 + 12)),  # admitted at the cap, settled to what was reported
    ("upstream_error", (40, 0)),  # billed nothing: settled to none (the row shows no input)
    ("cut_short", (30 + 40, 30 + 40)),  # not knowable: the worst case stands
    ("no_usage", (40, 40)),
])
def test_tokens_counted(outcome, expected):
    spec = next(k for k in plan.KEYS if k.role == "tpm")
    shown = outcome in ("ok", "cut_short")
    row = UsageRow(model="gpt-4o-mini", provider="openai", outcome=outcome, input_tokens=30 if shown else 0,
                   output_tokens=12 if outcome == "ok" else 0)
    assert tokens_counted(spec, row) == expected


@pytest.mark.parametrize("spans, expected", [
    ([], 0),
    ([(0, 1), (0.5, 1.5), (2, 3)], 2),
    ([(0, 1), (1, 2)], 1),  # one ends as the next starts
    ([(0, 10), (1, 2), (3, 4), (3.5, 5)], 3),
])
def test_most_at_once(spans, expected):
    assert most_at_once(spans) == expected


def test_most_at_once_weighs_each_span():
    assert most_at_once([(0, 1), (0.5, 1.5), (1.5, 2)], [16_000, 17_000, 100]) == 33_000


# --- several gateway processes on PostgreSQL (issue 16) -------------------------------------

PG_URL = os.environ.get("POUCH_TEST_PG")
WORKER_REQUESTS = 500


@pytest.fixture(scope="module")
def workers_env(tmp_path_factory):
    if not PG_URL:
        pytest.skip("PostgreSQL not available (scripts/test starts it)")
    if haproxy.binary() is None:
        pytest.skip("haproxy not installed (scripts/bootstrap does)")
    url = PG_URL.rsplit("/", 1)[0] + "/pouch_invariants_test"  # its own database: emptied, never the tests'
    with harness.Environment(tmp_path_factory.mktemp("invariants-workers"), url, workers=3) as env:
        yield env


@pytest.mark.timeout(120)
def test_three_workers_on_postgresql_hold_limits_globally(workers_env):
    """pouch run --workers 3 behind HAProxy: the team's requests went through more than one
    process (HAProxy spreads connections; 500 requests do not always reach all three), its limits
    refused some, and no invariant broke (rates from the store's log, requests in flight from
    snapshots of it)."""
    result = harness.run_once(workers_env, index=1, requests=WORKER_REQUESTS, concurrency=24, seed=11)
    assert not result.violations, harness.summary(result)
    scopes = {r.scope: r for r in result.scopes}
    team = scopes[result.teams["team-lim"].scope]
    assert team.workers >= 2 and team.refused and team.most_in_flight == 3, harness.summary(result)
    assert sum(r.refused for r in result.scopes if r.limits.max_concurrent) and result.samples > 10


@pytest.mark.timeout(120)
def test_a_worker_killed_mid_run_breaks_no_invariant(workers_env):
    """Worker 2 SIGKILLed mid-run: pouch restarts it, it charges what it left open, its clients
    see broken connections (never a second bill), and every check still holds."""
    result = harness.run_once(workers_env, index=2, requests=WORKER_REQUESTS, concurrency=24, seed=11, kill=True)
    assert result.kill.back and result.kill.recovered, harness.summary(result)
    assert not result.violations, harness.summary(result)
