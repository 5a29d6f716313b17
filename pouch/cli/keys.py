"""``pouch keys``: create, list, show, update, revoke and rotate pouch keys."""

from __future__ import annotations

import click

from pouch.cli.common import emit_json, open_db, show_once, table
from pouch.domain.errors import InvalidInput
from pouch.domain.keys import parse_models
from pouch.domain.periods import utcnow
from pouch.services import keys as service
from pouch.services.prices import price_table
from pouch.store import keys as key_store

LIST_COLUMNS = ["id", "name", "prefix", "team", "budget_usd", "spent_usd", "reserved_usd", "period",
                "rpm", "tpm", "max_concurrent", "models", "flags"]


def limit_options(for_update: bool):
    """The options create and update share; on update, absent means unchanged."""

    def decorate(command):
        flag = "--mock/--no-mock" if for_update else "--mock"
        renew = "--auto-renew/--no-auto-renew" if for_update else "--auto-renew"
        require_user = "--require-user/--no-require-user" if for_update else "--require-user"
        options = [
            click.option("--budget", metavar="USD", help="Spend limit per period in USD (e.g. 5 or 12.50); 'none' for no limit."),
            click.option("--period", metavar="P", help="Budget period: none, daily, weekly, monthly (UTC calendar) or rolling 3600s/90m/12h/30d."),
            click.option("--rpm", type=int, help="Requests per minute."),
            click.option("--tpm", type=int, help="Tokens (input + max output) per minute."),
            click.option("--max-concurrent", type=int, help="Requests in flight at once."),
            click.option("--models", metavar="GLOB,...", help="Allowed models, comma-separated globs (gpt-4o*,claude-*); '' allows all."),
            click.option("--expires", metavar="WHEN", help="Expiry: 2026-12-31, 2026-12-31T18:00Z, or from now: 12h, 30d, 2w; 'never' clears."),
            click.option(renew, "auto_renew", is_flag=True, default=None, help="On expiry, extend by one period and start spend from zero."),
            click.option(flag, "mock", is_flag=True, default=None, help="Answer with mock responses (recorded, never charged, nothing sent upstream)."),
            click.option("--alert-at", metavar="PCT,...", help="Budget percents that send a budget.threshold alert, e.g. 50,80,100; 'none' for none."),
            click.option("--webhook", metavar="URL", help="Also send this key's alerts to this URL (besides the gateway's pouch_webhook); 'none' clears."),
            click.option("--team", metavar="NAME", help="Put the key in this team (pouch teams create): its requests must fit the team's budget, limits and models too; 'none' takes it out."),
            click.option("--user-budget", metavar="USD", help="Each end user's own budget per --user-period, in USD; 'none' for none (end users share the key's)."),
            click.option("--user-period", metavar="P", help="End users' budget period: none, daily, weekly, monthly or rolling 12h/30d."),
            click.option("--user-rpm", type=int, help="Requests per minute for each end user."),
            click.option(require_user, "require_user", is_flag=True, default=None, help="Refuse requests that do not name their end user (OpenAI user, Anthropic metadata.user_id or x-pouch-user)."),
            click.option("--json", "as_json", is_flag=True, help="Print JSON."),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _row(described: dict) -> dict:
    flags = [f for f in ("mock", "revoked", "auto_renew", "require_user") if described[f]]
    if described["expires_at"]:
        flags.append(f"expires {described['expires_at'][:16]}")
    if described["alert_at"]:
        flags.append(f"alerts {','.join(map(str, described['alert_at']))}")
    if described["user_budget_usd"] or described["user_rpm"]:
        flags.append(f"per user {_per_user(described)}")
    return {**described, "models": ",".join(described["models"]) or "*", "team": described["team"] or "-",
            "budget_usd": described["budget_usd"] or "-", "flags": " ".join(flags)}


def _per_user(described: dict) -> str:
    parts = []
    if described["user_budget_usd"]:
        parts.append(f"${described['user_budget_usd']}/{described['user_period']}")
    if described["user_rpm"]:
        parts.append(f"{described['user_rpm']}rpm")
    return ",".join(parts)


def _show(described: dict, as_json: bool, secret: str | None = None) -> None:
    show_once(described, as_json, "key", secret)


def warn_unpriced(models: str | None) -> None:
    """Say which --models globs no priced model matches: accepted, but what they allow is refused
    as unpriced until a price is added."""
    if not models:
        return
    try:
        warnings = service.unpriced_warnings(parse_models(models), price_table())
    except InvalidInput as e:  # a broken prices.json: the gateway will say so at start-up
        click.secho(f"warning: cannot check --models against the price table: {e}", fg="yellow", err=True)
        return
    for warning in warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)


def warn_alerts_without_budget(key) -> None:
    """Thresholds are percents of the budget: on a key without one they never fire."""
    if key.alert_at and key.budget is None:
        click.secho(f"warning: key '{key.name}' has no budget: its --alert-at thresholds never fire until it has one",
                    fg="yellow", err=True)


@click.group()
def keys():
    """Manage pouch keys (what clients send instead of a provider key)."""


@keys.command()
@click.option("--name", required=True, help="Unique name (letters, digits, . _ @ -).")
@limit_options(for_update=False)
@click.pass_context
def create(ctx, name, as_json, **options):
    """Create a key and print its secret (once)."""
    open_db(ctx)
    key, secret = service.create(name, **options)
    _show(service.describe(key), as_json, secret)
    warn_unpriced(options["models"])
    warn_alerts_without_budget(key)


@keys.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_keys(ctx, as_json):
    """List keys with this period's spend."""
    open_db(ctx)
    now = utcnow()
    described = [service.describe(key, now) for key in key_store.all_keys()]
    if as_json:
        emit_json(described)
    else:
        click.echo(table([_row(d) for d in described], LIST_COLUMNS))


@keys.command()
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show(ctx, key, as_json):
    """Show one key (by name or id) with this period's spend."""
    open_db(ctx)
    _show(service.describe(key_store.get(key)), as_json)


@keys.command()
@click.argument("key")
@click.option("--rename", metavar="NAME", help="Give the key a new name.")
@limit_options(for_update=True)
@click.pass_context
def update(ctx, key, as_json, **options):
    """Change a key's budget, limits, models, expiry or mode."""
    open_db(ctx)
    updated = service.update(key, **options)
    _show(service.describe(updated), as_json)
    warn_unpriced(options["models"])
    warn_alerts_without_budget(updated)


@keys.command()
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def revoke(ctx, key, as_json):
    """Revoke a key: its requests are refused from now on (history is kept)."""
    open_db(ctx)
    _show(service.describe(key_store.revoke(key_store.get(key), utcnow())), as_json)


@keys.command()
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def rotate(ctx, key, as_json):
    """Give a key a new secret (printed once); the old one stops working. Budget and usage stay."""
    open_db(ctx)
    rotated, secret = key_store.rotate(key_store.get(key), utcnow())
    _show(service.describe(rotated), as_json, secret)
