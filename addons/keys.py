"""Chain link 1: who is calling. Finds the pouch key where the provider's SDKs send it,
resolves it by hash (cached), and refuses missing, unknown, revoked or expired keys, unknown
or unpriceable endpoints, unreadable bodies and models the key may not use. Side paths (what
official clients call besides the model API, ``pouch.providers.side_paths``) are classified
here too; a public one may come without any key."""

from __future__ import annotations

import asyncio
import hashlib
import logging

from mitmproxy import ctx, exceptions, http

from pouch.domain import errors
from pouch.domain.keys import Key, hash_secret, looks_like_pouch_key, same_hash
from pouch.providers import json_body, side_paths
from pouch.providers.anthropic import long_context_beta
from pouch.providers.base import METERED, UNMETERED
from pouch.rules import admission
from pouch.services import attribution, chain, prompt
from pouch.services import key_cache, perimeter

log = logging.getLogger(__name__)


def parse_body(flow: http.HTTPFlow) -> dict:
    """The body read as the provider will read it (``json_body``), or BadRequest. A compressed
    body is decompressed in place, so the provider gets the very bytes pouch read."""
    request = flow.request
    try:
        json_body.check_headers(request.headers)
        if coding := request.headers.get("content-encoding", ""):
            decoded = json_body.decode_body(request.raw_content or b"", coding)
            del request.headers["content-encoding"]
            request.content = decoded  # and content-length
        return json_body.parse_json_object(request.raw_content or b"")
    except ValueError as e:
        raise errors.BadRequest(str(e)) from None


