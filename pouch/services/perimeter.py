"""Who may use the proxy and where it may connect: the rules behind ``addons/perimeter.py``,
as plain functions and the little state the chain's links share.

- A client authenticates with a pouch key as its proxy password
  (``HTTPS_PROXY=http://any:<pouch-key>@host:port``); the connection's LLM requests are then
  that key's (``connection_key``), whatever credential they carry.
- Traffic that is not to an LLM host ("passthrough") is tunnelled only for authenticated
  clients, and only to destinations ``pouch_passthrough`` allows: by default the public
  internet, never loopback, private, link-local or metadata addresses.
"""

from __future__ import annotations

import asyncio
import binascii
import fnmatch
import ipaddress
import socket
import weakref
from collections.abc import Iterable

from mitmproxy import connection
from mitmproxy.proxy import mode_specs

from pouch.providers import registry
from pouch.providers.base import Provider

# the modes whose clients authenticate with proxy credentials (what HTTPS_PROXY or SOCKS points at)
PROXY_MODES = (mode_specs.RegularMode, mode_specs.UpstreamMode, mode_specs.Socks5Mode)
# modes whose clients a transport of the operator's already admits
ADMITTED_MODES = (mode_specs.WireGuardMode, mode_specs.LocalMode, mode_specs.TunMode)

# client connection -> hash of the pouch key it authenticated with (never the key itself)
_connection_keys: weakref.WeakKeyDictionary[connection.Client, str] = weakref.WeakKeyDictionary()

# client connection -> the (host, port) pouch forwarded its LLM requests to: only those
# connections skip the passthrough rules (a route to a private address is the operator's)
_expected: weakref.WeakKeyDictionary[connection.Client, set[tuple[str, int]]] = weakref.WeakKeyDictionary()

# hosts the operator configured as upstreams (pouch_route): the credential may go there
routed_hosts: frozenset[str] = frozenset()

# The host clients really reach this gateway on when a load balancer on this host forwards them
# from loopback (pouch_public_listen, which `pouch run --workers` sets): "" when they reach it directly.
public_listen: str = ""


def connection_key(client: connection.Client) -> str | None:
    """The secret hash of the pouch key ``client`` authenticated with, if it did."""
    return _connection_keys.get(client)


def authenticate(client: connection.Client, secret_hash: str) -> None:
    _connection_keys[client] = secret_hash


def forget(client: connection.Client) -> None:
    _connection_keys.pop(client, None)


def proxy_auth(setting: str, mitmproxy_auth: str | None, exposed: bool) -> str:
    """How proxy authentication works: ``mitmproxy`` (the operator's own ``proxyauth`` is in
    charge), ``on`` (required: ``pouch_proxy_auth=on``, or ``auto`` with a proxy listener
    beyond loopback) or ``off``. The gateway and ``pouch run``'s banner both ask this."""
    if mitmproxy_auth:
        return "mitmproxy"
    return "on" if setting == "on" or (setting == "auto" and exposed) else "off"


def exposed(mode: mode_specs.ProxyMode, listen_host: str) -> bool:
    """Whether a listener of ``mode`` takes proxy clients from beyond this host."""
    return isinstance(mode, PROXY_MODES) and (behind_balancer() or not is_loopback(mode.listen_host(listen_host)))


def behind_balancer() -> bool:
    """Whether a load balancer brings clients from beyond this host: they all arrive from
    loopback then, so no peer address says a client is local."""
    return bool(public_listen) and not is_loopback(public_listen)


def local_client(client: connection.Client) -> bool:
    """Whether ``client`` runs on this host (trusted for keyless side paths, and for tunnels
    when proxy authentication is off)."""
    peer = client.peername
    return not behind_balancer() and bool(peer and is_loopback(peer[0]))


def credential_may_go(provider: Provider, host: str, port: int) -> bool:
    """Whether the gateway's credential for ``provider`` may be sent to ``host:port``: one of the
    provider's own hosts, one the operator named (an Azure resource), or one the operator routed."""
    return registry.named_host(provider, host, port) or host.lower().rstrip(".") in routed_hosts


