"""The invariants, checked after a run has settled: from the store (keys, ledger, reservations,
usage rows), from what the fakes recorded, and from what each client saw.

1. spent + reserved <= budget (strict for exactly-tokenized models; overspend of estimated
   ones is reported beside it)
2. one usage row per admitted request
3. no reservation left open
4. ledger spend == the sum of the usage rows' cost (a mock key spends nothing)
5. rate limits honoured (requests/min, tokens/min, requests in flight)
6. every client got a readable reply or a provider-shaped error; a broken connection only
   where the upstream was made to die mid-stream
7. the upstream never saw a pouch key, and nothing refused reached it
"""

from __future__ import annotations

import collections
import dataclasses
import json

from pouch.domain.keys import SECRET_PREFIX
from pouch.domain.money import Money
from pouch.store.database import LedgerRow, ReservationRow, UsageRow
from pouch.tokens.count import count_prompt, count_text

from .plan import KINDS, MAX_TOKENS, MODELS, PRICES, KeySpec
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
    violations: list[Violation] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class RunKey:
    spec: KeySpec
    id: int
    name: str
    secret: str
    budget: Money | None


@dataclasses.dataclass(frozen=True)
class Upstream:
    """What the fakes recorded, and which real credential each provider must have received."""

    records: dict[str, list]  # provider -> RecordedRequest list
    credentials: dict[str, str]  # provider -> the real key


def check_run(keys: list[RunKey], outcomes: list[Outcome], upstream: Upstream) -> list[KeyReport]:
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
        check_budget(report, ledger, fail)
        check_rows(report, rows, fail)
        check_bills(report, key, mine, by_request_id, fail)
        check_reservations(report, key, ledger, fail)
        check_spend(report, rows, fail)
        check_rate_limits(report, rows, mine, reached, fail)
        check_clients(report, mine, fail)
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


def count_outcomes(report: KeyReport, mine: list[Outcome], reached, rows, ledger) -> None:
    for o in mine:
        report.sent += 1
        report.faults[o.planned.fault] += 1
        if o.result == "refused":
            report.refused[o.reason] += 1
        elif o.result in ADMITTED or o.planned.id in reached or (o.result == "connection_error" and o.headers_seen):
            report.admitted += 1
        else:  # cancelled before the headers, a broken connection, a timeout: admitted or not
            report.unknown += 1
    report.rows = len(rows)
    report.outcomes = collections.Counter(r.outcome for r in rows)
    report.spent = Money(sum(r.spent_pico for r in ledger))
    report.reserved = Money(sum(r.reserved_pico for r in ledger))


def check_budget(report: KeyReport, ledger, fail) -> None:
    """1: no window's spend and holds exceed the budget."""
    if report.budget is None:
        return
    for window in ledger:
        over = window.spent_pico + window.reserved_pico - report.budget.pico
        if over <= 0:
            continue
        if report.spec.strict:
            fail(Violation(1, report.name, f"spent {Money(window.spent_pico).json()} + reserved "
                           f"{Money(window.reserved_pico).json()} > budget {report.budget.json()} "
                           f"(over by {Money(over).json()})"))
        else:
            report.overspend = Money(max(report.overspend.pico, over))


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


def check_bills(report: KeyReport, key: RunKey, mine: list[Outcome], by_request_id, fail) -> None:
    """2, request by request where the client saw the provider's request id (OpenAI, Anthropic):
    exactly one usage row, under this key; and a plain success is billed exactly what the
    provider reported (the fakes report the prompt as counted and the reply's tokens)."""
    for o in mine:
        if not o.request_id or o.result == "refused":
            continue
        found = by_request_id.get(o.request_id, [])
        where = f"{o.planned.id} {o.planned.kind} fault={o.planned.fault} request-id {o.request_id}"
        if len(found) != 1 or found[0].key_id != key.id:
            fail(Violation(2, report.name, f"{where}: {len(found)} usage rows "
                           f"(keys {[r.key_id for r in found]}), not one under key {key.id}"))
            continue
        if o.result == "response" and o.planned.fault in ("none", "slow") and not report.spec.mock:
            row, kind = found[0], KINDS[o.planned.kind]
            model = MODELS[kind.provider]
            price = PRICES.resolve(model, kind.provider)
            tokens = (count_prompt(model, json.loads(o.planned.body), kind.api), count_text(model, o.text))
            bill = price.input * tokens[0] + price.output * tokens[1]
            if (row.input_tokens, row.output_tokens, row.cost_pico) != (*tokens, bill.pico):
                fail(Violation(2, report.name, f"{where}: billed {row.input_tokens}+{row.output_tokens} tokens, "
                               f"{Money(row.cost_pico).json()}; the provider reported {tokens[0]}+{tokens[1]}, "
                               f"{bill.json()}"))


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
    spans = [(r.ts.timestamp(), r.ts.timestamp() + (r.latency_ms or 0) / 1000 + 0.001) for r in rows]
    if spec.rpm:
        worst = most_within_a_minute(spans, [1] * len(rows))
        if worst > spec.rpm:
            fail(Violation(5, report.name, f"{worst} requests admitted within a minute (rpm {spec.rpm})"))
    if spec.tpm:
        # what the limiter counted is at least the input the provider reported plus the output cap
        tokens = [r.input_tokens + MAX_TOKENS for r in rows]
        worst = most_within_a_minute(spans, tokens)
        if worst > spec.tpm:
            fail(Violation(5, report.name, f"{worst} tokens admitted within a minute (tpm {spec.tpm})"))
    if spec.max_concurrent:
        # Upstream holds a request from when the fake read it until its delay is over; the
        # gateway holds the slot at least that long, unless the client cancelled first.
        held = [(record.timestamp, record.timestamp + o.planned.fake_delay)
                for o in mine if o.planned.fault != "client_cancel" for record in reached.get(o.planned.id, ())]
        worst = most_at_once(held)
        if worst > spec.max_concurrent:
            fail(Violation(5, report.name, f"{worst} requests in flight upstream at once "
                           f"(max_concurrent {spec.max_concurrent})"))


def most_within_a_minute(spans: list[tuple[float, float]], weights: list[int]) -> int:
    """The largest total weight of spans that all lie within some window shorter than a minute."""
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    best = 0
    for position, i in enumerate(order):
        start = spans[i][0]
        total = sum(weights[j] for j in order[position:] if spans[j][1] < start + WINDOW)
        best = max(best, total)
    return best


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one instant (one that ends as another starts does not overlap it)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def check_clients(report: KeyReport, mine: list[Outcome], fail) -> None:
    """6: a readable reply or a provider-shaped error; connection errors only where due."""
    for o in mine:
        where = f"{o.planned.id} {o.planned.kind} fault={o.planned.fault}"
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
            if record.headers.get(where[provider]) != expected:
                found.append(Violation(7, "-", f"{provider} upstream got {where[provider]}="
                                               f"{record.headers.get(where[provider])!r}, not the real key"))
    return found
