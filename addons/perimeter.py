"""The perimeter (not a chain link: it runs before the keys link): who may use the proxy and
where it may connect.

- The gateway listens on 127.0.0.1 unless the operator names another host.
- A client may authenticate with a pouch key as its proxy password
  (``HTTPS_PROXY=http://any:<pouch-key>@host:port``): that connection's LLM requests are then
  charged to the key. Listening beyond loopback makes it required for everything except LLM
  requests, which carry a pouch key of their own (``pouch_proxy_auth``).
- Traffic that is not to an LLM API is tunnelled only for authenticated clients (loopback
  ones count when authentication is off) and only where ``pouch_passthrough`` allows: by
  default the public internet, never loopback, private, link-local or metadata addresses.
- A provider pouch ships is called only over https on port 443, so its credential never
  travels in cleartext.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence

from mitmproxy import connection, ctx, exceptions, http
from mitmproxy.proxy import mode_specs, server_hooks
from mitmproxy.utils import asyncio_utils

from pouch.domain import errors
from pouch.domain.keys import hash_secret
from pouch.providers import registry
from pouch.providers.registry import for_host
from pouch.services import chain, key_cache, perimeter

log = logging.getLogger(__name__)

PROXY_MODES = perimeter.PROXY_MODES
ADMITTED_MODES = perimeter.ADMITTED_MODES


def canonical(host: str) -> str:
    return host.lower().rstrip(".")


def host_of(name: str) -> str:
    """The host of a Host header / authority value (``[::1]:443`` -> ``::1``)."""
    name = name.strip()
    if name.startswith("["):
        return canonical(name[1:].split("]", 1)[0])
    return canonical(name.rsplit(":", 1)[0] if name.count(":") == 1 else name)


def refusal(status: int, message: str) -> http.Response:
    headers = {"content-type": "text/plain; charset=utf-8"}
    if status == 407:
        headers["proxy-authenticate"] = 'Basic realm="pouch: your pouch key is the password"'
    return http.Response.make(status, f"pouch: {message}\n", headers)


async def port_free(port: int | None, transport: str, wait: float = 5.0) -> None:
    """Wait until ``port`` can be bound on 127.0.0.1 for ``transport`` (tcp, udp or both)."""
    kinds = [socket.SOCK_STREAM] * (transport != "udp") + [socket.SOCK_DGRAM] * (transport != "tcp")
    for _ in range(int(wait / 0.05)):
        try:
            for kind in kinds:
                with socket.socket(socket.AF_INET, kind) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind(("127.0.0.1", port or 0))
            return
        except OSError:
            await asyncio.sleep(0.05)


class Perimeter:
    def __init__(self):
        self.passthrough = perimeter.Passthrough(["public"])

    def load(self, loader):
        loader.add_option(
            "pouch_proxy_auth", str, "auto",
            "Proxy authentication with a pouch key as the password (HTTPS_PROXY=http://any:<pouch-key>@host:port): "
            "'auto' (required when the gateway listens beyond loopback), 'on' or 'off'. Required means: "
            "traffic other than LLM requests (which carry their own pouch key) needs it. Credentials a "
            "client sends are always checked, and attribute its LLM requests to that key.")
        loader.add_option(
            "pouch_passthrough", Sequence[str], ["public"],
            "Where traffic that is not to an LLM API may be tunnelled (for authenticated clients): words, "
            "repeatable or comma-separated: 'public' (the public internet: the default), 'all' (private "
            "addresses too), 'none' (nothing), or host globs allowed wherever they resolve "
            "(github.com, *.corp.example, 10.1.2.*). Loopback, private, link-local and metadata "
            "addresses are reached only when named or with 'all'.")
        loader.add_option(
            "pouch_public_listen", str, "",
            "The host clients really connect to when a load balancer on this host forwards them from "
            "loopback (`pouch run --workers N` sets it): beyond loopback, proxy authentication works as if "
            "this gateway listened there, and no client counts as local, though all arrive from 127.0.0.1.")

    def configure(self, updated):
        if "pouch_proxy_auth" in updated and ctx.options.pouch_proxy_auth not in ("auto", "on", "off"):
            raise exceptions.OptionsError("pouch_proxy_auth must be 'auto', 'on' or 'off'")
        if "pouch_passthrough" in updated:
            try:
                self.passthrough = perimeter.Passthrough(ctx.options.pouch_passthrough)
            except ValueError as e:
                raise exceptions.OptionsError(str(e)) from e
        if "pouch_public_listen" in updated:
            perimeter.public_listen = ctx.options.pouch_public_listen.strip().strip("[]")
        if "listen_host" in updated and not ctx.options.has_changed("listen_host"):
            # mitmproxy's default is every interface, pouch's loopback. mitmproxy loads scripts
            # after it starts listening, so servers already up are moved (at start-up, before
            # anything is served: a client of theirs is not on loopback, so is refused all but
            # LLM requests with a key in the meantime).
            ctx.options.update(listen_host="127.0.0.1")
            asyncio_utils.create_task(self.rebind(), name="pouch: listen on loopback", keep_ref=True)

    @staticmethod
    async def rebind() -> None:
        servers = ctx.master.addons.get("proxyserver").servers
        while servers.is_updating:  # mitmproxy is still bringing them up
            await asyncio.sleep(0.01)
        modes = [mode_specs.ProxyMode.parse(spec) for spec in ctx.options.mode]
        moving = [s.mode for s in servers if s.is_running and s.mode.custom_listen_host is None]
        if not moving:
            return
        await servers.update([m for m in modes if m not in moving])
        for mode in moving:  # a socket just closed (UDP above all) may take a moment to free its port
            await port_free(mode.listen_port(ctx.options.listen_port), mode.transport_protocol)
        await servers.update(modes)
        if failed := [s.mode.full_spec for s in servers if not s.is_running]:
            log.error("pouch: could not move %s to 127.0.0.1; give --listen-host explicitly", ", ".join(failed))

    def auth_required(self) -> bool:
        """Whether pouch requires proxy credentials (not with mitmproxy's own proxyauth in charge)."""
        exposed = bool(self.exposed_listeners())
        return perimeter.proxy_auth(ctx.options.pouch_proxy_auth, ctx.options.proxyauth, exposed) == "on"

    def exposed_listeners(self) -> list[str]:
        """The proxy listeners reachable from beyond this host."""
        exposed = []
        for spec in ctx.options.mode:
            try:
                mode = mode_specs.ProxyMode.parse(spec)
            except ValueError:
                continue
            if perimeter.exposed(mode, ctx.options.listen_host):
                host = mode.listen_host(ctx.options.listen_host)
                where = f"{host or '*'}:{mode.listen_port(ctx.options.listen_port)}"
                if perimeter.behind_balancer():
                    where = f"{perimeter.public_listen} (a load balancer forwards to {where})"
                exposed.append(where)
        return exposed

    def running(self):
        exposed = self.exposed_listeners()
        where = f"every client that can reach {', '.join(exposed)}" if exposed else "this host only (loopback)"
        auth = ("mitmproxy's own (proxyauth)" if ctx.options.proxyauth
                else "required (a pouch key as the proxy password)" if self.auth_required()
                else "optional (a pouch key as the proxy password attributes a connection to it)")
        log.info("pouch: serving %s; proxy authentication %s; other traffic tunnelled to: %s",
                 where, auth, self.passthrough.describe())
        if exposed and not self.auth_required() and not ctx.options.proxyauth:
            log.warning("pouch: listening beyond loopback with pouch_proxy_auth=off: only LLM requests with "
                        "a pouch key are served to other hosts; nothing else is tunnelled for them")

    # -- who is calling -----------------------------------------------------------------

    async def authenticate(self, client: connection.Client, header: str) -> tuple[int, str] | None:
        """Check proxy credentials; None when they hold a usable pouch key (the connection is
        then that key's), else (status, why)."""
        secret = perimeter.proxy_secret(header)
        if not secret:
            return 407, "proxy credentials must be Basic, with your pouch key as the password"
        try:
            key = await key_cache.keys.lookup(hash_secret(secret))
            if key is None:
                return 407, "the proxy password is not a pouch key (see `pouch keys list`)"
            key = await key_cache.keys.check(key)
        except errors.InvalidKey as e:
            return 407, e.message
        except errors.PouchError as e:
            return e.status, e.message
        perimeter.authenticate(client, key.secret_hash)
        return None

    async def authenticated(self, client: connection.Client, flow: http.HTTPFlow | None = None) -> bool:
        secret_hash = perimeter.connection_key(client)
        if secret_hash is not None:  # checked again each time (cached): a revoked key loses its tunnels
            try:
                key = await key_cache.keys.lookup(secret_hash)
                if key is not None and await key_cache.keys.check(key):
                    return True
            except errors.PouchError:
                pass
            perimeter.forget(client)
            return False
        if ctx.options.proxyauth:
            auth = ctx.master.addons.get("proxyauth")
            return client in auth.authenticated or bool(flow and flow.metadata.get("proxyauth"))
        if isinstance(client.proxy_mode, ADMITTED_MODES):
            return True
        return not self.auth_required() and perimeter.local_client(client)

    async def credentials(self, flow: http.HTTPFlow) -> bool:
        """Take proxy credentials off the request (they never go upstream); False if refused."""
        header = flow.request.headers.get("proxy-authorization")
        if header is None or not isinstance(flow.client_conn.proxy_mode, PROXY_MODES):
            return True
        del flow.request.headers["proxy-authorization"]
        if ctx.options.proxyauth:
            return True
        refused = await self.authenticate(flow.client_conn, header)
        if refused:
            perimeter.forget(flow.client_conn)  # a failed credential ends what an earlier one allowed
            flow.response = refusal(*refused)
        return not refused

    # -- where to -------------------------------------------------------------------------

    async def tunnel_refusal(self, client, host: str, port: int, flow=None) -> http.Response | None:
        if not await self.authenticated(client, flow):
            if self.auth_required():
                return refusal(407, "this gateway tunnels traffic other than LLM requests only for clients "
                                    "that authenticate: HTTPS_PROXY=http://pouch:<your pouch key>@host:port")
            return refusal(403, "this gateway tunnels traffic other than LLM requests only for its own host")
        _, reason = await self.passthrough.check(host, port)
        return refusal(403, reason) if reason else None

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response or not await self.credentials(flow):
            return
        if for_host(flow.request.host, flow.request.port) is None:
            flow.response = await self.tunnel_refusal(flow.client_conn, flow.request.host, flow.request.port, flow)

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not await self.credentials(flow):
            return
        found = chain.exchange(flow)
        if found is not None:
            provider = found.provider
            self.check_target(flow, provider)
            if not flow.response:
                self.check_transport(flow, provider)
        elif not isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode):
            flow.response = await self.tunnel_refusal(flow.client_conn, flow.request.host, flow.request.port, flow)

    @staticmethod
    def check_target(flow: http.HTTPFlow, provider) -> None:
        """The host a request names (Host header, :authority, an absolute-form target, the
        client's TLS SNI) must be the one it goes to: shared front ends route by those, so
        another name there would take the credential to whoever serves it. The host is then
        made canonical (lower case, no trailing dot) for every later link."""
        request = flow.request
        host = canonical(request.host)
        named = [request.host_header or "", request.authority or ""]
        if not isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode):
            named.append(flow.client_conn.sni or "")  # in reverse mode it names the gateway
        others = sorted({name for name in map(host_of, named) if name and name != host})
        if others:
            chain.refuse(flow, errors.BadRequest(
                f"this request was sent to {host} but names {', '.join(others)} (Host, authority or TLS "
                "server name): refused, so that no credential goes to another host"))
        elif request.host != host:
            request.host = host

    @staticmethod
    def check_transport(flow: http.HTTPFlow, provider) -> None:
        """A provider pouch ships: https on 443 only (or wherever the operator routed it)."""
        request = flow.request
        if not registry.is_built_in(provider):
            return  # a server the operator configured: its scheme and port are theirs
        routed = request.host in perimeter.routed_hosts
        if request.scheme != "https" or (request.port != 443 and not routed):
            chain.refuse(flow, errors.InsecureRequest(
                f"pouch calls {provider.name} only over https on port 443, so that no credential travels in "
                f"cleartext: use https://{request.host}{request.path.split('?', 1)[0]}"))

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """The last word on every upstream connection: LLM requests pouch forwarded go where it
        sends them; anything else only for authenticated clients and allowed destinations."""
        server, client = data.server, data.client
        if server.error or server.address is None:
            return
        host, port = server.address[0], server.address[1]
        mode = client.proxy_mode
        if perimeter.expected(client, (host, port)):
            server.sni = host  # the host pouch forwards to: never a name the client chose
            return
        if isinstance(mode, mode_specs.ReverseMode) or (
                isinstance(mode, mode_specs.UpstreamMode) and (host, port) == mode.address):
            return  # the operator's target or upstream proxy (which the request itself was checked for)
        if not await self.authenticated(client):
            server.error = "pouch: this client may not open connections other than LLM requests"
            return
        if server.via is not None:
            return  # through the operator's upstream proxy, which resolves and decides
        address, reason = await self.passthrough.check(host, port)
        if reason:
            server.error = f"pouch: {reason}"
        elif address is not None:
            if server.sni is None and address != host:
                server.sni = host
            server.address = (address, port)
