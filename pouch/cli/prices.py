"""``pouch prices``: the prices pouch charges by, and importing the operator's own."""

from __future__ import annotations

from pathlib import Path

import click

from pouch.cli.main import emit_json, table
from pouch.pricing.litellm_import import import_litellm
from pouch.pricing.price import PRICE_FIELDS, Price
from pouch.pricing.price_file import parse_instant
from pouch.pricing.table import PriceTable
from pouch.store.database import home


def per_million(money) -> str | None:
    return None if money is None else format((money.as_usd * 10**6).normalize(), "f")


def describe(price: Price) -> dict:
    """A price as JSON: USD per 1M tokens as exact decimal strings."""
    described = {"model": price.model, "provider": price.provider, "mode": price.mode}
    described.update({field: per_million(getattr(price, field)) for field in PRICE_FIELDS})
    described["tiers"] = [
        {"above_input_tokens": tier.above_input_tokens,
         **{f: per_million(getattr(tier, f)) for f in PRICE_FIELDS if getattr(tier, f) is not None}}
        for tier in price.tiers
    ]
    described.update(max_input_tokens=price.max_input_tokens, max_output_tokens=price.max_output_tokens,
                     source=price.source, as_of=price.as_of.isoformat(),
                     **{"from": price.effective.isoformat() if price.effective else None})
    return described


@click.group(invoke_without_command=True)
@click.option("--provider", help="Only this provider's models (openai, anthropic, gemini, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def prices(ctx, provider, as_json):
    """List the model prices pouch charges by (USD per 1M tokens).

    The shipped table is overlaid by $POUCH_HOME/prices.json when it exists.
    """
    if ctx.invoked_subcommand:
        return
    described = [describe(p) for p in PriceTable.default() if not provider or p.provider == provider]
    if as_json:
        emit_json(described)
        return
    columns = ["provider", "model", "input", "cached_input", "cache_write_5m", "output", "reasoning",
               "max_output_tokens", "as_of"]
    click.echo(table(described, columns))


@prices.command()
@click.argument("model")
@click.option("--at", "when", metavar="WHEN",
              help="The price in effect at this time (2026-12-01, 2026-11-30T23:59Z); default: now.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(model, when, as_json):
    """Show the price a model name resolves to (snapshots resolve to their family), and any
    other dated price it has (a price change ahead)."""
    try:
        at = parse_instant(when) if when else None
    except ValueError:
        raise click.BadParameter(f"{when!r}: use an ISO date or date-time, e.g. 2026-12-01", param_hint="--at")
    table_ = PriceTable.default()
    price = table_.resolve(model, at=at)
    if price is None:
        raise click.ClickException(
            f"no price for {model!r}: requests for it are refused (add it to {home() / 'prices.json'})"
        )
    described = describe(price)
    others = [describe(p) for p in table_.versions(model) if p is not price]
    if as_json:
        emit_json(described | ({"other_dates": others} if others else {}))
        return
    for field, value in described.items():
        click.echo(f"{field:>18}: {'' if value is None else value}")
    for other in others:
        click.echo(f"{'also':>18}: from {other['from'] or 'the start'}: input {other['input']}, "
                   f"output {other['output']} per 1M")


@prices.command(name="import")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--provider", "providers", multiple=True, help="Only these providers (repeatable).")
def import_(source, providers):
    """Import a LiteLLM-format price map (model_prices_and_context_window.json) into the
    operator override file $POUCH_HOME/prices.json, keeping entries already there."""
    dest = home() / "prices.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    count = import_litellm(source, dest, set(providers) or None)
    PriceTable.load(dest)  # prove the result loads before saying so
    click.echo(f"imported {count} model prices into {dest}")