def expect(client: connection.Client, address: tuple[str, int]) -> None:
    """Pouch is about to forward an LLM request of ``client`` to ``address``."""
    _expected.setdefault(client, set()).add((address[0].lower(), address[1]))


def expected(client: connection.Client, address: tuple[str, int]) -> bool:
    return (address[0].lower(), address[1]) in _expected.get(client, ())


def proxy_secret(header: str) -> str | None:
    """The pouch key in a ``Proxy-Authorization: Basic`` header: the password, or the user name
    when the password is empty (``http://<key>@host:port``). None if the header is not Basic."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = binascii.a2b_base64(value.strip().encode(), strict_mode=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (password or user) or None


PLACEHOLDER_WORDS = ("placeholder", "dummy", "unused", "not-needed")


def is_placeholder(credential: str) -> bool:
    """A credential a client sends only because it must send something (``x``, ``dummy``,
    ``sk-placeholder``): shorter than 20 characters, or naming itself a placeholder. No
    provider issues keys that short; on a connection authenticated with a pouch key such a
    credential is replaced by the gateway's, while a real one of the client's own is kept."""
    text = credential.strip()
    return len(text) < 20 or any(word in text.lower() for word in PLACEHOLDER_WORDS)


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host.lower().rstrip(".") == "localhost"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an address is on the public internet: not loopback, private (10/8, 172.16/12,
    192.168/16, fc00::/7), link-local and metadata (169.254/16, fe80::/10), shared (100.64/10),
    unspecified (0.0.0.0 reaches this host) or reserved — also when wrapped in an IPv6 form
    (::ffff:10.0.0.1, 6to4, NAT64)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and (address in _NAT64 or int(address) >> 32 == 0):  # NAT64, IPv4-compatible ::a.b.c.d
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not address.is_multicast


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Passthrough:
    """``pouch_passthrough``: which destinations traffic that is not to an LLM host may reach.

    Words, each one of: ``public`` (any public internet address: the default), ``all``
    (everything, private addresses included), ``none`` (nothing: an LLM-only gateway), or a
    host glob (``github.com``, ``*.corp.example``, ``10.1.2.*``) allowed wherever it resolves.
    A destination is allowed if ``all`` is given, a glob matches the host the client named,
    or ``public`` is given and every address the host resolves to is public."""

    def __init__(self, words: Iterable[str]):
        items = [w.strip().lower() for word in words for w in word.split(",") if w.strip()]
        if "none" in items and len(items) > 1:
            raise ValueError("pouch_passthrough: 'none' cannot be combined with other words")
        for item in items:
            if item not in ("all", "none", "public") and not _GLOB_CHARS.issuperset(item):
                raise ValueError(f"pouch_passthrough: {item!r} is not all, none, public or a host glob")
        self.everything = "all" in items
        self.public = "public" in items
        self.globs = tuple(i for i in items if i not in ("all", "none", "public"))
        self.nothing = not (self.everything or self.public or self.globs)

    def named(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return self.everything or any(fnmatch.fnmatchcase(host, glob) for glob in self.globs)

    async def check(self, host: str, port: int) -> tuple[str | None, str]:
        """(an address to connect to, or None to keep the name; "" or why it is refused)."""
        if self.named(host):
            return None, ""
        if not self.public:
            return None, (f"pouch tunnels no traffic except to LLM APIs (pouch_passthrough={self.describe()})"
                          if self.nothing else f"{host} is not in pouch_passthrough ({self.describe()})")
        try:
            addresses = await resolve(host, port)
        except OSError as e:
            return None, f"cannot resolve {host}: {e.strerror or e}"
        if not all(map(is_public, addresses)):  # which address is not said: a client need not learn them
            return None, (f"{host} is or resolves to a loopback, private or link-local address: pouch does "
                          "not tunnel there unless the operator allows it with pouch_passthrough")
        return str(addresses[0]), ""  # pinned: the name cannot be re-resolved elsewhere in between

    def describe(self) -> str:
        words = ["all"] if self.everything else [*(["public"] if self.public else []), *self.globs]
        return ",".join(words) or "none"


_GLOB_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_*?[]:")


async def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host.strip("[]").split("%", 1)[0])]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OSError(f"no address for {host}")
    return addresses
