"""``pouch usage``: what was spent, per request or per key / model / day, and what was refused."""

from __future__ import annotations

import click

from pouch.cli.common import emit_json, open_db, table
from pouch.services import usage_report


@click.command()
@click.option("--key", metavar="NAME", help="Only this key's usage.")
@click.option("--since", metavar="WHEN", help="Only usage since a date/time (2026-11-01) or a span back (24h, 7d).")
@click.option("--by", type=click.Choice(usage_report.GROUPS),
              help="Aggregate per key, model or UTC day (with a count of refused requests; the cost of "
              "mock requests apart, as mock_usd).")
@click.option("--refused", is_flag=True, help="List the requests pouch refused (bad key, model not allowed, "
              "rate limit, budget, ...) instead of usage.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.pass_context
def usage(ctx, key, since, by, refused, fmt, as_json):
    """Report usage: one row per request (oldest first), totals --by key|model|day, or the
    requests pouch refused (--refused)."""
    if by and refused:
        raise click.UsageError("--refused lists refusals one by one; --by already counts them (column 'refused')")
    open_db(ctx)
    fmt = "json" if as_json else fmt
    found = usage_report.report(key, since, by=by, refused=refused)
    if fmt == "json":
        emit_json(found.rows)
    elif fmt == "csv":
        click.echo(usage_report.csv_text(found), nl=False)
    else:
        click.echo(table(found.rows, found.columns))
