"""The ``pouch`` command: manage keys, read usage and prices, run the gateway."""

from __future__ import annotations

import click

from pouch.cli import admin, env, keys, prices, run, teams, usage
from pouch.domain.errors import InvalidInput


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


cli.add_command(run.run)
cli.add_command(run.web)
cli.add_command(run.addon_path)
cli.add_command(keys.keys)
cli.add_command(teams.teams)
cli.add_command(usage.usage)
cli.add_command(prices.prices)
cli.add_command(env.env)
cli.add_command(admin.admin)
cli.add_command(admin.admin_tokens)
