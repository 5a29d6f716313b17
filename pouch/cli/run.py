"""``pouch run`` / ``pouch web``: mitmdump / mitmweb with the chain and sensible defaults.

The defaults (loopback, pouch's confdir, lazy upstream connections, ...) are only defaults:
any of them the user gives, in any form mitmproxy takes, wins (see mitm_options). What is
printed — the address, whether proxy authentication is on, the try-it lines — is worked out
from the options mitmproxy will really run with, and the try-it lines work exactly as printed
from a shell that has nothing else set.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

import click
from mitmproxy import exceptions
from mitmproxy.proxy import mode_specs

from pouch.cli import admin, mitm_options, trust
from pouch.services import perimeter
from pouch.services.perimeter import is_loopback
from pouch.store import database
from pouch.store import keys as key_store

# The script mitmproxy loads. Installed, addons/ ships inside the package as pouch.addons (setup.py);
# in the checkout it sits beside pouch/.
_INSTALLED_CHAIN = Path(__file__).resolve().parents[1] / "addons" / "pouch.py"
CHAIN = _INSTALLED_CHAIN if _INSTALLED_CHAIN.exists() else Path(__file__).resolve().parents[2] / "addons" / "pouch.py"
DEMO_KEY = "demo"
EVERYWHERE = ("", "0.0.0.0", "::")
PROXY_MODES = (mode_specs.RegularMode, mode_specs.UpstreamMode)  # what HTTPS_PROXY points at


def mitmproxy_tool(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise click.ClickException(f"{name} not found: install mitmproxy (scripts/bootstrap does)")
    return found


def confdir() -> Path:
    return database.home().absolute() / "mitmproxy"


def pouch_defaults(tool: str, port: int, db: str | None) -> dict[str, str]:
    defaults = {
        "listen_host": "127.0.0.1",  # mitmproxy's default is every interface
        "listen_port": str(port),
        "confdir": str(confdir()),
        "connection_strategy": "lazy",
        # not store_streamed_bodies=true: it keeps every stream whole, unbounded, and turns off
        # the inspector's bounded copy of LLM streams (pouch_stream_bodies)
    }
    if db:
        defaults["pouch_db"] = db
    if tool == "mitmdump":
        defaults["flow_detail"] = "0"
    else:
        defaults["web_open_browser"] = "false"
    return defaults


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


class Listener(NamedTuple):
    mode: mode_specs.ProxyMode
    host: str
    port: int | None

    @property
    def everywhere(self) -> bool:
        return self.host in EVERYWHERE

    def url(self, secret: str | None = None) -> str:
        """How a client on this host reaches it (a wildcard address is not one to dial)."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{f'pouch:{secret}@' if secret else ''}{host}:{self.port}"

    def where(self) -> str:
        if self.everywhere:
            return f"port {self.port} of every interface ({self.host or '*'}); from this host {self.url()}"
        return f"{self.url()}{', this host only' if is_loopback(self.host) else ''}"


def listeners(opts) -> list[Listener]:
    found = []
    for spec in opts.mode:
        try:
            mode = mode_specs.ProxyMode.parse(spec)
        except ValueError:
            continue  # mitmproxy says what is wrong with it
        found.append(Listener(mode, mode.listen_host(opts.listen_host), mode.listen_port(opts.listen_port)))
    return found


def proxy_auth(opts, found: list[Listener]) -> str:
    """'on', 'off' or 'mitmproxy', as addons/perimeter.py will decide it."""
    setting = mitm_options.deferred(opts, "pouch_proxy_auth") or "auto"
    return perimeter.proxy_auth(setting, opts.proxyauth, exposed(found))


def exposed(found: list[Listener]) -> bool:
    return any(perimeter.exposed(listener.mode, listener.host) for listener in found)


def openai_python() -> tuple[str, str]:
    """A Python that can run the openai line, and what to do first if there is none."""
    if importlib.util.find_spec("openai") is not None:
        return sys.executable, ""
    return "python3", "  # this needs the openai package: python3 -m pip install openai\n"


