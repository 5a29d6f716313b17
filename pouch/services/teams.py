"""Team management as operators use it (CLI, admin API): validate with the keys' parsers and
messages, then store."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pouch.domain.errors import InvalidInput
from pouch.domain.keys import check_name, parse_budget, parse_limit, parse_models
from pouch.domain.periods import Period, utcnow
from pouch.domain.teams import Team
from pouch.store import keys as key_store
from pouch.store import ledger
from pouch.store import teams as team_store

LIMITS = ("rpm", "tpm", "max_concurrent")


def attributes(
    *,
    budget: str | None = None,
    period: str | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    max_concurrent: int | None = None,
    models: str | None = None,
) -> dict:
    """Validated team attributes from operator input; only those given (not None) appear."""
    given = {}
    if budget is not None:
        given["budget"] = parse_budget(budget)
    if period is not None:
        given["period"] = Period.parse(period)
    for what, value in zip(LIMITS, (rpm, tpm, max_concurrent)):
        if value is not None:
            given[what] = parse_limit(what.replace("_", " "), value)
    if models is not None:
        given["models"] = parse_models(models)
    return given


def create(name: str, **options) -> Team:
    return team_store.create(check_name(name, "team"), utcnow(), **attributes(**options))


def update(name_or_id: str, rename: str | None = None, no_limit: Iterable[str] = (), **options) -> Team:
    """Change what is given (not None); ``no_limit`` names the limits (rpm, tpm,
    max_concurrent) to lift."""
    team = team_store.get(name_or_id)
    given = attributes(**options)
    for limit in no_limit:
        if limit not in LIMITS:
            raise InvalidInput(f"{limit} is not a limit")
        given[limit] = None
    if rename is not None:
        given["name"] = check_name(rename, "team")
    if not given:
        raise InvalidInput("nothing to update: give at least one option (see --help)")
    return team_store.update(team, utcnow(), **given)


def delete(name_or_id: str) -> Team:
    """Delete a team without keys (the store refuses one that has any); the team as it was."""
    team = team_store.get(name_or_id)
    team_store.delete(team)
    return team


def describe(team: Team, now: datetime | None = None) -> dict:
    """A team as JSON (DESIGN field names), with its current window's spend and its keys' names."""
    now = now or utcnow()
    window = team.window(now)
    spent, reserved = ledger.level_totals(team.scope, window)
    return {
        "id": team.id,
        "name": team.name,
        "budget_usd": team.budget.json() if team.budget is not None else None,
        "spent_usd": spent.json(),
        "reserved_usd": reserved.json(),
        "period": str(team.period),
        "window_start": window.start.isoformat(),
        "window_end": window.end.isoformat() if window.end else None,
        "rpm": team.rpm,
        "tpm": team.tpm,
        "max_concurrent": team.max_concurrent,
        "models": list(team.models),
        "keys": [key.name for key in key_store.all_keys(team_id=team.id)],
        "created_at": team.created_at.isoformat(),
    }
