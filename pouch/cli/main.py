"""The ``pouch`` command: manage keys, read usage and prices, run the gateway."""

from __future__ import annotations

import json
import sys

import click

from pouch.domain.errors import InvalidInput
from pouch.store import database


class PouchGroup(click.Group):
    """Turns operator mistakes (bad values, unknown keys) into one clear line and exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InvalidInput as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=PouchGroup)
@click.option(
    "--db",
    envvar="POUCH_DB",
    metavar="URL",
    help="Store URL: sqlite:///path.db or postgresql://user:pass@host/db "
    "[env POUCH_DB; default: sqlite file under $POUCH_HOME, ./data]",
)
@click.version_option(package_name="pouch")
@click.pass_context
def cli(ctx, db):
    """pouch: an LLM API gateway with budgets that hold, built on mitmproxy.

    Clients hold pouch keys (budget, rate limits, model allowlist); the real provider
    keys stay in the gateway's environment.
    """
    ctx.obj = {"db": db}


def open_db(ctx: click.Context) -> None:
    """Open (and migrate) the store named by the top-level --db; commands call this first."""
    database.open_store(ctx.find_root().obj["db"])


def emit_json(value) -> None:
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")


def table(rows: list[dict], columns: list[str]) -> str:
    """Plain aligned text table."""
    cells = [[("" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def _register():
    from pouch.cli import keys, prices, run, usage

    cli.add_command(run.run)
    cli.add_command(run.web)
    cli.add_command(keys.keys)
    cli.add_command(usage.usage)
    cli.add_command(prices.prices)


_register()
