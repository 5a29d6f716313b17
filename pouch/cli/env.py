"""``pouch env``: the lines a shell evaluates so that every client it starts goes through the
gateway and trusts it — ``eval "$(pouch env --key pouch-…)"`` is all a user types.

What is set, and why:

- ``HTTPS_PROXY``/``HTTP_PROXY`` and their lower-case twins (curl and others read only those):
  the gateway's proxy listener, worked out as ``pouch run`` works it out from the same
  arguments (pouch's defaults, the confdir's ``config.yaml``, what the user gives), with proxy
  credentials when the gateway requires them. ``NO_PROXY``/``no_proxy``: loopback stays direct.
- ``NODE_EXTRA_CA_CERTS``: pouch's CA, which Node adds to its roots; ``NODE_USE_ENV_PROXY=1``:
  Node 24+ then honours ``HTTPS_PROXY`` (older versions ignore it, see the README's recipes).
- ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``: Python, Rust, Go and curl
  *replace* their roots with these, so they name a bundle of the usual CAs plus pouch's
  (``trust.write_bundle``): pouch's CA alone would break every host the gateway tunnels.
- with ``--key``: the variables SDKs and CLIs read their provider key from, all set to the
  pouch key.

``--key`` takes the key's secret. pouch stores only a hash of it, so a key's name cannot be
turned back into its secret: naming a key gets an error saying where secrets come from (the
demo key is the exception: ``pouch run --demo`` keeps its secret on disk to print it).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit

import click

from pouch.cli import run, trust
from pouch.cli.common import open_db
from pouch.domain.keys import SECRET_PREFIX, hash_secret, looks_like_pouch_key
from pouch.services.perimeter import is_loopback
from pouch.store import database
from pouch.store import keys as key_store

KEY_VARIABLES = (
    "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
    "CODEX_API_KEY",  # Codex CLI reads this one, not OPENAI_API_KEY
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",  # google-genai prefers it to GEMINI_API_KEY: a real one left set would win
)
LOOPBACK = "localhost,127.0.0.1,::1"
USERINFO_SAFE = "!$&'()*+,;="  # RFC 3986 sub-delims: literal in userinfo; ':', '@', '/', '%', ... are encoded


def _sh(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _fish(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _powershell(value: str) -> str:
    # PowerShell takes the typographic single quotes as quotes too; each is escaped by doubling
    return "'" + re.sub("['\u2018\u2019\u201a\u201b]", lambda m: m.group(0) * 2, value) + "'"


SHELLS = {
    "bash": lambda name, value: f"export {name}={_sh(value)}",
    "zsh": lambda name, value: f"export {name}={_sh(value)}",
    "fish": lambda name, value: f"set -gx {name} {_fish(value)}",
    "powershell": lambda name, value: f"$env:{name} = {_powershell(value)}",
}
HOW_TO_APPLY = {
    "bash": 'eval "$(pouch env ...)"',
    "zsh": 'eval "$(pouch env ...)"',
    "fish": "pouch env ... | source",
    "powershell": "pouch env ... | Out-String | Invoke-Expression",
}


def default_shell() -> str:
    name = Path(os.environ.get("SHELL", "")).name
    name = "powershell" if name == "pwsh" else name
    if name in SHELLS:
        return name
    return "powershell" if os.name == "nt" and not os.environ.get("SHELL") else "bash"


def render(shell: str, comment: str, variables: list[tuple[str, str]]) -> str:
    """The lines to evaluate: a comment (one line, whatever it quotes) and one assignment each."""
    comment = re.sub(r"[\x00-\x1f\x7f]", "?", comment)
    assign = SHELLS[shell]
    return "\n".join([f"# pouch env: {comment}", *(assign(name, value) for name, value in variables)]) + "\n"


def with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    where = parts.netloc.rpartition("@")[2]
    userinfo = f"{quote(user, safe=USERINFO_SAFE)}:{quote(password, safe=USERINFO_SAFE)}"
    return f"{parts.scheme}://{userinfo}@{where}"


def without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def parse_proxy(value: str) -> str:
    """``--proxy``: http://[USER:PASS@]HOST:PORT or HOST:PORT, as a URL."""
    url = value if "://" in value else f"http://{value}"
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise click.BadParameter(f"{value!r}: give the gateway's proxy address as http://HOST:PORT or HOST:PORT",
                                 param_hint="--proxy")
    return url.rstrip("/")


