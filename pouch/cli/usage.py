"""``pouch usage``: what was spent, per request or per key / model / day, and what was refused."""

from __future__ import annotations

import csv
import io

import click

from pouch.cli.common import emit_json, open_db, table
from pouch.domain.periods import utcnow
from pouch.services.keys import parse_when
from pouch.store import refusals as refusal_store
from pouch.store import usage as usage_store

ROW_COLUMNS = ["id", "ts", "key", "provider", "model", "endpoint", "status", "streamed",
               "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "mock", "outcome"]
REFUSAL_COLUMNS = ["id", "ts", "key", "provider", "model", "endpoint", "status", "reason", "message"]


@click.command()
@click.option("--key", metavar="NAME", help="Only this key's usage.")
@click.option("--since", metavar="WHEN", help="Only usage since a date/time (2026-11-01) or a span back (24h, 7d).")
@click.option("--by", type=click.Choice(usage_store.GROUPS),
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
    since_time = parse_when(since, utcnow(), back=True)
    if refused:
        rows = refusal_store.rows(key, since_time)
        columns = REFUSAL_COLUMNS
    elif by:
        rows = usage_store.totals(by, key, since_time)
        columns = [by, "requests", *usage_store.TOKEN_COLUMNS, "cost_usd", "mock_usd", "overruns", "refused"]
    else:
        rows = usage_store.rows(key, since_time)
        columns = ROW_COLUMNS
    if fmt == "json":
        emit_json(rows)
    elif fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        click.echo(out.getvalue(), nl=False)
    else:
        click.echo(table(rows, columns))
