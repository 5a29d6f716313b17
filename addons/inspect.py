"""mitmweb as the LLM traffic inspector (not a chain link: it only explains flows).

Every LLM flow gets a comment saying who called what and what it cost, e.g.
``key alice · gpt-4o-mini · in 9 · out 4 · $0.00000375 · left $4.99 · 370 ms · ttft 120 ms``;
flows pouch refused get a marker by reason and a comment starting with ``refused <reason>``.
Find them in mitmweb with filter expressions: ``~comment "key alice "`` (one key's flows),
``~comment "^refused"`` or ``~marked`` (refusals), ``~comment "refused budget"``,
``~comment mock``, ``~comment observed``.
Commands for mitmweb's / mitmproxy's command bar: ``pouch.keys``, ``pouch.usage``,
``pouch.budget KEY``.
"""

from __future__ import annotations

from mitmproxy import command, contentviews, ctx, http

from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.services import chain
from pouch.services import keys as key_service
from pouch.services.explain import explain
from pouch.services.llm_view import LLMView
from pouch.store import keys as key_store
from pouch.store import usage as usage_store

MARKERS = {  # mitmproxy marker shortcodes, one per refusal reason
    "auth": ":lock:", "model": ":no_entry_sign:", "rate": ":hourglass:", "budget": ":money_with_wings:",
    "price": ":grey_question:", "request": ":x:", "endpoint": ":x:", "store": ":warning:", "gateway": ":warning:",
}


class Inspect:
    def __init__(self):
        self.view = LLMView()

    def load(self, loader):
        contentviews.add(self.view)  # replaces a previous registration (script reload)

    def running(self):
        # mitmweb's flow list shows the comment column, unless the operator chose columns.
        if "web_columns" in ctx.options and not ctx.options.has_changed("web_columns"):
            columns = list(ctx.options.web_columns)
            ctx.options.update(web_columns=columns[: columns.index("status") + 1] + ["comment"]
                               + columns[columns.index("status") + 1:])

    def response(self, flow: http.HTTPFlow) -> None:
        self._explain(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._explain(flow)

    def _explain(self, flow: http.HTTPFlow) -> None:
        story = explain(flow)
        if story is None:
            return
        flow.comment = story
        refused = flow.metadata.get(chain.REFUSED)
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
