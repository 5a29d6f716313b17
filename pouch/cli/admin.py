"""``pouch admin``: the admin API without a gateway; ``pouch admin-tokens``: who may use it."""

from __future__ import annotations

import asyncio
import signal

import click

from pouch.admin.server import AdminServer, parse_listen
from pouch.cli import mitm_options
from pouch.cli.common import emit_json, open_db, show_once, table
from pouch.domain.admin_tokens import ROLES
from pouch.domain.keys import hash_secret
from pouch.domain.periods import utcnow
from pouch.store import admin_tokens as token_store
from pouch.store import database

DEFAULT_LISTEN = "127.0.0.1:8082"  # addons/admin.py's pouch_admin default
FIRST_TOKEN = "dashboard"


@click.command()
@click.option("--db", metavar="URL", help="Store URL (as pouch --db; default: pouch --db, $POUCH_DB, the SQLite file "
              "under $POUCH_HOME).")
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT",
              help="Where to serve it ([::1]:8082 for IPv6). Beyond loopback it is plain HTTP: put TLS in front.")
@click.pass_context
def admin(ctx, db, listen):
    """Serve the admin API without a proxy, next to a store (a PostgreSQL store several gateways
    share, say). A gateway serves the same API itself on pouch_admin (default 127.0.0.1:8082).
    Callers send 'Authorization: Bearer <token>' (pouch admin-tokens create). Its /metrics has
    the store's budget gauges only: the traffic counters live in each gateway's own /metrics."""
    try:
        where = parse_listen(listen)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--listen") from None
    if where is None:
        raise click.BadParameter("'off' serves nothing: give HOST:PORT", param_hint="--listen")
    database.open_store(db or ctx.find_root().obj["db"])
    asyncio.run(_serve(AdminServer(), where))


async def _serve(server, where) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        server.start(where)
    except OSError as e:
        raise click.ClickException(f"cannot listen on {where.host}:{where.port}: {e.strerror or e}") from None
    click.echo(f"pouch admin API on {server.url} (Ctrl-C stops it)", err=True)
    await stop.wait()
    server.stop()


@click.group("admin-tokens")
def admin_tokens():
    """Manage the tokens of the admin API: admin (reads and changes keys) or viewer (reads)."""


@admin_tokens.command()
@click.option("--name", required=True, help="Unique name among live tokens (who or what uses it).")
@click.option("--role", type=click.Choice(ROLES), default="admin", show_default=True,
              help="admin: everything; viewer: read only (GET).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the secret in 'token').")
@click.pass_context
def create(ctx, name, role, as_json):
    """Create an admin token and print it (once)."""
    open_db(ctx)
    token, secret = token_store.create(name, role, utcnow())
    show_once(token.json(), as_json, "token", secret)


@admin_tokens.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_tokens(ctx, as_json):
    """List admin tokens, revoked ones included (never their secrets)."""
    open_db(ctx)
    described = [token.json() for token in token_store.all_tokens()]
    if as_json:
        emit_json(described)
    else:
        click.echo(table(described, ["id", "name", "role", "prefix", "created_at", "revoked_at"]))


@admin_tokens.command()
@click.argument("token")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def revoke(ctx, token, as_json):
    """Revoke an admin token (by name or id): refused from the next request on."""
    open_db(ctx)
    show_once(token_store.revoke(token_store.get(token), utcnow()).json(), as_json, "token")


def first_run_token() -> str:
    """The admin token the README's run command prints: made on first run, kept (0600) under
    POUCH_HOME like the demo key, made again if it was revoked. The store must be open."""
    path = database.home() / "admin-token"
    if path.exists():
        secret = path.read_text().strip()
        found = token_store.by_hash(hash_secret(secret))
        if found is not None and not found.revoked:
            return secret
    for n in range(1, 100):  # an operator may have a live token of that name already: never touch it
        try:
            _, secret = token_store.create(FIRST_TOKEN if n == 1 else f"{FIRST_TOKEN}-{n}", "admin", utcnow())
            break
        except token_store.TokenNameTaken:
            continue
    else:
        raise click.ClickException(f"cannot name a new admin token: revoke some of the {FIRST_TOKEN}-N tokens")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret


def dashboard_banner(opts) -> str:
    """Where the gateway's admin API listens and the token to use it, for ``pouch run|web --demo``;
    nothing when pouch_admin is off (or a value the gateway will refuse and say why)."""
    try:
        listen = parse_listen(mitm_options.deferred(opts, "pouch_admin") or DEFAULT_LISTEN)
    except ValueError:
        return ""
    if listen is None:
        return ""
    return (f"Dashboard and admin API: {listen.url()}/  admin token: {first_run_token()}\n"
            "  (send it as 'Authorization: Bearer <token>'; `pouch admin-tokens` lists, makes and revokes tokens)\n")
