"""What the per-addon tests share: OpenAI-shaped flows, keys in the test's own store, and the
chain (keys -> ratelimit -> budget -> mock -> usage -> upstream) driven hook by hook the way
mitmproxy drives it: started with ``running``, every addon's hook called in order whether an
earlier one answered or not, a response set in the request phase getting only the
``response`` hook, and ``done`` at the end."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json

from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy.addons import core
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons, tflow

from addons.budget import Budget
from addons.gateway import Gateway as Shared
from addons.keys import Keys
from addons.mock import Mock
from addons.ratelimit import RateLimit
from addons.upstream import Upstream
from addons.usage import UsageMeter
from pouch.domain.periods import utcnow
from pouch.services import exchange
from pouch.services import key_cache
from pouch.services.store_thread import store_thread
from pouch.store import database
from pouch.store import keys as key_store

MODEL = "gpt-4o-mini"  # $0.15 input, $0.075 cached input, $0.60 output per 1M tokens; max output 16384
HELLO = [{"role": "user", "content": "Hello"}]  # 8 prompt tokens for gpt-4o-mini (3 + 1 + 1 + 3)


def chat_body(text: str | None = None, *, model: str = MODEL, **fields) -> dict:
    messages = HELLO if text is None else [{"role": "user", "content": text}]
    return {"model": model, "messages": messages, **fields}


def openai_flow(
    path: str = "/v1/chat/completions",
    body: dict | None = None,
    *,
    method: str = "POST",
    secret: str | None = None,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
    host: str = "api.openai.com",
) -> http.HTTPFlow:
    """A request as an OpenAI SDK sends it: ``body`` as JSON (or raw ``content``), ``secret``
    as its Bearer token."""
    sent = {"host": host, "content-type": "application/json"}
    if secret is not None:
        sent["authorization"] = f"Bearer {secret}"
    sent |= headers or {}
    if content is None:
        content = b"" if body is None else json.dumps(body).encode()
    return tflow.tflow(req=http.Request.make(method, f"https://{host}{path}", content, sent))


def create_key(name: str = "alice", **attributes):
    """(Key, secret) in the test's store; ``attributes`` as ``pouch.store.keys.create`` takes them."""
    return key_store.create(name, utcnow(), **attributes)


def error_of(flow: http.HTTPFlow) -> dict:
    """The OpenAI-shaped ``error`` object of a refusal."""
    return json.loads(flow.response.content)["error"]


class Gateway:
    """The chain's links in a ``taddons`` context, with the store opened by ``pouch_db``."""

    def __init__(self, tctx: taddons.context):
        self.tctx = tctx
        self.shared = Shared()
        self.keys, self.ratelimit, self.budget = Keys(), RateLimit(), Budget()
        self.mock, self.usage, self.upstream = Mock(), UsageMeter(), Upstream()
        self.links = (self.shared, self.keys, self.ratelimit, self.budget, self.mock, self.usage, self.upstream)

    @property
    def chain(self) -> list:
        """The addons mitmproxy calls, in order: the links, and whatever they add at start-up."""
        return [addon for addon in self.tctx.master.addons.chain if not isinstance(addon, core.Core)]

    def run(self, awaitable):
        return self.tctx.master.event_loop.run_until_complete(awaitable)

    def configure(self, **options) -> None:
        self.tctx.configure(self.shared, **options)

    def lifecycle(self, name: str) -> None:
        """``running`` or ``done`` of every addon, on the event loop (they may start tasks)."""

        async def call():
            for addon in self.chain:
                if (method := getattr(addon, name, None)) is not None:
                    method()

        self.run(call())
        self.run(asyncio.sleep(0))  # let cancelled tasks finish

    def hook(self, name: str, flow: http.HTTPFlow, *, after=None, until=None, skip=()) -> None:
        """Call hook ``name`` of every addon in chain order: from the one following the link
        ``after``, to the link ``until``, leaving out those in ``skip``."""
        addons = self.chain
        if after is not None:
            addons = addons[addons.index(after) + 1 :]
        for addon in addons:
            if addon not in skip and (method := getattr(addon, name, None)) is not None:
                result = method(flow)
                if inspect.isawaitable(result):
                    self.run(result)
            if addon is until:
                return

    def request(self, flow: http.HTTPFlow, **where) -> http.HTTPFlow:
        self.hook("request", flow, **where)
        return flow

    def sent(self, flow: http.HTTPFlow) -> http.Request:
        """The request that leaves for the provider once its connection is open: the upstream
        credential is only in that copy (``upstream_connection.when_connected``), never in the flow."""
        return self.upstream.late.sending(flow) or flow.request

    def respond(self, flow: http.HTTPFlow, response: http.Response, chunks=()) -> bytes:
        """The provider answers: ``responseheaders``; then, if a link set a stream callable, each
        of ``chunks`` and the final ``b""`` through it; then ``response``. Returns what the
        client receives."""
        flow.response = response
        self.hook("responseheaders", flow)
        received = response.content
        if callable(flow.response.stream):
            received = self.stream(flow, chunks, end=True)
        self.hook("response", flow)
        return received

    @staticmethod
    def stream(flow: http.HTTPFlow, chunks, *, end: bool) -> bytes:
        """Feed ``chunks`` (and, with ``end``, the final ``b""``) through the stream callable."""
        out = []
        for chunk in (*chunks, b"") if end else chunks:
            got = flow.response.stream(chunk)
            out.extend([got] if isinstance(got, bytes) else got)
        return b"".join(out)

    def fail(self, flow: http.HTTPFlow, message: str = "connection reset by peer") -> None:
        flow.error = mflow.Error(message)
        self.hook("error", flow)


@contextlib.contextmanager
def gateway(*, started: bool = True, **options):
    """The chain with ``options`` set; ``started``: its ``running`` hooks ran (and ``done`` runs
    at the end), as when mitmproxy starts and stops."""
    with taddons.context() as tctx:
        tctx.master.addons.register(Proxyserver())  # declares the proxy options the links read
        gw = Gateway(tctx)
        for link in gw.links:
            tctx.master.addons.add(link)
        gw.configure(pouch_db="", **options)
        if started:
            gw.lifecycle("running")
        try:
            yield gw
        finally:
            if started:
                gw.lifecycle("done")
            store_thread.drain()
            db = database.database.obj
            store_thread.call(db.close)  # the store thread's own connection
            db.close()
            key_cache.keys.reset()  # a test's pouch_key_cache (0, say) must not reach the next test's


def sse_chunks(events, size: int = 37) -> list[bytes]:
    """A stream's bytes cut every ``size`` bytes, as the network cuts them (mid-event, mid-line)."""
    data = b"".join(events)
    return [data[i : i + size] for i in range(0, len(data), size)]


_NOTHING = dict.fromkeys(("provider", "endpoint", "client_path", "key", "observed", "own_credential", "call",
                          "reservation", "output_capped", "tools_capped", "mock", "local", "refused", "usage"))


def facts(flow: http.HTTPFlow) -> dict:
    """What the chain found out about ``flow``, as the JSON snapshot mitmweb and saved flows get
    (every field None for a flow no link took up)."""
    return exchange.snapshot(flow) or dict(_NOTHING)


def exchange_of(flow: http.HTTPFlow) -> exchange.Exchange:
    """The flow's live exchange (body, body_changed, injected_usage are not in the snapshot)."""
    return exchange.existing(flow)
