"""What the command modules share: the store named by the top-level ``--db``, and JSON and
table output. Its own module so that ``main`` imports the commands and nothing imports ``main``."""

from __future__ import annotations

import json
import sys

import click

from pouch.store import database


def open_db(ctx: click.Context) -> None:
    """Open (and migrate) the store named by the top-level --db; commands call this first."""
    database.open_store(ctx.find_root().obj["db"])


def show_once(described: dict, as_json: bool, secret_field: str, secret: str | None = None) -> None:
    """One record, as JSON or as lines of ``field: value``; with a secret (a new key's, a new
    token's), that too, under ``secret_field`` in JSON, else on a line of its own, and a reminder
    that it is shown this once."""
    if secret is not None:
        described = {**described, secret_field: secret}
    if as_json:
        emit_json(described)
        return
    width = max(map(len, described))
    for field, value in described.items():
        if field != secret_field:
            click.echo(f"{field:>{width}}: {'' if value is None else value}")
    if secret is not None:
        click.echo(f"\n{secret}\n")
        click.secho("This secret is shown once and stored only as a hash: keep it now.", fg="yellow", err=True)


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
