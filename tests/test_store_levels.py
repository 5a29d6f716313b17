"""Budget levels beside a key's (the gateway's ceiling, a team, an end user): one transaction
admits at every level or at none, and settlement reaches every level exactly once."""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from pouch.domain.money import Money
from pouch.domain.periods import Period
from pouch.services.levels import levels
from pouch.store import keys, ledger, teams
from pouch.store.database import BudgetLedgerRow, ReservationRow, UsageRow

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOLD = timedelta(minutes=10)


def reserve(key, amount, user=None, total=None):
    key = keys.get(key.id)
    return ledger.reserve(key.id, key.window(NOW), Money(amount), NOW, owner="t", hold=HOLD,
                          levels=levels(key, user, NOW, total))


def settle(held, key, cost, user=None):
    key = keys.get(key.id)
    return ledger.finish(held.id, Money(cost), {"ts": NOW, "key": key.id, "key_name": key.name,
                                               "team": key.team.name if key.team else None, "end_user": user})


def level(scope):
    row = BudgetLedgerRow.get_or_none(BudgetLedgerRow.scope == scope)
    return (row.spent_pico, row.reserved_pico) if row else (0, 0)


def test_a_team_budget_binds_across_its_keys(any_store):
    team = teams.create("platform", NOW, budget=Money(100))
    a, _ = keys.create("a", NOW, budget=Money(80), team=team)
    b, _ = keys.create("b", NOW, budget=Money(80), team=team)
    first = reserve(a, 60)
    assert isinstance(first, ledger.Reservation) and first.remaining == Money(20)  # the team's 40 left binds less
    refusal = reserve(b, 41)
    assert isinstance(refusal, ledger.Refusal) and refusal.level.who == "team 'platform'"
    assert (refusal.budget, refusal.spent, refusal.reserved) == (Money(100), Money(0), Money(60))
    assert ledger.window_totals(b, NOW) == (Money(0), Money(0)), "the team refused: nothing held at the key"
    assert isinstance(reserve(b, 40), ledger.Reservation)
    assert level(team.scope) == (0, 100)
    assert settle(first, a, 25)
    assert level(team.scope) == (25, 40)
    assert ledger.window_totals(a, NOW) == (Money(25), Money(0))


def test_the_key_refusing_leaves_nothing_held_at_its_team_or_the_gateway(any_store):
    team = teams.create("platform", NOW, budget=Money(1000))
    key, _ = keys.create("a", NOW, budget=Money(10), team=team)
    refusal = reserve(key, 11, total=Money(1000))
    assert isinstance(refusal, ledger.Refusal) and refusal.level is None
    assert level(team.scope) == (0, 0) and level("total") == (0, 0)
    assert ReservationRow.select().count() == 0


def test_end_users_each_get_their_budget_within_the_key(any_store):
    key, _ = keys.create("app", NOW, budget=Money(100), user_budget=Money(30), user_period=Period("daily"))
    assert isinstance(reserve(key, 30, user="ann"), ledger.Reservation)
    refusal = reserve(key, 1, user="ann")
    assert refusal.level.who == "end user 'ann' of key 'app'" and refusal.level.period == "daily"
    bob = reserve(key, 30, user="bob")
    assert isinstance(bob, ledger.Reservation)
    assert settle(bob, key, 12, user="bob")
    assert level(key.user_scope("bob")) == (12, 0)
    assert isinstance(reserve(key, 18, user="bob"), ledger.Reservation)
    assert isinstance(reserve(key, 40, user="cy"), ledger.Refusal), "30 per user"
    assert isinstance(reserve(key, 29, user="cy"), ledger.Reservation), "the key had 100 - 12 - 30 - 18 = 40 left"
    by_key = reserve(key, 12, user="dee")
    assert by_key.level is None and by_key.budget == Money(100), "11 left at the key"
    assert level(key.user_scope("dee")) == (0, 0), "the key refused: nothing held for dee"
    # without a user budget on the key, end users have no level of their own
    plain, _ = keys.create("plain", NOW, budget=Money(100))
    assert levels(plain, "ann", NOW) == ()


def test_the_gateway_ceiling_binds_every_key(any_store):
    a, _ = keys.create("a", NOW)
    b, _ = keys.create("b", NOW)
    assert isinstance(reserve(a, 70, total=Money(100)), ledger.Reservation)
    refusal = reserve(b, 31, total=Money(100))
    assert refusal.level.who == "the gateway (pouch_budget_total)"
    assert (refusal.budget, refusal.reserved) == (Money(100), Money(70))


def test_a_team_budget_lowered_binds_at_once(any_store):
    team = teams.create("platform", NOW, budget=Money(100))
    key, _ = keys.create("a", NOW, team=team)
    stale = keys.get(key.id)  # what a gateway's key cache holds
    teams.update(team, NOW, budget=Money(10))
    refused = ledger.reserve(stale.id, stale.window(NOW), Money(11), NOW, owner="t", hold=HOLD,
                             levels=levels(stale, None, NOW))
    assert isinstance(refused, ledger.Refusal) and refused.budget == Money(10)


def test_recovery_charges_every_level_and_names_the_team_and_user(any_store):
    team = teams.create("platform", NOW, budget=Money(100))
    key, _ = keys.create("a", NOW, team=team, user_budget=Money(50))
    reserve(key, 20, user="ann")
    assert ledger.recover(NOW, owner="t") == 1
    assert level(team.scope) == (20, 0) and level(key.user_scope("ann")) == (20, 0)
    row = UsageRow.get()
    assert (row.outcome, row.team, row.end_user, row.cost_pico) == ("recovered", "platform", "ann", 20)


def test_bursts_over_a_team_and_its_end_users_never_overspend_any_level(any_store):
    team = teams.create("platform", NOW, budget=Money(1000))
    members = [keys.create(f"k{i}", NOW, budget=Money(600), team=team, user_budget=Money(150))[0] for i in range(3)]
    users = ["u1", "u2", "u3", "u4"]

    def one(i):
        key, user = members[i % 3], users[i % 4]
        held = reserve(key, 40, user=user, total=Money(900))
        if isinstance(held, ledger.Reservation):
            settle(held, key, 30 + i % 11, user=user)  # within the reservation
            return True
        return False

    with ThreadPoolExecutor(8) as pool:
        admitted = sum(pool.map(one, range(120)))
    rows = list(UsageRow.select())
    assert len(rows) == admitted and ReservationRow.select().count() == 0
    spent_team, held_team = level(team.scope)
    assert held_team == 0 and spent_team == sum(r.cost_pico for r in rows) <= 1000
    assert level("total") == (spent_team, 0) and spent_team <= 900
    for key in members:
        spent, held = ledger.window_totals(key, NOW)
        assert held == Money(0) and spent.pico == sum(r.cost_pico for r in rows if r.key_name == key.name) <= 600
        for user in users:
            mine = sum(r.cost_pico for r in rows if r.key_name == key.name and r.end_user == user)
            assert level(key.user_scope(user)) == (mine, 0) and mine <= 150
