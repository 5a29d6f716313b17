"""``/api/teams``: list, create, show, update and delete teams, as ``pouch teams`` does (the same
services, checks, messages and JSON fields)."""

from __future__ import annotations

from pouch.admin.handler import Handler
from pouch.admin.keys import _globs, _text, usd_option
from pouch.domain.errors import InvalidInput
from pouch.domain.periods import utcnow
from pouch.domain.teams import Team
from pouch.services import key_cache
from pouch.services import keys as key_service
from pouch.services import teams as service
from pouch.services.prices import price_table
from pouch.store import teams as team_store

FIELDS = frozenset({"name", "budget_usd", "period", "rpm", "tpm", "max_concurrent", "models"})


def team_options(body: dict, *, creating: bool) -> dict:
    """A create or update body as the options ``pouch.services.teams`` takes from the CLI;
    ``null`` means none, and on update lifts a limit, as for keys."""
    options: dict = {}
    no_limit = []
    for field, value in body.items():
        if field == "name":
            options["name" if creating else "rename"] = _text(field, value, "the team's unique name")
        elif field == "budget_usd":
            options["budget"] = usd_option(field, value)
        elif field == "period":
            options["period"] = "none" if value is None else _text(field, value, "none, daily, weekly, monthly or 12h")
        elif field in service.LIMITS:
            if value is None:
                no_limit.append(field)
            elif isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"{field}: give a whole number (or null for no limit)")
            else:
                options[field] = value
        elif field == "models":
            options["models"] = "" if value is None else ",".join(_globs(value))
    if creating:
        if "name" not in options:
            raise InvalidInput("name: required (the team's unique name)")
    elif no_limit:
        options["no_limit"] = tuple(no_limit)
    return options


def _list() -> list[dict]:
    now = utcnow()
    return [service.describe(team, now) for team in team_store.all_teams()]


def _answer(team: Team, models_given: bool) -> dict:
    """The team, with what ``pouch teams`` warns about: globs no priced model matches."""
    described = service.describe(team)
    if models_given and team.models:
        try:
            warnings = key_service.unpriced_warnings(team.models, price_table())
        except InvalidInput as e:  # a broken prices.json: the gateway says so at start-up
            warnings = [f"cannot check models against the price table: {e}"]
        if warnings:
            described["warnings"] = warnings
    return described


def _create(options: dict) -> dict:
    return _answer(service.create(**options), "models" in options)


def _update(name: str, options: dict) -> dict:
    return _answer(service.update(name, **options), "models" in options)


def _delete(name: str) -> dict:
    gone = service.delete(name)
    return {"id": gone.id, "name": gone.name, "deleted": True}


class TeamHandler(Handler):
    def changed(self) -> None:
        """A key is read with its team (one query) and cached by the gateway in this process for a
        few seconds: after a team changes, its keys are read again, as after a key changes."""
        key_cache.keys.cache.clear()


class TeamList(TeamHandler):
    async def get(self):
        await self.answer(_list)

    async def post(self):
        options = team_options(self.body(FIELDS), creating=True)
        created = await self.store(_create, options)
        self.changed()
        self.set_header("Location", f"/api/teams/{created['id']}")
        self.send(created, 201)


class TeamItem(TeamHandler):
    async def get(self, name: str):
        await self.answer(lambda: service.describe(team_store.get(name)))

    async def patch(self, name: str):
        options = team_options(self.body(FIELDS), creating=False)
        updated = await self.store(_update, name, options)
        self.changed()
        self.send(updated)

    async def delete(self, name: str):
        self.body(frozenset())
        gone = await self.store(_delete, name)
        self.changed()
        self.send(gone)
