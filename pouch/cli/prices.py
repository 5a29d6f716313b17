"""``pouch prices``: the prices pouch charges by, and importing the operator's own."""

from __future__ import annotations

from pathlib import Path

import click

from pouch.cli.common import emit_json, table
from pouch.pricing import check as map_check
from pouch.pricing.litellm_import import TODAY, import_litellm
from pouch.pricing.price_file import parse_instant
from pouch.pricing.table import PriceTable
from pouch.services.prices import listed, shown
from pouch.store.database import home


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
    described = listed(PriceTable.default(), provider)
    if as_json:
        emit_json(described)
        return
    columns = ["provider", "model", "input", "cached_input", "cache_write_5m", "output", "reasoning",
               "max_output_tokens", "as_of"]
    click.echo(table(described, columns))


@prices.command()
@click.argument("model")
@click.option("--provider", help="As a request to this provider names it (openrouter: vendor/model names).")
@click.option("--at", "when", metavar="WHEN",
              help="The price in effect at this time (2026-12-01, 2026-11-30T23:59Z); default: now.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(model, provider, when, as_json):
    """Show the price a model name resolves to (snapshots resolve to their family), and any
    other dated price it has (a price change or a retirement ahead)."""
    try:
        at = parse_instant(when) if when else None
    except ValueError:
        raise click.BadParameter(f"{when!r}: use an ISO date or date-time, e.g. 2026-12-01", param_hint="--at")
    described = shown(PriceTable.default(), model, provider, at)
    if as_json:
        emit_json(described)
        return
    others = described.pop("other_dates", [])
    for field, value in described.items():
        if value not in (None, [], {}):
            click.echo(f"{field:>18}: {value}")
    for other in others:
        if "retired" in other:
            click.echo(f"{'also':>18}: {other['message']}")
        else:
            click.echo(f"{'also':>18}: from {other['from'] or 'the start'}: input {other['input']}, "
                       f"output {other['output']} per 1M")


@prices.command(name="check")
@click.argument("price_map", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def check_(price_map, as_json):
    """Compare the prices pouch charges by with a public price map (LiteLLM's format; default:
    the copy shipped with pouch) and list every difference by model and field. Differences the
    table documents (differs_from_map, with their sources) are marked; any other exits 1."""
    litellm = map_check.read_map(price_map) if price_map else map_check.reference_map()
    report = map_check.compare(PriceTable.default().entries(), litellm)
    if as_json:
        emit_json({"differences": [d.json() for d in report.differences],
                   "not_in_map": [{"provider": p, "model": m} for p, m in report.not_in_map],
                   "compared": report.compared, "undocumented": len(report.undocumented)})
    else:
        for d in report.differences:
            when = f" from {d.effective:%Y-%m-%d}" if d.effective else ""
            mark = f"documented: {d.why}" if d.why else "UNDOCUMENTED"
            click.echo(f"{d.provider} {d.model}{when}: {d.field} {_shown(d.ours)}, map {_shown(d.theirs)} — {mark}")
        if report.not_in_map:
            click.echo("not in the map (priced from their own sources): "
                       + ", ".join(f"{p} {m}" for p, m in report.not_in_map))
        click.echo(f"{report.compared} entries compared: {len(report.differences)} differences, "
                   f"{len(report.undocumented)} undocumented")
    if report.undocumented:
        raise SystemExit(1)


def _shown(value) -> str:
    if isinstance(value, list):
        return "[" + "; ".join(", ".join(f"{k} {v}" for k, v in tier.items()) for tier in value) + "]"
    return "none" if value is None else str(value)


@prices.command(name="import")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--provider", "providers", multiple=True, help="Only these providers (repeatable).")
@click.option("--from", "effective", default=TODAY, show_default=True, metavar="WHEN",
              help="The imported prices apply from this date or time (ISO), or 'always' (they then "
                   "replace the model's earlier prices). Requests made before keep their prices.")
def import_(source, providers, effective):
    """Import a LiteLLM-format price map (model_prices_and_context_window.json) into the
    operator override file $POUCH_HOME/prices.json, keeping entries already there."""
    if effective not in (TODAY, "always"):
        try:
            parse_instant(effective)
        except ValueError:
            raise click.BadParameter(f"{effective!r}: use an ISO date or date-time, or 'always'",
                                     param_hint="--from")
    dest = home() / "prices.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    count = import_litellm(source, dest, set(providers) or None, None if effective == "always" else effective)
    PriceTable.load(dest)  # prove the result loads before saying so
    click.echo(f"imported {count} model prices into {dest}")