def header(tool: str, opts, found: list[Listener], proxy: Listener | None, auth: str) -> list[str]:
    """Where the gateway listens and who may use it."""
    lines = [f"pouch gateway ({tool}):"]
    for listener in found:
        what = "proxy" if listener is proxy else listener.mode.full_spec
        lines.append(f"  {what}" + (f" on {listener.where()}" if listener.port else ""))
    if tool == "mitmweb":
        lines.append(f"  web UI on http://{opts.web_host}:{opts.web_port} (mitmweb prints its login link)")
    if auth == "on":
        lines.append("proxy authentication: on (listening beyond loopback, or pouch_proxy_auth=on): a client's "
                     "pouch key is its proxy password, HTTPS_PROXY=http://pouch:<pouch-key>@HOST:PORT")
    elif auth == "mitmproxy":
        lines.append("proxy authentication: mitmproxy's own (proxyauth): add its credentials to the proxy URLs below")
    elif exposed(found):
        lines.append("proxy authentication: off (pouch_proxy_auth=off): other hosts get only LLM requests "
                     "that carry a pouch key")
    if proxy is None:
        lines.append("(no regular proxy listener: point a client's base_url at a reverse listener instead)")
    return lines


def try_it(secret: str, url: str, ca: Path, home: str, env_args: str) -> str:
    """Lines that work exactly as printed, from a shell with nothing else set."""
    q = shlex.quote
    python, get_openai = openai_python()
    body = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello, pouch!"}]}'
    client = ('import openai; print(openai.OpenAI().chat.completions.create(model="gpt-4o-mini", '
              'messages=[{"role": "user", "content": "Hello"}]).choices[0].message.content)')
    pouch = q(str(Path(sys.executable).with_name("pouch")))
    return f"""
demo key (mock: answered by pouch, recorded, never charged): {secret}

Try it with curl:
  curl --proxy {url} --cacert {q(str(ca))} https://api.openai.com/v1/chat/completions \\
    -H "Authorization: Bearer {secret}" -H "Content-Type: application/json" \\
    -d '{body}'

Or point this shell at the gateway (proxy, CA trust, the key for every SDK and CLI), then run any client:
{get_openai}  eval "$({home}{pouch} env --key demo{env_args})"
  {q(python)} -c '{client}'

(fish: `{home}{pouch} env --key demo{env_args} | source`; the README's "Clients" has Claude Code, Codex, Node, ...)

Then `{home}{pouch} usage` shows what was recorded; `{home}{pouch} keys create --name NAME --budget 5` makes a
real key (the gateway needs OPENAI_API_KEY / ANTHROPIC_API_KEY / GEMINI_API_KEY in its environment for real keys).
"""


def banner(tool: str, opts, secret: str | None, ca: Path, bundle: Path, home: str, env_args: str = "") -> str:
    found = listeners(opts)
    proxy = next((l for l in found if isinstance(l.mode, PROXY_MODES) and l.port), None)
    auth = proxy_auth(opts, found)
    lines = header(tool, opts, found, proxy, auth)
    if proxy is None:
        return "\n".join(lines) + "\n"
    url = proxy.url(secret if auth == "on" and secret else None)
    shown_url = proxy.url("<pouch-key>") if auth == "on" and not secret else url
    trust_env = f"SSL_CERT_FILE={shlex.quote(str(bundle))} REQUESTS_CA_BUNDLE={shlex.quote(str(bundle))}"
    lines += [
        "",
        f"Clients: eval \"$({home}{shlex.quote(str(Path(sys.executable).with_name('pouch')))} env --key <pouch-key>"
        f"{env_args})\" sets all of it (bash, zsh), or by hand:",
        f"  export HTTPS_PROXY={shown_url} {trust_env}",
        f"  ({bundle.name}: the usual CAs plus pouch's, so a client's other HTTPS keeps working; "
        f"Node: NODE_EXTRA_CA_CERTS={shlex.quote(str(ca))}, and NODE_USE_ENV_PROXY=1 on Node 24+)",
    ]
    text = "\n".join(lines) + "\n"
    return text + try_it(secret, url, ca, home, env_args) if secret else text