def gateway_options(port: int, extra: tuple[str, ...]):
    """The options ``pouch run --port PORT EXTRA...`` would run the gateway with."""
    _, opts = run.command("mitmdump", port, None, extra)
    if opts is None:
        given = f" ({' '.join(extra)})" if extra else ""
        raise click.UsageError(
            f"cannot work out the gateway's options from these arguments{given} or the confdir's config.yaml: "
            "give pouch env what you gave pouch run (mitmdump's options), or --proxy HOST:PORT")
    return opts


def proxy_address(opts, proxy: str | None) -> tuple[str, str]:
    """The proxy URL clients use and how the gateway authenticates them ('on', 'off', 'mitmproxy')."""
    found = run.listeners(opts)
    auth = run.proxy_auth(opts, found)
    if proxy:
        url = parse_proxy(proxy)
        if auth == "off" and not is_loopback(urlsplit(url).hostname):
            auth = "on"  # reached from another host, so required there; a pouch key is always accepted
        return url, auth
    listener = next((l for l in found if isinstance(l.mode, run.PROXY_MODES) and l.port), None)
    if listener is None:
        raise click.ClickException(
            "the gateway has no regular proxy listener with these options: point clients' base_url at its "
            "reverse listener instead, or give --proxy HOST:PORT")
    return listener.url(), auth


def proxy_credentials(auth: str, mitmproxy_auth: str | None, secret: str | None) -> tuple[str, str] | None:
    """Who the client says it is to the proxy, when the gateway asks; None: no credentials."""
    if auth == "on":
        if secret is None:
            click.echo("pouch env: the gateway requires proxy authentication (with your pouch key as the "
                       "password), and without --key HTTPS_PROXY has none: only LLM requests carrying a "
                       "pouch key will be served", err=True)
            return None
        return "pouch", secret
    if auth == "mitmproxy":
        if mitmproxy_auth == "any":
            return "pouch", "pouch"
        if not mitmproxy_auth.startswith(("@", "ldap")) and mitmproxy_auth.count(":") == 1:
            user, password = mitmproxy_auth.split(":")
            return user, password
        raise click.ClickException(
            "the gateway checks proxy credentials with mitmproxy's proxyauth (an htpasswd file or LDAP), which "
            "pouch cannot read: give yours with --proxy-auth USER:PASS")
    return None


def secret_of(ctx: click.Context, key: str) -> str:
    """``--key``: a secret as printed by ``pouch keys create``; a key's name gets an error that says
    where its secret comes from (pouch has only its hash), except the demo key's."""
    if looks_like_pouch_key(key):
        return key
    open_db(ctx)
    try:
        found = key_store.get(key)
    except key_store.UnknownKey as e:
        raise click.ClickException(f"{e}; --key takes a key's secret ({SECRET_PREFIX}…), "
                                   "as `pouch keys create` printed it") from None
    kept = database.home() / "demo-key"  # where `pouch run --demo` keeps the demo key's secret
    if found.name == run.DEMO_KEY and kept.exists() and hash_secret(kept.read_text().strip()) == found.secret_hash:
        return kept.read_text().strip()
    raise click.ClickException(
        f"key {found.name!r} exists, but pouch stores only a hash of its secret, which was shown once, by "
        f"`pouch keys create` (or `keys rotate`): pass the secret itself, --key {SECRET_PREFIX}…. Lost it? "
        f"`pouch keys rotate {found.name}` prints a new one (and the old one stops working).")


def trust_files(opts, ca: Path | None) -> tuple[Path, Path]:
    """Pouch's CA and the bundle beside it; for a CA given by path (a gateway elsewhere), the
    bundle goes under POUCH_HOME, one per CA path, so that no other CA's bundle is replaced."""
    if ca is None:
        ca = trust.ensure_ca(Path(opts.confdir).expanduser().absolute())  # as `pouch run` will use it
        return ca, trust.write_bundle(ca)
    ca = ca.expanduser().absolute()
    name = hashlib.sha256(str(ca).encode()).hexdigest()[:12]
    return ca, trust.write_bundle(ca, database.home().absolute() / f"ca-bundle-{name}.pem")


