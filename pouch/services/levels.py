"""The budget levels a key's request must fit besides the key's own: the gateway's ceiling
(``pouch_budget_total``), the key's team and the key's end user; and the rate limits of the key,
its team and its end user. Taken with the key's budget in one transaction
(``pouch.store.ledger.reserve``), settled at each exactly once."""

from __future__ import annotations

from datetime import UTC, datetime

from pouch.domain.keys import Key
from pouch.domain.money import Money
from pouch.domain.periods import Period
from pouch.store.ledger import Level
from pouch.store.limits import Limit

TOTAL = "total"
# Where the gateway's ceiling's rolling windows are counted from (calendar periods ignore it;
# with period none the ceiling counts everything since it was set).
TOTAL_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)


def levels(key: Key, end_user: str | None, now: datetime, total: Money | None = None,
           total_period: Period = Period("none")) -> tuple[Level, ...]:
    """The levels in the order their rows are locked: the gateway's, the team's, the end user's.

    A team always has a level (its spend is counted even without a budget); an end user only
    when the key gives its end users budgets."""
    found = []
    if total is not None:
        found.append(Level(TOTAL, "the gateway (pouch_budget_total)", str(total_period),
                           total_period.window(now, TOTAL_ANCHOR), total))
    if (team := key.team) is not None:
        found.append(Level(team.scope, f"team '{team.name}'", str(team.period), team.window(now), ("team", team.id)))
    if end_user is not None and key.user_budget is not None:
        found.append(Level(key.user_scope(end_user), f"end user '{end_user}' of key '{key.name}'",
                           str(key.user_period), key.user_window(now), ("user", key.id)))
    return tuple(found)


def limits(key: Key, end_user: str | None) -> tuple[Limit, ...]:
    """The rate limits a request of ``key`` (for ``end_user``) must fit, in the order their rows
    are locked: the team's, the key's, the end user's (requests/min)."""
    found = []
    team = key.team
    if team is not None and (team.rpm or team.tpm or team.max_concurrent):
        found.append(Limit(team.scope, f"team '{team.name}'", "the team's", team.rpm, team.tpm, team.max_concurrent))
    if key.rpm or key.tpm or key.max_concurrent:
        found.append(Limit(f"key:{key.id}", f"key '{key.name}'", "the key's", key.rpm, key.tpm, key.max_concurrent))
    if end_user is not None and key.user_rpm:
        found.append(Limit(key.user_scope(end_user), f"end user '{end_user}' of key '{key.name}'", "the end user's",
                           key.user_rpm))
    return tuple(found)
