"""``pouch teams``: create, list, show, update and delete teams (a budget, limits and a model
allowlist that every key in the team shares: a key's request must fit both)."""

from __future__ import annotations

import click

from pouch.cli.common import emit_json, open_db, show_once, table
from pouch.cli.keys import warn_unpriced
from pouch.domain.periods import utcnow
from pouch.services import teams as service
from pouch.store import teams as team_store

LIST_COLUMNS = ["id", "name", "budget_usd", "spent_usd", "reserved_usd", "period", "rpm", "tpm",
                "max_concurrent", "models", "keys"]


def team_options(command):
    """The options create and update share; on update, absent means unchanged."""
    options = [
        click.option("--budget", metavar="USD", help="What the team's keys may spend together per period, in USD; 'none' for no limit."),
        click.option("--period", metavar="P", help="Budget period: none, daily, weekly, monthly (UTC calendar) or rolling 3600s/90m/12h/30d."),
        click.option("--rpm", type=int, help="Requests per minute, all the team's keys together."),
        click.option("--tpm", type=int, help="Tokens (input + max output) per minute, all the team's keys together."),
        click.option("--max-concurrent", type=int, help="Requests in flight at once, all the team's keys together."),
        click.option("--models", metavar="GLOB,...", help="Models the team's keys may use, comma-separated globs; '' allows all. A key's own allowlist narrows it further."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _row(described: dict) -> dict:
    return {**described, "models": ",".join(described["models"]) or "*",
            "budget_usd": described["budget_usd"] or "-", "keys": len(described["keys"])}


def _show(described: dict, as_json: bool) -> None:
    if not as_json:
        described = {**described, "keys": ", ".join(described["keys"]) or "-"}
    show_once(described, as_json, "")


@click.group()
def teams():
    """Manage teams: a budget, limits and models that all the team's keys share."""


@teams.command()
@click.option("--name", required=True, help="Unique name (letters, digits, . _ @ -).")
@team_options
@click.pass_context
def create(ctx, name, as_json, **options):
    """Create a team (then put keys in it: pouch keys update KEY --team NAME)."""
    open_db(ctx)
    _show(service.describe(service.create(name, **options)), as_json)
    warn_unpriced(options["models"])


@teams.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_teams(ctx, as_json):
    """List teams with this period's spend and how many keys each has."""
    open_db(ctx)
    now = utcnow()
    described = [service.describe(team, now) for team in team_store.all_teams()]
    if as_json:
        emit_json(described)
    else:
        click.echo(table([_row(d) for d in described], LIST_COLUMNS))


@teams.command()
@click.argument("team")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show(ctx, team, as_json):
    """Show one team (by name or id) with this period's spend and its keys."""
    open_db(ctx)
    _show(service.describe(team_store.get(team)), as_json)


@teams.command()
@click.argument("team")
@click.option("--rename", metavar="NAME", help="Give the team a new name.")
@team_options
@click.pass_context
def update(ctx, team, as_json, **options):
    """Change a team's budget, limits or models (its keys follow at once)."""
    open_db(ctx)
    _show(service.describe(service.update(team, **options)), as_json)
    warn_unpriced(options["models"])


@teams.command()
@click.argument("team")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def delete(ctx, team, as_json):
    """Delete a team that has no keys left (move them out first: pouch keys update KEY --team none)."""
    open_db(ctx)
    gone = service.delete(team)
    if as_json:
        emit_json({"id": gone.id, "name": gone.name, "deleted": True})
    else:
        click.echo(f"team '{gone.name}' deleted")
