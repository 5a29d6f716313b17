"""Teams in the store: create, find, change, delete."""

from __future__ import annotations

from datetime import datetime

import peewee as pw

from pouch.domain.errors import InvalidInput
from pouch.domain.money import Money
from pouch.domain.periods import Period
from pouch.domain.teams import Team
from pouch.store.database import BudgetLedgerRow, KeyRow, TeamRow, database

MUTABLE = {"name", "budget", "period", "rpm", "tpm", "max_concurrent", "models"}


class UnknownTeam(InvalidInput):
    """Seen by an operator naming a team that does not exist."""


class TeamNameTaken(InvalidInput):
    """Seen by an operator giving a team the name another team has."""


class TeamInUse(InvalidInput):
    """Seen by an operator deleting a team that still has keys."""


def to_team(row: TeamRow) -> Team:
    return Team(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        anchor=row.anchor,
        budget=None if row.budget_pico is None else Money(row.budget_pico),
        period=Period.parse(row.period),
        rpm=row.rpm,
        tpm=row.tpm,
        max_concurrent=row.max_concurrent,
        models=tuple(m for m in row.models.split(",") if m),
    )


def _columns(changes: dict) -> dict:
    columns = {}
    for field, value in changes.items():
        if field not in MUTABLE:
            raise InvalidInput(f"{field} cannot be changed")
        if field == "budget":
            columns["budget_pico"] = None if value is None else value.pico
        elif field == "period":
            columns["period"] = str(value)
        elif field == "models":
            columns["models"] = ",".join(value)
        else:
            columns[field] = value
    return columns


def create(name: str, now: datetime, **attributes) -> Team:
    try:
        row = TeamRow.create(name=name, created_at=now, anchor=now, updated_at=now, **_columns(attributes))
    except pw.IntegrityError:
        raise TeamNameTaken(f"a team named {name!r} already exists") from None
    return to_team(row)


def get(name_or_id: str | int) -> Team:
    """A team by name, or by id when given digits."""
    text = str(name_or_id).strip()
    where = TeamRow.id == int(text) if text.isdigit() else TeamRow.name == text
    row = TeamRow.get_or_none(where)
    if row is None:
        raise UnknownTeam(f"no team named {text!r} (see `pouch teams list`)")
    return to_team(row)


def all_teams() -> list[Team]:
    return [to_team(row) for row in TeamRow.select().order_by(TeamRow.id)]


def update(team: Team, now: datetime, **changes) -> Team:
    try:
        TeamRow.update(**_columns(changes), updated_at=now).where(TeamRow.id == team.id).execute()
    except pw.IntegrityError:
        raise TeamNameTaken(f"a team named {changes.get('name')!r} already exists") from None
    return get(team.id)


def delete(team: Team) -> None:
    """Delete a team that has no keys left (its ledger rows go with it: a team's spend is also
    in its keys' usage rows, which keep the team's name)."""
    with database.atomic():
        members = KeyRow.select(KeyRow.name).where(KeyRow.team == team.id).order_by(KeyRow.id)
        names = [row.name for row in members.limit(6)]
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise TeamInUse(f"team {team.name!r} still has keys ({shown}), revoked ones included: move them "
                            "out first (pouch keys update NAME --team none)")
        BudgetLedgerRow.delete().where(BudgetLedgerRow.scope == team.scope).execute()
        TeamRow.delete().where(TeamRow.id == team.id).execute()
