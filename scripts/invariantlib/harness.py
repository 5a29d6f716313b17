"""One invariant run: fresh keys, a seeded plan of faulty requests fired concurrently through
one real gateway (or ``pouch run --workers N`` on PostgreSQL, one of whose workers may be
SIGKILLed mid-run), a wait until the gateway has settled, then the checks and a summary."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import threading
import time
from pathlib import Path

from pouch.domain.money import Money
from pouch.services import keys as key_service
from pouch.services import teams as team_service
from pouch.store.database import BudgetLedgerRow, ReservationRow, UsageRow
from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.gemini_fake import FakeGemini
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import REAL_KEYS, Gateway

from . import levels, plan, probes, ratelog
from .checks import KeyReport, RunKey, Upstream, Violation, check_credentials, check_run
from .kinds import HOSTS
from .send import Outcome, fire
from .watch import ScopeLimits, Watch
from .workers import Workers, fresh_database

SETTLE_TIMEOUT = 30.0  # seconds the gateway may take to close every reservation after the last client
KILLED_WORKER = 2  # the worker --kill-worker SIGKILLs
KILL_AT = 0.3  # ... once the fakes have received this share of the run's requests
KILL_GRACE = 3.0  # seconds after the worker serves again in which a client may still meet its old connection
# Seconds before the kill in which an answer may have ended whose settlement the killed process had
# not committed yet: its row may be a recovered one (bounded anyway by the recovered rows' count).
SETTLE_LAG = 10.0
QUIET = 1.0  # the store must look the same this long to count as settled (slowest fake delay: 1 s)


class Environment:
    """The three fakes (threads of this process, so their records can be read) and one gateway
    routed to them, trusting their CAs: mitmdump on ``db_url`` (default: a SQLite file of its
    own), or with ``workers`` ``pouch run --workers N`` on it (PostgreSQL). The database is
    emptied first: give one the harness owns."""

    def __init__(self, workdir: Path, db_url: str | None = None, workers: int = 0):
        self.workdir, self.db_url, self.workers = workdir, db_url, workers
        tls = workdir / "tls"
        self.fakes = {name: fake(tls_dir=tls / name) for name, fake in
                      (("openai", FakeOpenAI), ("anthropic", FakeAnthropic), ("gemini", FakeGemini))}
        self.bundle = tls / "cas.pem"
        self.bundle.write_text("".join(fake.ca_path.read_text() for fake in self.fakes.values()))
        self.routes = {HOSTS[name]: fake.url for name, fake in self.fakes.items()}
        if workers:
            self.gateway = Workers(workdir / "gateway", self.routes, str(self.bundle), db_url, workers)
        else:
            self.gateway = Gateway(workdir / "gateway", self.routes, str(self.bundle),
                                   {"pouch_db": db_url} if db_url else None)
        self.ceiling: Gateway | None = None

    def __enter__(self) -> Environment:
        if self.db_url and not self.db_url.startswith("sqlite"):
            fresh_database(self.db_url)
        for fake in self.fakes.values():
            fake.start()
        self.gateway.start()
        self.gateway.open_store()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_ceiling()
        self.gateway.stop()
        for fake in self.fakes.values():
            fake.stop()

    def start_ceiling(self, index: int, total: Money) -> Gateway:
        """A second gateway on the same store whose pouch_budget_total is ``total`` (period
        none: its ledger spans runs, so each run's gateway gets what was spent plus the run's
        share). The ceiling keys' requests go through it; no other request reserves at the
        ceiling, so its ledger is theirs alone."""
        self.stop_ceiling()
        options = {"pouch_db": self.gateway.db_url, "pouch_instance": f"invariants-ceiling-{index}",
                   "pouch_budget_total": total.json(), "pouch_budget_total_period": "none"}
        self.ceiling = Gateway(self.workdir / f"ceiling-{index}", self.routes, str(self.bundle), options).start()
        return self.ceiling

    def stop_ceiling(self) -> None:
        if self.ceiling is not None:
            self.ceiling.stop()
            self.ceiling = None

    def upstream(self) -> Upstream:
        credentials = {"openai": REAL_KEYS["OPENAI_API_KEY"], "anthropic": REAL_KEYS["ANTHROPIC_API_KEY"],
                       "gemini": REAL_KEYS["GEMINI_API_KEY"]}
        return Upstream({name: fake.requests for name, fake in self.fakes.items()}, credentials)


@dataclasses.dataclass
class RunResult:
    index: int
    seed: int
    requests: int
    concurrency: int
    seconds: float
    settle_seconds: float
    reports: list[KeyReport]
    levels: list[levels.LevelReport]  # teams, end users, the ceiling
    general: list[Violation]  # not about one key
    keys: list[RunKey]
    teams: dict[str, levels.RunTeam]
    ceiling: levels.Ceiling
    outcomes: list[Outcome]
    upstream_requests: int
    tool_rows: list[dict]  # the tool_calls of every usage row that has some
    token_probes: dict[str, int]  # tpm key -> probes it admitted once the run had settled
    scopes: list[ratelog.ScopeReport] = dataclasses.field(default_factory=list)  # limited scopes, from the store
    samples: int = 0  # snapshots of the store the watch took
    workers: int = 0  # gateway processes behind HAProxy (0: one mitmdump)
    kill: Kill | None = None

    @property
    def violations(self) -> list[Violation]:
        return self.general + [v for r in (*self.reports, *self.levels, *self.scopes) for v in r.violations]

    @property
    def overruns(self) -> int:
        return sum(r.overruns for r in self.reports)

    @property
    def injected(self) -> int:
        return sum(r.injected for r in self.reports)


@dataclasses.dataclass
class Kill:
    """A worker SIGKILLed mid-run and started again by pouch's supervisor."""

    worker: int
    pid: int = 0
    at: float = 0.0  # time.time() of the SIGKILL
    back: float = 0.0  # time.time() once it served again
    error: str = ""
    unanswered: int = 0  # requests whose connection broke in between (excused)
    recovered: int = 0  # usage rows of reservations it left open, charged in full at its restart