class Keys:
    def __init__(self):
        self.resolver = key_cache.keys
        self.cache = self.resolver.reset()

    def load(self, loader):
        loader.add_option("pouch_unknown_keys", str, "reject",
                          "What to do with a credential that is not a pouch key: 'reject' (401) or 'observe' "
                          "(let it through untouched and record its usage under a fingerprint).")
        loader.add_option("pouch_tool_calls", int, 3,
                          "Paid server-side tool calls (web search, file search, web fetch, remote MCP) a request "
                          "may make when it sets no bound of its own: injected as max_tool_calls (OpenAI) or "
                          "max_uses (Anthropic), header x-pouch-tool-calls-capped. Each call's fee and the "
                          "context its round re-reads are reserved.")
        loader.add_option("pouch_key_cache", str, "5",
                          "Seconds a key lookup is cached (revocations take effect within this time).")
        loader.add_option("pouch_session", str, "client",
                          "Where a request's session comes from when it sends no x-pouch-session: 'client' (the "
                          "agent's own session id: Claude Code's, Codex's), 'connection' (that, else the client's "
                          "proxy connection) or 'off'.")

    def configure(self, updated):
        if "pouch_unknown_keys" in updated and ctx.options.pouch_unknown_keys not in ("reject", "observe"):
            raise exceptions.OptionsError("pouch_unknown_keys must be 'reject' or 'observe'")
        if "pouch_session" in updated and ctx.options.pouch_session not in attribution.SESSION_MODES:
            raise exceptions.OptionsError(f"pouch_session must be one of {', '.join(attribution.SESSION_MODES)}")
        if "pouch_tool_calls" in updated and ctx.options.pouch_tool_calls < 0:
            raise exceptions.OptionsError("pouch_tool_calls must be 0 or more")
        if "pouch_key_cache" in updated:
            self.cache.ttl = chain.seconds("pouch_key_cache")
        # read once here, not on every request
        self.observe = ctx.options.pouch_unknown_keys == "observe"
        self.tool_calls = ctx.options.pouch_tool_calls
        self.session_mode = ctx.options.pouch_session
        self.allow_unmetered = ctx.options.pouch_unmetered == "allow"

    @chain.fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        found = chain.exchange(flow)
        if found is None:
            return  # not an LLM host: not pouch's business
        await self._admit(flow, found)

    async def _admit(self, flow, found: chain.Exchange) -> None:
        provider, method, path = found.provider, flow.request.method, flow.request.path
        endpoint = provider.endpoint(method, path)
        side = None if endpoint else side_paths.find(provider, method, path)  # what clients call besides the API
        # A public side path (the MCP registry) is called without a key, and no credential goes upstream.
        key = await self._caller(flow, found, keyless=side is not None and not side.credential)
        if key is not None:
            found.key = key  # a refusal from here on is this key's
            key = found.key = await self.resolver.check(key)  # renewed, perhaps
            host = flow.request.host
            if not (key.mock or found.own_credential
                    or perimeter.credential_may_go(provider, host, flow.request.port)):
                how = ("pouch_azure_resource or AZURE_OPENAI_ENDPOINT" if provider.name == "azure"
                       else "pouch_compatible with this port, or pouch_route")
                raise errors.NotConfigured(
                    f"{host}:{flow.request.port} is not a {provider.name} host this gateway is configured for, "
                    f"so its credential does not go there (the operator names them with {how})")

        endpoint = endpoint or (side.endpoint if side else None)
        if endpoint is None:
            # the path without its query: a query may hold a credential (?key=), and this message is kept
            raise errors.UnknownEndpoint(f"pouch does not know {method} {path.split('?')[0]}")
        found.endpoint = endpoint  # a side path's policy is the mock link's: it answers what pouch answers itself
        if endpoint.metering == UNMETERED and not self.allow_unmetered:
            raise errors.EndpointNotMetered(
                f"{endpoint.name} costs money that pouch cannot meter yet, so it is refused "
                "(the operator can allow it with pouch_unmetered=allow)")
        if endpoint.metering != METERED:
            if key is not None:
                found.attribution = self._attribution(flow, None)
            return
        if len(flow.request.raw_content or b"") > prompt.OFF_LOOP_BYTES:  # a big (or compressed) body
            body = await asyncio.to_thread(parse_body, flow)  # reading it must not stall other flows
        else:
            body = parse_body(flow)
        call = found.call = provider.read_call(endpoint, flow.request.path, body)
        found.long_context = long_context_beta(flow.request.headers)
        found.attribution = self._attribution(flow, call)
        admission.allowed(key, call, allow_unmetered=self.allow_unmetered)
        admission.identified(key, found.attribution.end_user)
        found.body = body
        found.tool_calls = self._bound_tools(found, body)

    def _attribution(self, flow, call) -> attribution.Attribution:
        return attribution.attribute(flow.request.headers, call and call.end_user, call and call.client_session,
                                     flow.client_conn.id, self.session_mode)

    @staticmethod
    def _trusted(client) -> bool:
        """Whether a request without any key may pass (a public side path): only from this host
        or a transport of the operator's, else anyone who reaches the gateway could use it as a
        relay to the provider (a remote client authenticates with its key as proxy password)."""
        return isinstance(client.proxy_mode, perimeter.ADMITTED_MODES) or perimeter.local_client(client)

    async def _caller(self, flow, found: chain.Exchange, keyless: bool = False) -> Key | None:
        """The key this request is charged to (None: observed, a credential let through untouched;
        or, when ``keyless`` (a public side path), a request that carries no credential at all).

        A connection that authenticated with a pouch key as its proxy password is that key's,
        whatever credential its requests carry: none or a placeholder (the real key goes
        upstream), the same pouch key, or a credential of the client's own, which is kept and
        charged to the key. Another pouch key on such a connection is refused."""
        provider = found.provider
        credentials = set(provider.credential(flow.request.headers, flow.request.query))
        if len(credentials) > 1:
            raise errors.InvalidKey("several different credentials in one request: send only your pouch key")
        proxy_hash = perimeter.connection_key(flow.client_conn)
        if proxy_hash is not None:
            connection_key = await self.resolver.lookup(proxy_hash)
            if connection_key is None:
                raise errors.InvalidKey("the pouch key this connection authenticated with no longer exists")
            if not credentials:
                return connection_key
            secret = credentials.pop()
            sent_hash = hash_secret(secret)
            if same_hash(sent_hash, proxy_hash):
                return connection_key
            if looks_like_pouch_key(secret.lower()) or await self.resolver.lookup(sent_hash) is not None:
                raise errors.InvalidKey(
                    f"this connection authenticated as pouch key '{connection_key.name}' but the request "
                    "carries another pouch key: send one pouch key, or none")
            if perimeter.is_placeholder(secret):
                return connection_key
            found.own_credential = True  # the client's own credential goes upstream
            return connection_key
        if not credentials and keyless and self._trusted(flow.client_conn):
            return None
        if not credentials:
            raise errors.InvalidKey("no API key: send your pouch key where you would send the provider's key")
        secret = credentials.pop()
        key = await self.resolver.lookup(hash_secret(secret))
        if key is None and not looks_like_pouch_key(secret) and self.observe:
            found.observed = hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        elif key is None:
            raise errors.InvalidKey("unknown API key: use a pouch key (see `pouch keys list`)")
        return key

    def _bound_tools(self, found: chain.Exchange, body: dict) -> tuple:
        """The request's server tools with a bound on their calls: pouch's default where it set none."""
        default, call = self.tool_calls, found.call
        if any(bound.max_calls is None for bound in call.server_tools):
            found.provider.bound_tools(found.endpoint, body, default)
            found.body_changed = True
            found.tools_capped = default
        return tuple((tuple(bound.tools), default if bound.max_calls is None else bound.max_calls)
                     for bound in call.server_tools)