@click.command(context_settings=run.PASS_THROUGH)
@click.option("--key", metavar="SECRET",
              help=f"A pouch key's secret ({SECRET_PREFIX}…, as `pouch keys create --json` prints it): sets "
                   f"{', '.join(KEY_VARIABLES)} to it, and is the proxy password when the gateway requires one. "
                   "pouch keeps only a hash of a secret, so a key's name does not do (except the demo key's).")
@click.option("--shell", type=click.Choice(list(SHELLS)), default=default_shell,
              help="The shell to write the lines for [default: $SHELL's when it is one of these, else bash].")
@click.option("--port", default=8080, show_default=True, help="The gateway's port, as given to `pouch run --port`.")
@click.option("--proxy", metavar="URL",
              help="The gateway's proxy address (http://HOST:PORT or HOST:PORT, credentials allowed), instead of "
                   "working it out from pouch run's arguments: e.g. a gateway on another host (give --ca too).")
@click.option("--proxy-auth", metavar="USER:PASS",
              help="Proxy credentials to put in HTTPS_PROXY. Needed only when the gateway uses mitmproxy's own "
                   "proxyauth with an htpasswd file or LDAP, which pouch cannot read; pouch's own proxy "
                   "authentication takes the --key secret as the password.")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The gateway's CA certificate (PEM), e.g. a copy of a remote gateway's mitmproxy-ca-cert.pem "
                   "[default: the one in the gateway's confdir, made if missing as pouch run makes it].")
@click.argument("mitmdump_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def env(ctx, key, shell, port, proxy, proxy_auth, ca, mitmdump_args):
    """Print the lines that point every client started from this shell at the gateway: proxy
    (HTTPS_PROXY, ...), trust (NODE_EXTRA_CA_CERTS; SSL_CERT_FILE, REQUESTS_CA_BUNDLE and
    CURL_CA_BUNDLE name a bundle of the system's CAs plus pouch's) and, with --key, the
    provider key variables. Apply them with `eval "$(pouch env --key pouch-…)"` (bash, zsh),
    `pouch env --key pouch-… | source` (fish) or
    `pouch env --key pouch-… --shell powershell | Out-String | Invoke-Expression`.

    Give it the arguments you gave `pouch run` (--port, --listen-host, --set confdir=…, ...):
    the address and whether proxy authentication is on are worked out from them as pouch run
    does."""
    opts = gateway_options(port, mitmdump_args)
    secret = secret_of(ctx, key) if key else None
    url, auth = proxy_address(opts, proxy)
    if proxy_auth is not None:
        user, sep, password = proxy_auth.partition(":")
        if not sep:
            raise click.BadParameter("give it as USER:PASS", param_hint="--proxy-auth")
        url = with_credentials(url, user, password)
    elif "@" not in urlsplit(url).netloc and (credentials := proxy_credentials(auth, opts.proxyauth, secret)):
        url = with_credentials(url, *credentials)
    ca_file, bundle = trust_files(opts, ca)
    variables = [(name, url) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")]
    variables += [("NO_PROXY", LOOPBACK), ("no_proxy", LOOPBACK),
                  ("NODE_EXTRA_CA_CERTS", str(ca_file)), ("NODE_USE_ENV_PROXY", "1")]
    variables += [(name, str(bundle)) for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")]
    variables += [(name, secret) for name in KEY_VARIABLES if secret is not None]
    credentials_note = " (with proxy credentials)" if "@" in urlsplit(url).netloc else ""
    comment = f"clients started from this shell ({shell}) go through the pouch gateway at {without_credentials(url)}" \
              f"{credentials_note}"
    click.echo(render(shell, comment, variables), nl=False)
    if sys.stdout.isatty():
        click.echo(f"# pouch env: to apply these, run {HOW_TO_APPLY[shell]}", err=True)
