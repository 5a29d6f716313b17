"""The budget levels around a key, checked after a run has settled: each team, each key's end
users, and the gateway's ceiling (pouch_budget_total), like the key's own budget in checks.py.

1. no window of a level holds spent + reserved above its budget, plus what overruns of its
   requests charged above their reservations (to the unit: an admission keeps spent +
   reserved within every level's budget, only a settlement above its reservation can pass it)
3. nothing left reserved at any level
4. a level's ledger spent == the cost of its usage rows (a team's: UsageRow.team; an end
   user's: the key's rows with that end_user; the ceiling's: the rows of the keys sent through
   the gateway that has it), and each row names the team and the end user its request had
9. every budget refusal names, in the client's message, a level its request belongs to, at
   that level's budget, with too little left for the request; a request without the end
   user its key requires is refused for that
"""

from __future__ import annotations

import collections
import dataclasses
import re
from decimal import Decimal

from pouch.domain.money import Money
from pouch.store.database import BudgetLedgerRow, UsageRow

from .checks import RunKey, Violation
from .plan import TeamSpec
from .send import Outcome

TOTAL = "total"
TOTAL_WHO = "the gateway (pouch_budget_total)"
EXHAUSTED = re.compile(r"^budget of (?P<who>.+) exhausted: (?P<spent>\S+) spent(?: and (?P<held>\S+) held by "
                       r"requests in flight)? of (?P<budget>\S+) \(period [^)]*\); this request may cost up to "
                       r"(?P<needed>\S+)$")


@dataclasses.dataclass(frozen=True)
class RunTeam:
    spec: TeamSpec
    id: int
    name: str
    budget: Money

    @property
    def scope(self) -> str:
        return f"team:{self.id}"


@dataclasses.dataclass(frozen=True)
class Ceiling:
    """The gateway's ceiling during a run: its pouch_budget_total, and what the ceiling's
    ledger had spent before the run (it spans runs: period none)."""

    budget: Money
    spent_before: Money


@dataclasses.dataclass
class LevelReport:
    kind: str  # "team", "users" (the end users of one key), "total"
    name: str  # the team's, the key's role (its end users), "pouch_budget_total"
    budget: Money | None  # each end user's, for "users"
    members: int = 0  # keys of a team or under the ceiling; end users seen
    rows: int = 0
    spent: Money = Money(0)
    excess: Money = Money(0)  # what overruns charged above their reservations
    refused: int = 0  # refusals naming this level (for "users": any of its end users)
    exhausted: int = 0  # levels (end users) that refused at least once
    violations: list[Violation] = dataclasses.field(default_factory=list)

    def fail(self, invariant: int, message: str) -> None:
        self.violations.append(Violation(invariant, f"{self.kind} {self.name}", message))


def excess_of(rows) -> Money:
    return Money(sum(r.cost_pico - r.reserved_pico for r in rows if r.outcome == "overrun"))


def charged(rows) -> Money:
    return Money(sum(r.cost_pico for r in rows if not r.mock))


def check_windows(report: LevelReport, windows, budget: Money | None, excess: Money, who: str) -> None:
    """1 and 3 for the ledger rows (windows) of one level."""
    for window in windows:
        if window.reserved_pico:
            report.fail(3, f"{who}: {Money(window.reserved_pico).json()} still reserved in the window from "
                           f"{window.window_start:%H:%M:%S}")
        over = window.spent_pico + window.reserved_pico - (budget.pico if budget is not None else 0)
        if budget is not None and over > excess.pico:
            report.fail(1, f"{who}: spent {Money(window.spent_pico).json()} + reserved "
                           f"{Money(window.reserved_pico).json()} > budget {budget.json()} (over by "
                           f"{Money(over).json()}, overruns charged {excess.json()} above their reservations)")


