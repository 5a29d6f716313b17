"""Invariant 5 from the store's own rate log (copied during the run by ``watch``), at every
limited scope (keys, teams, end users), whichever gateway process admitted what.

An entry's ``at`` is its gateway's clock when it was admitted, and admissions at one scope are
serialised by the scope's row in pouch_limit_state. Of any set of entries whose times lie less
than a minute apart, the one admitted last saw all the others in its minute (each is newer than
its time minus 60 s), so:

- requests/min: no such set is larger than the scope's rpm;
- tokens/min: the last admitted counted the others at least at what they still count once
  settled, and itself at its worst case; which one was last is not known, so the set must fit
  with the smallest (worst case - settled) among them: sum of settled + that <= tpm.
  (``checks.tokens_counted`` gives each request's (worst, settled), from its usage row.)

And the log is complete: every request a limited scope admitted (a usage row holding a
reservation) has its entry there, and every entry is a request that was settled or recovered.
"""

from __future__ import annotations

import collections
import dataclasses

from pouch.store.database import UsageRow

from .checks import WINDOW, RunKey, Violation, tokens_counted
from .watch import Entry, ScopeLimits


@dataclasses.dataclass
class ScopeReport:
    scope: str
    limits: ScopeLimits
    admitted: int = 0  # entries in the log
    refused: int = 0  # clients told this scope's limit refused them
    most_requests: int = 0  # most requests within a minute (proven)
    most_tokens: int = 0  # most tokens counted within a minute (proven)
    most_in_flight: int = 0  # most open reservations at once, as the watch saw
    workers: int = 0  # gateway processes that held its requests (seen open)
    violations: list[Violation] = dataclasses.field(default_factory=list)


def most_requests(times: list[float]) -> int:
    """The largest set of times all less than WINDOW apart."""
    times = sorted(times)
    best, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= WINDOW:
            first += 1
        best = max(best, last - first + 1)
    return best


def most_tokens(entries: list[tuple[float, int, int]]) -> int:
    """(at, worst, settled) per request: the most the last admitted of a set less than a minute
    apart can have counted (see the module's docstring)."""
    entries = sorted(entries)
    best, first = 0, 0
    for last in range(len(entries)):
        while entries[last][0] - entries[first][0] >= WINDOW:
            first += 1
        inside = entries[first:last + 1]
        best = max(best, sum(s for _, _, s in inside) + min(w - s for _, w, s in inside))
    return best


def check_scopes(watched: dict[str, ScopeLimits], prefixes: dict[str, ScopeLimits], entries: list[Entry],
                 keys: list[RunKey], members: dict[str, set[int]], refusals: collections.Counter,
                 in_flight: collections.Counter, owners: dict[int, set[str]]) -> list[ScopeReport]:
    """One report per limited scope (``members``: a key's or team's scope -> its keys' ids; an
    end user's scope names its key; ``refusals``: who -> rate refusals the clients were told
    of, by the name the message gives)."""
    specs = {k.id: k.spec for k in keys}
    rows = {r.reservation_id: r for r in UsageRow.select().where(
        UsageRow.key.in_(list(specs)), UsageRow.reservation_id.is_null(False))}
    by_scope = collections.defaultdict(list)
    for entry in entries:
        by_scope[entry.scope].append(entry)
    scopes = dict(watched)
    for scope in by_scope:
        for prefix, limits in prefixes.items():
            if scope.startswith(prefix):
                scopes[scope] = dataclasses.replace(limits, who=f"end user '{scope[len(prefix):]}' of {limits.who}")
    reports = []
    for scope, limits in sorted(scopes.items()):
        report = ScopeReport(scope, limits, len(by_scope[scope]), refusals[limits.who], most_in_flight=in_flight[scope])
        ids = members.get(scope) or {int(scope.split(":")[1])}
        report.workers = len(set().union(*(owners.get(i, set()) for i in ids)))
        fail = report.violations.append
        counted = []
        for entry in by_scope[scope]:
            row = rows.get(entry.reservation_id)
            if row is None:
                fail(Violation(5, scope, f"a rate-log entry at {entry.at:.3f} (reservation {entry.reservation_id}) "
                                         "has no usage row: admitted, never settled nor recovered"))
                continue
            worst, settled = tokens_counted(specs[row.key_id], row)
            counted.append((entry.at, worst, settled))
        logged = {e.reservation_id for e in by_scope[scope]}
        if limits.rpm or limits.tpm:
            missing = [r for r in rows.values() if r.key_id in ids and r.reservation_id not in logged
                       and (not scope.startswith("user:") or scope == f"user:{r.key_id}:{r.end_user}")]
            if missing:
                fail(Violation(5, scope, f"{len(missing)} admitted request(s) not in its rate log, e.g. row "
                                         f"{missing[0].id} ({missing[0].outcome})"))
        report.most_requests = most_requests([e.at for e in by_scope[scope]])
        if limits.rpm and report.most_requests > limits.rpm:
            fail(Violation(5, scope, f"{report.most_requests} requests admitted less than a minute apart "
                                     f"(rpm {limits.rpm})"))
        if limits.tpm:
            report.most_tokens = most_tokens(counted)
            if report.most_tokens > limits.tpm:
                fail(Violation(5, scope, f"{report.most_tokens} tokens counted within a minute (tpm {limits.tpm})"))
        reports.append(report)
    return reports
