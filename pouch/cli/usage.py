"""``pouch usage``: what was spent, per request or per key / model / day / team / end user / tag /
session, and what was refused."""

from __future__ import annotations

import click

from pouch.cli.common import emit_json, open_db, table
from pouch.services import usage_report


def _for_table(rows: list[dict], by: str | None) -> list[dict]:
    """Rows as a table shows them: tags comma-joined, a group without a value (no team, user,
    tag, session; no known key) as "-"."""
    if by:
        return [{**row, by: "-" if row[by] is None else row[by]} for row in rows]
    return [{**row, "tags": ",".join(row["tags"])} if "tags" in row else row for row in rows]


@click.command()
@click.option("--key", metavar="NAME", help="Only this key's usage.")
@click.option("--since", metavar="WHEN", help="Only usage since a date/time (2026-11-01) or a span back (24h, 7d).")
@click.option("--team", metavar="NAME", help="Only usage of keys in this team (the team when the request was made).")
@click.option("--user", metavar="ID", help="Only this end user's usage (x-pouch-user, OpenAI user, Anthropic "
              "metadata.user_id).")
@click.option("--tag", metavar="TAG", help="Only requests carrying this tag (x-pouch-tags).")
@click.option("--session", metavar="ID", help="Only this session's requests (x-pouch-session).")
@click.option("--by", type=click.Choice(usage_report.GROUPS),
              help="Aggregate per key, model, UTC day, team, end user, tag or session (with a count of refused "
              "requests; the cost of mock requests apart, as mock_usd). A request with several tags counts "
              "under each; requests without one group under '-'.")
@click.option("--refused", is_flag=True, help="List the requests pouch refused (bad key, model not allowed, "
              "rate limit, budget, ...) instead of usage.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.pass_context
def usage(ctx, key, since, team, user, tag, session, by, refused, fmt, as_json):
    """Report usage: one row per request (oldest first), totals --by
    key|model|day|team|user|tag|session, or the requests pouch refused (--refused)."""
    if by and refused:
        raise click.UsageError("--refused lists refusals one by one; --by already counts them (column 'refused')")
    open_db(ctx)
    fmt = "json" if as_json else fmt
    found = usage_report.report(key, since, by=by, refused=refused, team=team, user=user, tag=tag, session=session)
    if fmt == "json":
        emit_json(found.rows)
    elif fmt == "csv":
        click.echo(usage_report.csv_text(found), nl=False)
    else:
        click.echo(table(_for_table(found.rows, by), found.columns))