def check_team(team: RunTeam, members: list[RunKey]) -> LevelReport:
    report = LevelReport("team", team.name, team.budget, members=len(members))
    ids = [k.id for k in members]
    rows = list(UsageRow.select().where(UsageRow.team == team.name))
    theirs = list(UsageRow.select().where(UsageRow.key.in_(ids)))
    if {r.id for r in rows} != {r.id for r in theirs}:
        strays = {r.key_name for r in rows if r.key_id not in ids}
        unnamed = sum(r.team != team.name for r in theirs)
        report.fail(4, f"rows naming the team are not its keys' rows: {len(strays)} other keys' "
                       f"({sorted(strays)[:3]}), "
                       f"{unnamed} of its keys' rows without it")
    windows = list(BudgetLedgerRow.select().where(BudgetLedgerRow.scope == team.scope))
    report.rows, report.excess = len(rows), excess_of(rows)
    report.spent = Money(sum(w.spent_pico for w in windows))
    if report.spent != charged(rows):
        report.fail(4, f"ledger spent {report.spent.json()} != its rows' cost {charged(rows).json()}")
    check_windows(report, windows, team.budget, report.excess, "the team")
    return report


def check_end_users(key: RunKey) -> LevelReport:
    """The end users of one key that gives them budgets, each its own level."""
    report = LevelReport("users", key.spec.role, key.user_budget)
    rows = list(UsageRow.select().where(UsageRow.key == key.id))
    by_user = collections.defaultdict(list)
    for row in rows:
        if row.end_user is not None:
            by_user[row.end_user].append(row)
    prefix = f"user:{key.id}:"
    windows = collections.defaultdict(list)
    for window in BudgetLedgerRow.select().where(BudgetLedgerRow.scope.startswith(prefix)):
        windows[window.scope[len(prefix):]].append(window)
    if key.user_budget is None:
        if windows:
            report.fail(4, f"end users of a key without end-user budgets have ledgers: {sorted(windows)[:5]}")
        return report
    report.members, report.rows = len(by_user.keys() | windows.keys()), sum(map(len, by_user.values()))
    for user in sorted(by_user.keys() | windows.keys()):
        theirs, excess = by_user.get(user, []), excess_of(by_user.get(user, []))
        spent = Money(sum(w.spent_pico for w in windows.get(user, ())))
        report.spent += spent
        report.excess += excess
        if spent != charged(theirs):
            report.fail(4, f"end user {user!r}: ledger spent {spent.json()} != its rows' cost {charged(theirs).json()}")
        check_windows(report, windows.get(user, ()), key.user_budget, excess, f"end user {user!r}")
    if key.spec.require_user and None in {r.end_user for r in rows}:
        report.fail(9, f"{sum(r.end_user is None for r in rows)} row(s) without an end user, which the key requires")
    return report


def check_attribution(key: RunKey, team: RunTeam | None, mine: list[Outcome], by_request_id) -> list[Violation]:
    """4: the row of each request the client can pair with it names the end user the request
    named (the header over the SDK's field) and the key's team."""
    found = []
    for o in mine:
        rows = by_request_id.get(o.request_id, []) if o.request_id and o.result != "refused" else []
        if len(rows) != 1:
            continue  # checks.py flags a request without exactly one row
        row = rows[0]
        expected = (o.planned.end_user, team.name if team else None)
        if (row.end_user, row.team) != expected:
            found.append(Violation(4, key.name, f"{o.planned.id} (end user sent as {o.planned.user_via or '-'}): "
                                                f"row {row.id} names end user {row.end_user!r} and team {row.team!r}, "
                                                f"not {expected[0]!r} and {expected[1]!r}"))
    return found


def check_total(keys: list[RunKey], ceiling: Ceiling) -> LevelReport:
    members = [k for k in keys if k.spec.ceiling]
    report = LevelReport("total", "pouch_budget_total", ceiling.budget, members=len(members))
    rows = list(UsageRow.select().where(UsageRow.key.in_([k.id for k in members])))
    windows = list(BudgetLedgerRow.select().where(BudgetLedgerRow.scope == TOTAL))
    report.rows, report.excess = len(rows), excess_of(rows)
    report.spent = Money(sum(w.spent_pico for w in windows)) - ceiling.spent_before
    if report.spent != charged(rows):
        report.fail(4, f"ledger spent {report.spent.json()} this run != the ceiling keys' rows' cost "
                       f"{charged(rows).json()}")
    check_windows(report, windows, ceiling.budget, report.excess, "the ceiling")
    report.budget = ceiling.budget - ceiling.spent_before  # this run's share, beside this run's spend
    return report


