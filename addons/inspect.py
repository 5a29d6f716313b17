"""mitmweb as the LLM traffic inspector (not a chain link: it only explains flows).

Every LLM flow gets a comment saying what it cost, whose key, what was called and what budget
is left; cost and key first, so that mitmweb's narrow comment column shows them, e.g.
``$0.00000375 alice · gpt-4o-mini · in 9 · out 4 · left $4.99999625 after settling
($4.99016825 while in flight) · 370 ms · ttft 120 ms`` (``pouch.services.explain``); flows pouch
refused get a marker by reason and a comment starting with ``refused <reason>``. Side paths
(what official clients call besides the model API) say what they are and what pouch did, and
get no marker: ``side path · claude_code settings · passed (alice)``, ``telemetry ·
event_logging · blocked locally (alice)``; requests pouch answered itself say so:
``alice · models.list · answered locally (mock key)``.
Streamed LLM responses keep their body (bounded: ``pouch_stream_bodies``) for the LLM view.
Find them in mitmweb with filter expressions: ``~comment " alice · "`` (one key's flows),
``~comment "^refused"`` or ``~marked`` (refusals), ``~comment "refused budget"``,
``~comment "^mock "``, ``~comment "observed:"``, ``~comment "^side path"``, ``~comment "^telemetry"``,
``~comment "answered locally"``.
Commands for mitmweb's / mitmproxy's command bar: ``pouch.keys``, ``pouch.usage``,
``pouch.budget KEY``.
"""

from __future__ import annotations

import logging
import weakref

from mitmproxy import command, contentviews, ctx, exceptions, http
from mitmproxy.utils import human

from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.services import chain, exchange, web_redaction
from pouch.services import keys as key_service
from pouch.services.explain import explain
from pouch.services.llm_view import LLMView
from pouch.services.stream_body import KeptStream
from pouch.store import keys as key_store
from pouch.store import usage as usage_store

log = logging.getLogger(__name__)

MARKERS = {  # mitmproxy marker shortcodes, one per refusal reason
    "auth": ":lock:", "model": ":no_entry_sign:", "rate": ":hourglass:", "budget": ":money_with_wings:",
    "price": ":grey_question:", "request": ":x:", "endpoint": ":x:", "store": ":warning:", "gateway": ":warning:",
}


class Inspect:
    def __init__(self):
        self.view = LLMView()
        self.keep_limit = 0
        self._kept: weakref.WeakKeyDictionary[http.HTTPFlow, KeptStream] = weakref.WeakKeyDictionary()

    def load(self, loader):
        contentviews.add(self.view)  # replaces a previous registration (script reload)
        web_redaction.install()  # mitmweb shows no pouch key or proxy credentials, also before the chain ran
        loader.add_option("pouch_stream_bodies", str, "4m",
                          "How much of each streamed LLM response to keep for mitmweb's LLM view and saved flows "
                          "(e.g. 4m, 512k; 0: none). Bytes over it are dropped and a marker at the end says how "
                          "many; metering always reads the whole stream. Kept only where something shows or saves "
                          "flows (mitmweb, the mitmproxy console, save_stream_file, hardump), so n streams in flight "
                          "hold at most n times this. mitmproxy's store_streamed_bodies=true keeps whole bodies "
                          "instead.")

    def configure(self, updated):
        if "pouch_stream_bodies" in updated:
            try:
                self.keep_limit = human.parse_size(ctx.options.pouch_stream_bodies) or 0
            except ValueError as e:
                raise exceptions.OptionsError(f"pouch_stream_bodies: {e} (a size such as 4m, 512k or 0)") from e

    def running(self):
        # mitmweb's flow list shows the comment column, unless the operator chose columns.
        if "web_columns" in ctx.options and not ctx.options.has_changed("web_columns"):
            columns = list(ctx.options.web_columns)
            ctx.options.update(web_columns=columns[: columns.index("status") + 1] + ["comment"]
                               + columns[columns.index("status") + 1:])

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # Last in the chain: the usage link's stream callable (if any) is already in place.
        stream = flow.response.stream
        if not stream or chain.existing(flow) is None or not self._keeping():
            return
        kept = self._kept[flow] = KeptStream(self.keep_limit)

        def keep(data: bytes):
            chunks = stream(data) if callable(stream) else data
            try:
                if not isinstance(chunks, bytes):
                    chunks = list(chunks)  # an iterator would be used up by keeping it
                for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
                    kept.add(chunk)
            except Exception:  # a stream callable must never raise: the client's bytes come first
                log.exception("pouch: keeping a stream body failed")
            return chunks

        flow.response.stream = keep

    def _keeping(self) -> bool:
        """Keep stream bodies only when something can show or save them: headless, they
        would be memory spent for nobody."""
        options = ctx.options
        if self.keep_limit <= 0 or ("store_streamed_bodies" in options and options.store_streamed_bodies):
            return False  # mitmproxy keeps them itself, whole
        saved = any(name in options and getattr(options, name) for name in ("save_stream_file", "hardump"))
        return saved or ctx.master.addons.get("view") is not None

    def response(self, flow: http.HTTPFlow) -> None:
        self._keep(flow)
        self._explain(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._keep(flow)  # what arrived of a stream cut short
        self._explain(flow)

    def _keep(self, flow: http.HTTPFlow) -> None:
        kept = self._kept.pop(flow, None)
        if kept is not None and flow.response is not None and flow.response.raw_content is None:
            flow.response.raw_content = kept.body()

    def _explain(self, flow: http.HTTPFlow) -> None:
        story = explain(flow)
        if story is None:
            return
        flow.comment = story
        refused = (exchange.snapshot(flow) or {}).get("refused")
        if refused:
            flow.marked = MARKERS.get(refused["kind"], ":x:")

    @command.command("pouch.keys")
    def keys(self) -> str:
        """pouch keys with this period's spend."""
        now = utcnow()
        lines = []
        for key in key_store.all_keys():
            d = key_service.describe(key, now)
            budget = f"${d['budget_usd']}" if d["budget_usd"] else "no budget"
            flags = " ".join(f for f in ("mock", "revoked") if d[f])
            lines.append(f"{d['name']} ({d['prefix']}…): ${d['spent_usd']} spent, ${d['reserved_usd']} held, "
                         f"{budget} per {d['period']} {flags}".rstrip())
        return "\n".join(lines) or "no keys (create one: pouch keys create --name NAME)"

    @command.command("pouch.usage")
    def usage(self) -> str:
        """Requests and cost per key, all time."""
        rows = usage_store.totals("key")
        return "\n".join(f"{r['key']}: {r['requests']} requests, in {r['input_tokens']} / out "
                         f"{r['output_tokens']} tokens, ${r['cost_usd']}" for r in rows) or "no usage yet"

    @command.command("pouch.budget")
    def budget(self, key: str) -> str:
        """One key's budget: spent, held by requests in flight, and left this period."""
        d = key_service.describe(key_store.get(key))
        if d["budget_usd"] is None:
            return f"{d['name']}: no budget, ${d['spent_usd']} spent this period"
        left = Money.usd(d["budget_usd"]) - Money.usd(d["spent_usd"]) - Money.usd(d["reserved_usd"])
        ends = f", resets {d['window_end'][:16]}" if d["window_end"] else ""
        return (f"{d['name']}: ${d['spent_usd']} spent + ${d['reserved_usd']} held of ${d['budget_usd']} "
                f"({d['period']}{ends}); {left} left")
