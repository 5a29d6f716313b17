"""The invariants, checked after a run has settled: from the store (keys, ledger, reservations,
usage rows), from what the fakes recorded, and from what each client saw.

1. spent + reserved <= budget, plus what injected overruns charged above their reservations
   (strict for exactly-tokenized models; overspend of estimated ones is reported beside it);
   and once spend has reached the budget, nothing more is admitted in that window
2. one usage row per admitted request
3. no reservation left open
4. ledger spend == the sum of the usage rows' cost (a mock key spends nothing)
5. rate limits honoured (requests/min; tokens/min as the gateway counts them: the worst case
   at admission, settled to the reported tokens; requests in flight)
6. every client got a readable reply or a provider-shaped error; a broken connection only
   where the upstream was made to die mid-stream
7. the upstream never saw a pouch key or an x-pouch-* header, and nothing refused reached it
8. every request billed what its provider billed (bills.py)
(1, 3, 4 and 9 for the levels around a key: teams, end users, the gateway's ceiling: levels.py)
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math

from pouch.domain.keys import SECRET_PREFIX
from pouch.domain.money import Money
from pouch.store.database import LedgerRow, ReservationRow, UsageRow
from pouch.pricing import reserve

from . import bills, expect
from .kinds import MAX_TOKENS, PRICES
from .plan import KeySpec
from .send import Outcome

WINDOW = 60.0  # seconds of the rate limiter's sliding window
ADMITTED = {"response", "upstream_error", "closed"}  # results that prove admission
UPSTREAM_FAULTS_OK_TO_BREAK = {"abort"}  # the only fault after which a broken connection is right


@dataclasses.dataclass(frozen=True)
class Violation:
    invariant: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.key}: {self.message}"


@dataclasses.dataclass
class KeyReport:
    role: str
    name: str
    spec: KeySpec
    budget: Money | None
    sent: int = 0
    admitted: int = 0  # known to the client (or proven by the fake)
    unknown: int = 0  # the client gave up before it could know
    refused: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    faults: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    outcomes: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # usage rows'
    rows: int = 0
    spent: Money = Money(0)
    reserved: Money = Money(0)
    overspend: Money = Money(0)  # spend above the budget (reported, not strict, for estimated tokenizers)
    overruns: int = 0  # rows flagged overrun
    injected: int = 0  # overruns injected into answers the client read whole
    excess: Money = Money(0)  # what overruns charged above their reservations
    sent_after_spent: int | None = None  # requests sent once spend had reached the budget (None: it never did)
    violations: list[Violation] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class RunKey:
    spec: KeySpec
    id: int
    name: str
    secret: str
    budget: Money | None
    user_budget: Money | None = None  # each end user's


@dataclasses.dataclass(frozen=True)
class Upstream:
    """What the fakes recorded, and which real credential each provider must have received."""

    records: dict[str, list]  # provider -> RecordedRequest list
    credentials: dict[str, str]  # provider -> the real key


def check_run(keys: list[RunKey], outcomes: list[Outcome], upstream: Upstream, excused: frozenset[str] = frozenset(),
              spend_reached: dict[int, float] | None = None, unsettled: frozenset[str] = frozenset()) -> list[KeyReport]:
    """``excused``: requests a SIGKILLed gateway process left unanswered (a broken connection is
    their due); ``unsettled``: requests under way when it died, whose rows may be the ones its
    restart recovered (without a request id); ``spend_reached``: key id -> when a snapshot of
    the store first saw its spend at its budget (with several gateway processes; else the usage
    rows' order tells it)."""
    reached = reached_upstream(upstream)
    by_request_id = collections.defaultdict(list)
    for row in UsageRow.select().where(UsageRow.key.in_([k.id for k in keys]), UsageRow.request_id.is_null(False)):
        by_request_id[row.request_id].append(row)
    reports = []
    for key in keys:
        report = KeyReport(key.spec.role, key.name, key.spec, key.budget)
        mine = [o for o in outcomes if o.planned.role == key.spec.role]
        rows = list(UsageRow.select().where(UsageRow.key == key.id).order_by(UsageRow.ts))
        ledger = list(LedgerRow.select().where(LedgerRow.key == key.id))
        count_outcomes(report, mine, reached, rows, ledger)
        fail = report.violations.append

        def flag(message: str, invariant: int = 8, report=report):
            report.violations.append(Violation(invariant, report.name, message))

        check_budget(report, ledger, fail)
        check_refused_once_spent(report, rows, mine, reached, fail,
                                 None if spend_reached is None else spend_reached.get(key.id, math.inf))
        check_rows(report, rows, fail)
        check_overruns(report, fail)
        bills.check_charges(rows, flag)
        bills.check_requests(key.spec, key.id, mine, by_request_id, reached, flag, unsettled,
                             sum(r.outcome == "recovered" for r in rows))
        bills.check_gemini_rows(key.spec, rows, mine, reached, flag, unsettled)
        check_reservations(report, key, ledger, fail)
        check_spend(report, rows, fail)
        check_rate_limits(report, rows, mine, reached, fail)
        check_clients(report, mine, fail, excused)
        check_upstream_saw(report, mine, reached, fail)
        reports.append(report)
    return reports


def reached_upstream(upstream: Upstream) -> dict[str, list]:
    """invariant id -> the fake's records of it."""
    reached = collections.defaultdict(list)
    for records in upstream.records.values():
        for record in records:
            if "x-invariant-id" in record.headers:
                reached[record.headers["x-invariant-id"]].append(record)
    return reached


def admitted(o: Outcome, reached) -> bool:
    """Known to have been admitted: the client saw an answer, or upstream saw the request."""
    if o.pouch_error:  # refused; the client may have hung up before it read why
        return o.planned.id in reached
    # A connection that broke after the headers proves admission only for a success: an error's
    # headers may be pouch's refusal, whose body a killed gateway process never finished.
    return o.result in ADMITTED or o.planned.id in reached or (
        o.result == "connection_error" and o.headers_seen and o.status is not None and o.status < 400)


def count_outcomes(report: KeyReport, mine: list[Outcome], reached, rows, ledger) -> None:
    for o in mine:
        report.sent += 1
        report.faults[o.planned.fault] += 1
        if o.result == "refused":
            report.refused[o.reason + refusing_level(o)] += 1
        elif admitted(o, reached):
            report.admitted += 1
        else:  # cancelled before the headers, a broken connection, a timeout: admitted or not
            report.unknown += 1
    report.rows = len(rows)
    report.outcomes = collections.Counter(r.outcome for r in rows)
    report.overruns = report.outcomes["overrun"]
    report.injected = bills.injected_overruns(mine)
    report.excess = Money(sum(r.cost_pico - r.reserved_pico for r in rows if r.outcome == "overrun"))
    report.spent = Money(sum(r.spent_pico for r in ledger))
    report.reserved = Money(sum(r.reserved_pico for r in ledger))


def refusing_level(o: Outcome) -> str:
    """A budget refusal's level besides the key's, for the summary: "/team", "/user", "/total"."""
    if o.reason != "budget":
        return ""
    for start, level in (("budget of team ", "/team"), ("budget of end user ", "/user"),
                         ("budget of the gateway", "/total")):
        if o.message.startswith(start):
            return level
    return ""


def check_budget(report: KeyReport, ledger, fail) -> None:
    """1: no window's spend and holds exceed the budget by more than overruns charged above
    their reservations (an admission keeps spent + reserved within the budget; only a
    settlement above its reservation can push past it)."""
    if report.budget is None:
        return
    for window in ledger:
        over = window.spent_pico + window.reserved_pico - report.budget.pico
        if over <= report.excess.pico:
            continue
        if report.spec.strict:
            fail(Violation(1, report.name, f"spent {Money(window.spent_pico).json()} + reserved "
                           f"{Money(window.reserved_pico).json()} > budget {report.budget.json()} "
                           f"(over by {Money(over).json()}, overruns charged {report.excess.json()} of it)"))
        else:
            report.overspend = Money(max(report.overspend.pico, over - report.excess.pico))


def check_refused_once_spent(report: KeyReport, rows, mine: list[Outcome], reached, fail,
                             seen_at: float | None = None) -> None:
    """1: once a settlement has brought spend to the budget (an overrun can take it past),
    no request is admitted in that window.

    Rows are written in settlement order (one store thread), so their running cost is the
    window's spend. A settlement is queued before its client reads the end of the answer, and
    a request's reservation after its client sent it, on the same store thread: a request sent
    after such a client finished reading is judged with the spend already there.

    Several gateway processes settle on threads of their own, so there ``seen_at`` says when:
    the first snapshot of the store (watch.py) that saw the spend at the budget.
    """
    if report.budget is None or report.spec.period or report.spec.mock:
        return
    finished = {o.request_id: o.ended for o in mine if o.request_id and o.result == "response"}
    spent, since = 0, math.inf
    for row in sorted(rows, key=lambda r: r.id):
        spent += row.cost_pico
        if spent >= report.budget.pico and row.request_id in finished:
            since = min(since, finished[row.request_id])
    if seen_at is not None:
        since = seen_at
    if since == math.inf:
        return
    report.sent_after_spent = sum(o.started > since for o in mine)
    late = [o for o in mine if o.started > since and admitted(o, reached)]
    if late:
        fail(Violation(1, report.name, f"{len(late)} request(s) admitted after spend reached the budget "
                       f"{report.budget.json()}, e.g. {late[0].planned.id} ({late[0].result})"))


def check_overruns(report: KeyReport, fail) -> None:
    """8: an overrun exactly where the plan made an upstream bill more than the worst case."""
    if report.overruns != report.injected:
        fail(Violation(8, report.name, f"{report.overruns} row(s) flagged overrun, but {report.injected} "
                       "overrun(s) injected into answers read whole"))


def check_rows(report: KeyReport, rows, fail) -> None:
    """2: one usage row per admitted request, each closing its own reservation."""
    ids = [r.reservation_id for r in rows]
    if None in ids:
        fail(Violation(2, report.name, f"{ids.count(None)} usage row(s) without a reservation"))
    duplicates = [i for i, n in collections.Counter(ids).items() if i and n > 1]
    if duplicates:
        fail(Violation(2, report.name, f"reservations with several usage rows: {duplicates[:5]}"))
    if report.outcomes["not_sent"] > report.unknown:
        fail(Violation(2, report.name, f"{report.outcomes['not_sent']} rows released as never sent, but only "
                       f"{report.unknown} requests could have been admitted without reaching upstream"))
    if not report.admitted <= report.rows <= report.admitted + report.unknown:
        fail(Violation(2, report.name, f"{report.rows} usage rows for {report.admitted} requests known admitted "
                       f"and {report.unknown} the client cannot know about (row outcomes: "
                       f"{dict(report.outcomes)})"))


def check_reservations(report: KeyReport, key: RunKey, ledger, fail) -> None:
    """3: every reservation closed, nothing held in the ledger."""
    open_ = list(ReservationRow.select().where(ReservationRow.key == key.id))
    if open_:
        fail(Violation(3, report.name, f"{len(open_)} reservation(s) left open, e.g. "
                       f"{open_[0].id} ({open_[0].endpoint}, created {open_[0].created_at:%H:%M:%S.%f})"))
    held = [w for w in ledger if w.reserved_pico]
    if held:
        fail(Violation(3, report.name, f"ledger still holds {Money(held[0].reserved_pico).json()} reserved"))


def check_spend(report: KeyReport, rows, fail) -> None:
    """4: spend is exactly what the usage rows say was charged (mock rows charge nothing)."""
    charged = Money(sum(r.cost_pico for r in rows if not r.mock))
    if report.spent != charged:
        fail(Violation(4, report.name, f"ledger spent {report.spent.json()} != usage rows' cost {charged.json()}"))
    if report.spec.mock and report.spent:
        fail(Violation(4, report.name, f"a mock key spent {report.spent.json()}"))


def check_rate_limits(report: KeyReport, rows, mine: list[Outcome], reached, fail) -> None:
    """5: requests/min and tokens/min from the usage rows; requests in flight from the fake.

    A request is admitted somewhere between its start (the row's ts) and its end (ts +
    latency): a set of admitted requests that all fit in less than a minute proves the limit
    was exceeded, whatever the exact admission times were.
    """
    spec = report.spec
    # A recovered row is written when its gateway came back, long after the admission: no span.
    rows = [r for r in rows if r.outcome != "recovered"]
    spans = [(r.ts.timestamp(), r.ts.timestamp() + (r.latency_ms or 0) / 1000 + 0.001) for r in rows]
    if spec.rpm:
        worst = most_within_a_minute(spans, [1] * len(rows))
        if worst > spec.rpm:
            fail(Violation(5, report.name, f"{worst} requests admitted within a minute (rpm {spec.rpm})"))
    if spec.tpm:
        counted = [tokens_counted(spec, r) for r in rows]
        worst = most_within_a_minute(spans, [settled for _, settled in counted],
                                     [admitted - settled for admitted, settled in counted])
        if worst > spec.tpm:
            fail(Violation(5, report.name, f"{worst} tokens counted within a minute (tpm {spec.tpm})"))
        # Upstream holds a request from when the fake read it until its delay is over: admitted
        # before, measured after, so all that time it counts its whole worst case.
        held = [((record.timestamp, record.timestamp + o.planned.fake_delay), expect.worst_tokens(o.planned))
                for o in mine if o.planned.fault != "client_cancel" for record in reached.get(o.planned.id, ())]
        worst = most_at_once([span for span, _ in held], [tokens for _, tokens in held])
        if worst > spec.tpm:
            fail(Violation(5, report.name, f"worst cases of {worst} tokens in flight upstream at once "
                           f"(tpm {spec.tpm})"))
    if spec.max_concurrent:
        # Upstream holds a request from when the fake read it until its delay is over; the
        # gateway holds the slot at least that long, unless the client cancelled first.
        held = [(record.timestamp, record.timestamp + o.planned.fake_delay)
                for o in mine if o.planned.fault != "client_cancel" for record in reached.get(o.planned.id, ())]
        worst = most_at_once(held)
        if worst > spec.max_concurrent:
            fail(Violation(5, report.name, f"{worst} requests in flight upstream at once "
                           f"(max_concurrent {spec.max_concurrent})"))


def tokens_counted(spec: KeySpec, row) -> tuple[int, int]:
    """(at least what tokens/min counted for ``row``'s request when it was admitted, at least
    what it counts once settled).

    Admitted, a request counts its worst case: its input and its output cap (else the model's
    maximum output). Measured, it is settled to the tokens the provider reported; billed
    nothing (an upstream error, never sent), to none; not knowable (cut short, no usage, an
    overrun), its worst case stands. Where a row does not show the input, none is assumed.
    """
    price = PRICES.resolve(row.model, row.provider)
    cap = MAX_TOKENS if spec.sets_max_tokens else reserve.max_output(price, reserve.Bounds(0, None))
    shown = row.input_tokens if row.outcome in ("ok", "cut_after_usage", "mock", "cut_short", "abandoned") else 0
    worst = shown + cap
    if row.outcome in ("ok", "cut_after_usage", "mock"):
        return worst, min(worst, row.input_tokens + row.output_tokens)
    if row.outcome in ("upstream_error", "not_sent", "refused"):
        return worst, 0
    return worst, worst


def most_within_a_minute(spans: list[tuple[float, float]], weights: list[int], extras: list[int] | None = None) -> int:
    """The largest total weight of spans that all lie within some window shorter than a minute,
    plus the least ``extras`` among them: each is admitted within a minute of the others, and
    the last admitted still counts its extra (its worst case, not yet settled)."""
    extras = extras or [0] * len(spans)
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    best = 0
    for position, i in enumerate(order):
        start = spans[i][0]
        inside = [j for j in order[position:] if spans[j][1] < start + WINDOW]
        best = max(best, sum(weights[j] for j in inside) + min((extras[j] for j in inside), default=0))
    return best


def most_at_once(spans: list[tuple[float, float]], weights: list[int] | None = None) -> int:
    """The largest total weight of spans open at one instant (one that ends as another starts
    does not overlap it); unweighted, the most spans."""
    weights = weights or [1] * len(spans)
    events = sorted([(start, w) for (start, _), w in zip(spans, weights, strict=True)]
                    + [(end, -w) for (_, end), w in zip(spans, weights, strict=True)])
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def check_clients(report: KeyReport, mine: list[Outcome], fail, excused: frozenset[str] = frozenset()) -> None:
    """6: a readable reply or a provider-shaped error; connection errors only where due (an
    upstream made to die, or a gateway process SIGKILLed: ``excused``)."""
    for o in mine:
        where = f"{o.planned.id} {o.planned.kind} fault={o.planned.fault}"
        if o.planned.id in excused:
            continue
        if o.problem:
            fail(Violation(6, report.name, f"{where}: {o.problem}"))
        elif o.result == "timeout":
            fail(Violation(6, report.name, f"{where}: no answer within the client's timeout ({o.error})"))
        elif o.result == "connection_error" and o.planned.fault not in UPSTREAM_FAULTS_OK_TO_BREAK:
            fail(Violation(6, report.name, f"{where}: connection broke ({o.error}), "
                           f"{'after' if o.headers_seen else 'before'} the headers"))
        elif o.planned.fault in ("bad_body", "unknown_key", "bad_model") \
                and o.result not in ("refused", "cancelled", "closed"):
            fail(Violation(6, report.name, f"{where}: bad input was not refused (got {o.result} {o.status})"))


def check_upstream_saw(report: KeyReport, mine: list[Outcome], reached, fail) -> None:
    """7: refused requests and mock answers never reached upstream; nothing went twice."""
    for o in mine:
        copies = len(reached.get(o.planned.id, ()))
        if copies and (o.result == "refused" or report.spec.mock):
            fail(Violation(7, report.name, f"{o.planned.id} ({o.result} {o.reason}, mock={report.spec.mock}) "
                           "reached upstream"))
        if copies > 1:
            fail(Violation(7, report.name, f"{o.planned.id} reached upstream {copies} times"))


def check_credentials(keys: list[RunKey], upstream: Upstream) -> list[Violation]:
    """7: every upstream request carried the real credential and no pouch key anywhere."""
    found = []
    secrets = [k.secret for k in keys]
    where = {"openai": "authorization", "anthropic": "x-api-key", "gemini": "x-goog-api-key"}
    for provider, records in upstream.records.items():
        expected = upstream.credentials[provider]
        if provider == "openai":
            expected = f"Bearer {expected}"
        for record in records:
            seen = json.dumps([record.path, record.headers]) + repr(record.body)
            if SECRET_PREFIX in seen or any(s in seen for s in secrets):
                found.append(Violation(7, "-", f"{provider} upstream saw a pouch key: {record.path} {record.headers}"))
            if any(name.lower().startswith("x-pouch-") for name in record.headers):
                found.append(Violation(7, "-", f"{provider} upstream saw pouch's headers: {record.headers}"))
            if record.headers.get(where[provider]) != expected:
                found.append(Violation(7, "-", f"{provider} upstream got {where[provider]}="
                                               f"{record.headers.get(where[provider])!r}, not the real key"))
    return found
