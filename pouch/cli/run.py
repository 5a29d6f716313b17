"""``pouch run`` / ``pouch web``: mitmdump / mitmweb with the chain and sensible defaults."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from pouch.cli.main import open_db
from pouch.store import database
from pouch.store import keys as key_store

CHAIN = Path(__file__).resolve().parents[2] / "addons" / "pouch.py"
DEMO_KEY = "demo"


def mitmproxy_tool(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise click.ClickException(f"{name} not found: install mitmproxy (scripts/bootstrap does)")
    return found


def confdir() -> Path:
    return database.home().absolute() / "mitmproxy"


def ensure_ca(directory: Path) -> Path:
    """mitmproxy's CA for this gateway (created on first use), so clients can be told of it."""
    from mitmproxy.certs import CertStore

    directory.mkdir(parents=True, exist_ok=True)
    CertStore.from_store(directory, "mitmproxy", 2048)
    return directory / "mitmproxy-ca-cert.pem"


def demo_secret() -> str:
    """The demo mock key's secret: created on first run, kept (0600) under POUCH_HOME so the
    try-it lines can be printed every time. A mock key is never charged and never goes upstream."""
    path = database.home() / "demo-key"
    if path.exists():
        try:
            key_store.get(DEMO_KEY)
            return path.read_text().strip()
        except key_store.UnknownKey:
            pass
    from pouch.services import keys as service

    _, secret = service.create(DEMO_KEY, budget="5", period="monthly", mock=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret


def try_it(secret: str, port: int, ca: Path) -> str:
    proxy = f"http://127.0.0.1:{port}"
    body = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello, pouch!"}]}'
    return f"""
pouch gateway: proxy on {proxy}
demo key (mock: answered by pouch, recorded, never charged): {secret}

Try it with curl:
  curl --proxy {proxy} --cacert {ca} https://api.openai.com/v1/chat/completions \\
    -H "Authorization: Bearer {secret}" -H "Content-Type: application/json" \\
    -d '{body}'

Or with the openai SDK (any client works the same way):
  export HTTPS_PROXY={proxy} SSL_CERT_FILE={ca}
  python -c 'import openai; print(openai.OpenAI(api_key="{secret}").chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)'

Then: `.venv/bin/pouch usage` shows what was recorded; `.venv/bin/pouch keys create --name NAME --budget 5` makes a real key
(the gateway needs OPENAI_API_KEY / ANTHROPIC_API_KEY / GEMINI_API_KEY in its environment for real keys).
"""


def launch(ctx: click.Context, tool: str, port: int, demo: bool, extra: tuple[str, ...]) -> None:
    open_db(ctx)
    db = ctx.find_root().obj["db"]
    ca = ensure_ca(confdir())
    if demo:
        click.echo(try_it(demo_secret(), port, ca))
    args = [
        mitmproxy_tool(tool), "-s", str(CHAIN),
        "--listen-port", str(port),
        "--set", f"confdir={confdir()}",
        "--set", "connection_strategy=lazy",
        "--set", "store_streamed_bodies=true",
    ]
    if db:
        args += ["--set", f"pouch_db={db}"]
    if tool == "mitmdump":
        args += ["--set", "flow_detail=0"]
    else:
        args += ["--set", "web_open_browser=false"]
    args += list(extra)
    sys.stdout.flush()
    os.execv(args[0], args)


PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


@click.command(context_settings=PASS_THROUGH)
@click.option("--port", default=8080, show_default=True, help="Proxy listen port.")
@click.option("--demo", is_flag=True, help="Create a demo mock key on first run and print how to try it.")
@click.argument("mitmdump_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx, port, demo, mitmdump_args):
    """Run the gateway headless (mitmdump). Extra arguments go to mitmdump,
    e.g. `pouch run --mode reverse:https://api.openai.com --set pouch_unknown_keys=observe`."""
    launch(ctx, "mitmdump", port, demo, mitmdump_args)


@click.command(context_settings=PASS_THROUGH)
@click.option("--port", default=8080, show_default=True, help="Proxy listen port (mitmweb's UI: --set web_port=N).")
@click.option("--demo", is_flag=True, help="Create a demo mock key on first run and print how to try it.")
@click.argument("mitmweb_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def web(ctx, port, demo, mitmweb_args):
    """Run the gateway with mitmweb, the traffic inspector. Extra arguments go to mitmweb."""
    launch(ctx, "mitmweb", port, demo, mitmweb_args)