def create_teams(index: int, seed: int, shares: collections.Counter) -> dict[str, levels.RunTeam]:
    teams = {}
    for spec in plan.TEAMS:
        members = [k for k in plan.KEYS if k.team == spec.role]
        budget = plan.level_budget_of(spec, members, shares)
        team = team_service.create(f"inv-s{seed}-r{index}-{spec.role}", budget=budget.json(), period=spec.period,
                                   rpm=spec.rpm, tpm=spec.tpm, max_concurrent=spec.max_concurrent)
        teams[spec.role] = levels.RunTeam(spec, team.id, team.name, budget)
    return teams


def create_keys(index: int, seed: int, shares: collections.Counter,
                teams: dict[str, levels.RunTeam]) -> dict[str, RunKey]:
    keys = {}
    for spec in plan.KEYS:
        budget = plan.budget_of(spec, shares[spec.role])
        user_budget = plan.user_budget_of(spec, shares[spec.role])
        key, secret = key_service.create(
            f"inv-s{seed}-r{index}-{spec.role}", budget=budget.json() if budget else None, rpm=spec.rpm,
            tpm=spec.tpm, max_concurrent=spec.max_concurrent, mock=spec.mock or None, models=spec.models,
            period=spec.period, team=teams[spec.team].name if spec.team else None,
            user_budget=user_budget.json() if user_budget else None, user_period=spec.user_period,
            require_user=spec.require_user or None, user_rpm=spec.user_rpm)
        keys[spec.role] = RunKey(spec, key.id, key.name, secret, budget, user_budget)
    return keys


def ceiling_of(shares: collections.Counter) -> levels.Ceiling:
    """This run's ceiling: what earlier runs spent under it, plus this run's share."""
    members = [k for k in plan.KEYS if k.ceiling]
    share = plan.level_budget_of(plan.CEILING, members, shares)
    before = Money(sum(w.spent_pico for w in BudgetLedgerRow.select().where(BudgetLedgerRow.scope == levels.TOTAL)))
    return levels.Ceiling(before + share, before)