def levels_of(o: Outcome, key: RunKey, team: RunTeam | None, ceiling: Ceiling | None) -> dict[str, tuple[str, Money]]:
    """Who may refuse ``o`` for its budget: what the message names -> (level kind, its budget)."""
    found = {}
    if key.budget is not None:
        found[f"key '{key.name}'"] = ("key", key.budget)
    if team is not None and team.budget is not None:
        found[f"team '{team.name}'"] = ("team", team.budget)
    if o.planned.end_user is not None and key.user_budget is not None:
        found[f"end user '{o.planned.end_user}' of key '{key.name}'"] = ("user", key.user_budget)
    if o.planned.via == "ceiling" and ceiling is not None:
        found[TOTAL_WHO] = ("total", ceiling.budget)
    return found


def usd(text: str) -> Decimal | None:
    """An amount as a message shows it; None where it is rounded to cents (a dollar or more)."""
    value = Decimal(text.removeprefix("$").replace(",", ""))
    return None if value >= 1 else value


def check_refusals(key: RunKey, team: RunTeam | None, ceiling: Ceiling | None, mine: list[Outcome],
                   counts: collections.Counter) -> list[Violation]:
    """9: each budget refusal names a level of its request, at that level's budget, with too
    little left; ``counts`` gains the refusals per level kind (and per end user)."""
    found = []

    def fail(o: Outcome, message: str) -> None:
        found.append(Violation(9, key.name, f"{o.planned.id} {o.planned.kind}: {message}"))

    for o in mine:
        if o.result != "refused":
            continue
        if o.reason == "request" and o.planned.user_via == "missing" and o.planned.fault != "bad_body":
            if f"key '{key.name}' requires an end-user id" not in o.message:
                fail(o, f"refused without naming the missing end user: {o.message[:200]!r}")
            continue
        if o.reason != "budget":
            continue
        matched = EXHAUSTED.match(o.message)
        if not matched:
            fail(o, f"a budget refusal that names no level: {o.message[:200]!r}")
            continue
        levels = levels_of(o, key, team, ceiling)
        if matched["who"] not in levels:
            fail(o, f"refused by {matched['who']}, not a level of this request ({sorted(levels)})")
            continue
        kind, budget = levels[matched["who"]]
        counts[kind] += 1
        if kind == "user":
            counts["user:" + o.planned.end_user] += 1
        if matched["budget"] != str(budget):
            fail(o, f"refused by {matched['who']} at a budget of {matched['budget']}, but it is {budget}")
            continue
        amounts = [usd(matched[name] or "$0") for name in ("spent", "held", "needed", "budget")]
        if None not in amounts and amounts[0] + amounts[1] + amounts[2] <= amounts[3]:
            fail(o, f"refused by {matched['who']}, though the request fitted: {o.message}")
    return found


def check_levels(keys: list[RunKey], teams: dict[str, RunTeam], ceiling: Ceiling | None,
                 outcomes: list[Outcome]) -> tuple[list[LevelReport], list[Violation]]:
    """The reports of every level but the keys', and the violations found key by key."""
    reports, found = [], []
    by_request_id = collections.defaultdict(list)
    for row in UsageRow.select().where(UsageRow.key.in_([k.id for k in keys]), UsageRow.request_id.is_null(False)):
        by_request_id[row.request_id].append(row)
    counts = {k.spec.role: collections.Counter() for k in keys}
    by_role = collections.defaultdict(list)
    for o in outcomes:
        by_role[o.planned.role].append(o)
    for key in keys:
        team = teams.get(key.spec.team) if key.spec.team else None
        mine = by_role[key.spec.role]
        found += check_refusals(key, team, ceiling, mine, counts[key.spec.role])
        found += check_attribution(key, team, mine, by_request_id)
    for team in teams.values():
        members = [k for k in keys if k.spec.team == team.spec.role]
        report = check_team(team, members)
        report.refused = sum(counts[k.spec.role]["team"] for k in members)
        report.exhausted = int(report.refused > 0)
        reports.append(report)
    for key in keys:
        report = check_end_users(key)
        if key.user_budget is not None:
            report.refused = counts[key.spec.role]["user"]
            report.exhausted = sum(1 for name in counts[key.spec.role] if name.startswith("user:"))
            reports.append(report)
        else:
            found += report.violations
    if ceiling is not None:
        report = check_total(keys, ceiling)
        report.refused = sum(c["total"] for c in counts.values())
        report.exhausted = int(report.refused > 0)
        reports.append(report)
    return reports, found