def command(tool: str, port: int, db: str | None, extra: tuple[str, ...]):
    """The tool's command line (pouch's defaults first, as ``--set``, leaving out those the user
    gave) and the options it will run with; None when mitmproxy will refuse the arguments (or
    was asked for help) and say why itself."""
    program = mitmproxy_tool(tool)
    head = [program, "-s", str(CHAIN)]
    try:
        given = mitm_options.given(tool, extra)
    except mitm_options.Unparsed:
        return head + list(extra), None
    defaults = pouch_defaults(tool, port, db)
    args = head + [a for name, value in defaults.items() if name not in given for a in ("--set", f"{name}={value}")]
    args += extra
    try:
        return args, mitm_options.effective(tool, args[1:])
    except (mitm_options.Unparsed, exceptions.OptionsError):
        return args, None


def launch(ctx: click.Context, tool: str, port: int, demo: bool, extra: tuple[str, ...], workers: int = 1) -> None:
    root_db = db = ctx.find_root().obj["db"]
    args, opts = command(tool, port, db, extra)
    if opts is not None:
        db = mitm_options.deferred(opts, "pouch_db") or db  # the store the gateway will use
    database.open_store(db)
    plan = None
    if workers > 1 and opts is not None:  # else mitmproxy says what is wrong with the arguments
        from pouch.cli import haproxy, workers as supervisor  # built on this module's command()

        if not (binary := haproxy.binary()):
            raise click.ClickException(haproxy.MISSING)
        plan = supervisor.make_plan(tool, port, root_db, extra, opts, workers, command)
    if opts is not None:
        ca = trust.ensure_ca(Path(opts.confdir).expanduser())
        home = "" if db or os.environ.get("POUCH_DB") else f"POUCH_HOME={shlex.quote(str(database.home().absolute()))} "
        env_args = "".join(" " + shlex.quote(a) for a in ("--port", str(port), *extra))  # pouch env reads them as we do
        click.echo(banner(tool, opts, demo_secret() if demo else None, ca, trust.write_bundle(ca), home, env_args))
        if demo:
            click.echo(admin.dashboard_banner(opts))
    if plan is not None:
        click.echo(plan.describe())
        sys.stdout.flush()
        sys.exit(supervisor.Supervisor(plan, binary).run())
    sys.stdout.flush()
    os.execv(args[0], args)


PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


@click.command(context_settings=PASS_THROUGH)
@click.option("--port", default=8080, show_default=True,
              help="Proxy listen port (a port given to mitmdump: -p, --set listen_port=, --mode ...@PORT wins).")
@click.option("--demo", is_flag=True, help="Create a demo mock key on first run and print how to try it.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Gateway processes, behind HAProxy on the one listen address (README: \"Several processes "
                   "and machines\").")
@click.argument("mitmdump_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx, port, demo, workers, mitmdump_args):
    """Run the gateway headless (mitmdump), on 127.0.0.1 unless told otherwise (--listen-host
    0.0.0.0: then clients authenticate with their pouch key as the proxy password). Extra
    arguments go to mitmdump and win over pouch's defaults,
    e.g. `pouch run --mode reverse:https://api.openai.com --set pouch_unknown_keys=observe`."""
    launch(ctx, "mitmdump", port, demo, mitmdump_args, workers)


@click.command(context_settings=PASS_THROUGH)
@click.option("--port", default=8080, show_default=True,
              help="Proxy listen port (a port given to mitmweb wins; mitmweb's UI: --set web_port=N).")
@click.option("--demo", is_flag=True, help="Create a demo mock key on first run and print how to try it.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Gateway processes, behind HAProxy on the one listen address (README: \"Several processes "
                   "and machines\").")
@click.argument("mitmweb_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def web(ctx, port, demo, workers, mitmweb_args):
    """Run the gateway with mitmweb, the traffic inspector, on 127.0.0.1 unless told otherwise.
    Extra arguments go to mitmweb and win over pouch's defaults."""
    launch(ctx, "mitmweb", port, demo, mitmweb_args, workers)


@click.command("addon-path")
def addon_path():
    """Print the path of the chain script, for running mitmproxy with it yourself:
    `mitmdump -s "$(pouch addon-path)"` or `mitmweb -s "$(pouch addon-path)"`. mitmproxy's own
    defaults then apply instead of `pouch run`'s (e.g. its CA in ~/.mitmproxy); the chain's
    options are set with `--set pouch_...`."""
    click.echo(str(CHAIN))