def draw_roles(rng: random.Random, n: int) -> list[str]:
    """Which key each request uses, in bursts: a few consecutive requests for the same key go
    out together, so a key's budget and limits meet simultaneous arrivals."""
    longest = max(1, min(16, n // 100))  # a short run still spreads over every key
    roles: list[str] = []
    while len(roles) < n:
        spec = rng.choices(plan.KEYS, weights=[k.weight for k in plan.KEYS])[0]
        roles += [spec.role] * min(rng.randint(1, longest), n - len(roles))
    return roles


def settle(env: Environment, key_ids: list[int]) -> float:
    """Wait until no reservation of these keys is open and nothing has changed for QUIET seconds
    (a client that hung up may leave its request still on its way through the gateway)."""
    started = time.monotonic()
    last = None
    while time.monotonic() - started < SETTLE_TIMEOUT:
        state = (ReservationRow.select().where(ReservationRow.key.in_(key_ids)).count(),
                 UsageRow.select().where(UsageRow.key.in_(key_ids)).count(),
                 sum(len(fake.requests) for fake in env.fakes.values()))
        if state[0] == 0 and state == last:
            break
        last = state
        time.sleep(QUIET)
    return time.monotonic() - started


def default_deadline(requests: int) -> float:
    """Seconds a run may take: ten times what this 2-core machine needs."""
    return 60 + requests / 20


def run_once(env: Environment, index: int, requests: int, concurrency: int, seed: int,
             deadline: float | None = None, kill: bool = False) -> RunResult:
    """One run; ``kill``: SIGKILL worker KILLED_WORKER once the run is under way (needs workers)."""
    rng = random.Random(f"{seed}-{index}")
    roles = draw_roles(rng, requests)
    shares = collections.Counter(roles)
    teams = create_teams(index, seed, shares)
    keys = create_keys(index, seed, shares, teams)
    ceiling = ceiling_of(shares)
    ceiling_gateway = env.start_ceiling(index, ceiling.budget)
    for fake in env.fakes.values():
        fake.reset()
    planned = [plan.plan_request(rng, i, index, keys[role].spec, keys[role].secret,
                                 ceiling_gateway if keys[role].spec.ceiling else env.gateway)
               for i, role in enumerate(roles)]
    exact, prefixes, members = limited_scopes(keys, teams)
    budgets = {k.id: k.budget.pico for k in keys.values() if k.budget and not k.spec.period and not k.spec.mock}
    watch = Watch(env.gateway.db_url, exact, prefixes, budgets).start()
    done, killed = threading.Event(), Kill(KILLED_WORKER) if kill else None
    killer = threading.Thread(target=kill_midway, args=(env, killed, requests, done), daemon=True)
    if killed:
        killer.start()
    started = time.monotonic()
    limit = started + (deadline or default_deadline(requests))
    try:
        outcomes = asyncio.run(fire(env.gateway, planned, concurrency, limit, ceiling=ceiling_gateway))
    finally:
        done.set()
        if killed:
            killer.join()
    seconds = time.monotonic() - started
    settle_seconds = settle(env, [k.id for k in keys.values()])
    watch.stop()
    env.stop_ceiling()
    upstream = env.upstream()
    excused = unsettled = frozenset()
    if killed and killed.back:
        unsettled = frozenset(o.planned.id for o in outcomes
                              if o.started <= killed.back + KILL_GRACE and o.ended >= killed.at - SETTLE_LAG)
        excused = frozenset(o.planned.id for o in outcomes if o.result in ("connection_error", "timeout")
                            and o.ended >= killed.at and o.started <= killed.back + KILL_GRACE)
        killed.unanswered = len(excused)
        killed.recovered = UsageRow.select().where(UsageRow.key.in_([k.id for k in keys.values()]),
                                                   UsageRow.outcome == "recovered").count()
    reports = check_run(list(keys.values()), outcomes, upstream, excused,
                        watch.spend_reached if env.workers else None, unsettled)
    level_reports, by_key = levels.check_levels(list(keys.values()), teams, ceiling, outcomes)
    refusals = collections.Counter(o.message.split(" is rate limited")[0] for o in outcomes
                                   if o.result == "refused" and o.reason == "rate")
    scopes = ratelog.check_scopes(exact, prefixes, list(watch.entries.values()), list(keys.values()), members,
                                  refusals, watch.most_in_flight, watch.owners)
    tool_rows = [row.tool_calls for row in UsageRow.select(UsageRow.tool_calls).where(
        UsageRow.key.in_([k.id for k in keys.values()]), UsageRow.tool_calls.is_null(False))]
    general = (check_credentials(list(keys.values()), upstream) + by_key
               + [Violation(5, scope, message) for scope, message in watch.problems]
               + check_recovered(env, keys, watch, killed)
               + probes.check_slots_freed(env, rng, index, keys))
    if sum(watch.counts.values()) > len(watch.problems):
        general.append(Violation(5, "-", f"... and {sum(watch.counts.values()) - len(watch.problems)} more "
                                         f"snapshots like those ({dict(watch.counts)})"))
    if watch.error is not None:
        general.append(Violation(0, "-", f"the store's watch failed: {watch.error!r}"))
    if killed and killed.error:
        general.append(Violation(0, "-", f"worker {killed.worker}: {killed.error}"))
    settled, token_probes = probes.check_tokens_settled(env, rng, index, keys, outcomes)
    general += settled
    if len(outcomes) < requests:
        general.append(Violation(6, "-", f"the gateway was too slow: {requests - len(outcomes)} requests "
                                 f"not sent within the run's {limit - started:.0f} s"))
    return RunResult(index, seed, requests, concurrency, seconds, settle_seconds, reports, level_reports, general,
                     list(keys.values()), teams, ceiling,
                     outcomes, sum(map(len, upstream.records.values())), tool_rows, token_probes,
                     scopes, watch.samples, env.workers, killed)


def check_recovered(env: Environment, keys: dict[str, RunKey], watch: Watch, killed: Kill | None) -> list[Violation]:
    """3 and 8: only a killed process leaves reservations to recover, and each is charged in
    full: its row costs the amount the watch saw it hold, and it was the killed process's."""
    found = []
    killed_name = env.gateway.instance(killed.worker) if killed else None
    for row in UsageRow.select().where(UsageRow.key.in_([k.id for k in keys.values()]),
                                       UsageRow.outcome == "recovered"):
        seen = watch.reservations.get(row.reservation_id)
        if seen is None:
            found.append(Violation(3, row.key_name, f"row {row.id} recovered reservation {row.reservation_id}, "
                                                    "which no snapshot saw open"))
            continue
        owner, amount = seen
        if owner != killed_name:
            found.append(Violation(3, row.key_name, f"row {row.id} recovered reservation {row.reservation_id} of "
                                                    f"{owner}, which was not killed"))
        if row.cost_pico != amount:
            found.append(Violation(8, row.key_name, f"row {row.id} recovered reservation {row.reservation_id} "
                                                    f"charging {row.cost_pico} pico, not the {amount} it held"))
    return found


def limited_scopes(keys: dict[str, RunKey], teams: dict[str, levels.RunTeam]):
    """The run's limited scopes as the store names them: (scope -> limits, end users' scope
    prefix -> their limits, key's or team's scope -> its keys' ids)."""
    exact, prefixes, members = {}, {}, {}
    for key in keys.values():
        spec = key.spec
        if spec.rpm or spec.tpm or spec.max_concurrent:
            exact[f"key:{key.id}"] = ScopeLimits(spec.rpm, spec.tpm, spec.max_concurrent, f"key '{key.name}'")
            members[f"key:{key.id}"] = {key.id}
        if spec.user_rpm:
            prefixes[f"user:{key.id}:"] = ScopeLimits(spec.user_rpm, None, None, f"key '{key.name}'")
    for team in teams.values():
        spec = team.spec
        if spec.rpm or spec.tpm or spec.max_concurrent:
            exact[team.scope] = ScopeLimits(spec.rpm, spec.tpm, spec.max_concurrent, f"team '{team.name}'")
            members[team.scope] = {k.id for k in keys.values() if k.spec.team == spec.role}
    return exact, prefixes, members


def kill_midway(env: Environment, killed: Kill, requests: int, done: threading.Event) -> None:
    """Once upstream has seen about KILL_AT of the run (about half the requests reach it),
    SIGKILL the worker and wait until pouch's supervisor has it serving again."""
    threshold = max(1, int(requests * KILL_AT / 2))
    while sum(len(fake.requests) for fake in env.fakes.values()) < threshold:
        if done.wait(0.05):
            killed.error = "the run ended before the kill"
            return
    try:
        killed.pid, served = env.gateway.kill(killed.worker)
        killed.at = time.time()
        killed.back = env.gateway.wait_restarted(killed.worker, killed.pid, served)
    except RuntimeError as e:
        killed.error = str(e)


# --- the summary -------------------------------------------------------------------------


def usd(money: Money | None) -> str:
    return "-" if money is None else f"{money.as_usd:.6f}"


def summary(result: RunResult, shown: int = 20) -> str:
    rate = result.requests / result.seconds if result.seconds else 0
    where = (f"pouch run --workers {result.workers} behind HAProxy" if result.workers else "one mitmdump")
    lines = [f"run {result.index} (seed {result.seed}, {where}): {result.requests} requests, concurrency "
             f"{result.concurrency}, {result.seconds:.1f} s ({rate:.0f}/s), settled in {result.settle_seconds:.1f} s"]
    header = (f"  {'key':<13}{'sent':>6}{'admit':>7}{'unkn':>6}{'rows':>6}{'faulty':>7}  {'spent $':>10}"
              f"{'budget $':>14}{'over $':>10}{'overrun':>9}{'viol':>5}  refused")
    lines.append(header)
    for r in result.reports:
        refused = " ".join(f"{reason}:{n}" for reason, n in sorted(r.refused.items())) or "-"
        faulty = r.sent - r.faults["none"]
        over = usd(r.overspend) if r.overspend else "-"
        budget = usd(r.budget) + (f"/{r.spec.period}" if r.spec.period and r.budget else "")
        overruns = f"{r.overruns}/{r.injected}" if r.overruns or r.injected else "-"
        lines.append(f"  {r.role:<13}{r.sent:>6}{r.admitted:>7}{r.unknown:>6}{r.rows:>6}{faulty:>7}  "
                     f"{usd(r.spent):>10}{budget:>14}{over:>10}{overruns:>9}{len(r.violations):>5}  {refused}")
    lines.append(f"  {'level':<26}{'members':>8}{'rows':>6}  {'spent $':>10}{'budget $':>15}{'over $':>10}"
                 f"{'refused':>9}{'bound':>7}{'viol':>5}")
    for r in result.levels:
        budget = usd(r.budget) + ("/user" if r.kind == "users" else "")
        over = usd(r.spent - r.budget) if r.kind != "users" and r.budget is not None and r.spent > r.budget else "-"
        lines.append(f"  {r.kind + ' ' + r.name[-20:]:<26}{r.members:>8}{r.rows:>6}  {usd(r.spent):>10}{budget:>15}"
                     f"{over:>10}{r.refused:>9}{r.exhausted:>7}{len(r.violations):>5}")
    lines += scope_lines(result)
    faults = sum((r.faults for r in result.reports), collections.Counter())
    outcomes = sum((r.outcomes for r in result.reports), collections.Counter())
    lines.append("  faults injected: " + " ".join(f"{f}:{n}" for f, n in faults.most_common()))
    results = collections.Counter(o.result for o in result.outcomes)
    lines.append("  client results: " + " ".join(f"{r}:{n}" for r, n in results.most_common())
                 + f" (HTTP/2: {sum(o.planned.http2 for o in result.outcomes)}, "
                 f"reverse mode: {sum(o.planned.reverse for o in result.outcomes)})")
    lines.append(f"  upstream received {result.upstream_requests} requests (refused ones, mock answers and "
                 "pouch keys among them are violations [7])")
    lines.append("  usage rows by outcome: " + " ".join(f"{o}:{n}" for o, n in outcomes.most_common()))
    lines.append(f"  overruns (flagged/injected): {result.overruns}/{result.injected}, charged "
                 f"{usd(sum((r.excess for r in result.reports), Money(0)))} above their reservations")
    lines.append("  tokens/min settled, probes admitted after the run: "
                 + (" ".join(f"{role}:{n}" for role, n in result.token_probes.items()) or "-"))
    spent = [f"{r.role} ({r.sent_after_spent} sent after)" for r in result.reports if r.sent_after_spent is not None]
    lines.append("  spend reached the budget, nothing admitted after: " + (", ".join(spent) or "-"))
    tools = collections.Counter()
    for row in result.tool_rows:
        tools.update(row)
    lines.append(f"  paid tool calls billed: {sum(tools.values())} in {len(result.tool_rows)} rows ("
                 + " ".join(f"{t}:{n}" for t, n in sorted(tools.items())) + ")")
    violations = result.violations
    lines.append(f"  violations: {len(violations)}")
    lines += [f"    {v}" for v in violations[:shown]]
    if len(violations) > shown:
        lines.append(f"    ... and {len(violations) - shown} more")
    return "\n".join(lines)


def scope_lines(result: RunResult) -> list[str]:
    """The limited scopes, as the store's rate log and the watch's snapshots saw them."""
    lines = [f"  {'limited scope':<34}{'rpm':>5}{'tpm':>6}{'conc':>5}{'admit':>7}{'refused':>8}{'max/min':>8}"
             f"{'tok/min':>8}{'in flight':>10}{'procs':>6}{'viol':>5}"]
    prefix = f"inv-s{result.seed}-r{result.index}-"
    for r in result.scopes:
        limits = r.limits
        counted = r.admitted if limits.rpm or limits.tpm else "-"  # the log has only requests that count
        lines.append(f"  {r.limits.who.replace(prefix, '')[:34]:<34}{limits.rpm or '-':>5}{limits.tpm or '-':>6}"
                     f"{limits.max_concurrent or '-':>5}{counted:>7}{r.refused:>8}{r.most_requests:>8}"
                     f"{r.most_tokens or '-':>8}{r.most_in_flight:>10}{r.workers:>6}{len(r.violations):>5}")
    lines.append(f"  the store watched in {result.samples} snapshots (requests in flight, slots, rate log)")
    if result.kill:
        k = result.kill
        lines.append(f"  worker {k.worker} (pid {k.pid}) SIGKILLed mid-run, serving again {k.back - k.at:.1f} s later: "
                     f"{k.unanswered} requests unanswered (connection broken), {k.recovered} reservations it left "
                     "open charged in full (rows 'recovered')" if k.back else
                     f"  worker {k.worker}: {k.error}")
    return lines
