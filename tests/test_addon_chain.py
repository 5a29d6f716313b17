"""addons/chain.py: mitmproxy sees one addon; the chain calls its links' hooks in their order,
awaits the async ones, and registers the links' options and commands as mitmproxy would."""

import asyncio

import pytest
from mitmproxy import command, hooks
from mitmproxy.test import taddons, tflow

from addons.chain import Chain


class Link:
    def __init__(self, name, seen):
        self.name, self.seen = name, seen

    def load(self, loader):
        loader.add_option(f"{self.name}_option", int, 1, "an option")

    def requestheaders(self, flow):
        self.seen.append((self.name, "requestheaders"))

    async def request(self, flow):
        await asyncio.sleep(0)
        self.seen.append((self.name, "request"))

    def configure(self, updated):
        self.seen.append((self.name, "configure"))


class Quiet:
    """A link with no flow hooks at all, and a command."""

    def __init__(self, seen):
        self.seen = seen

    def response(self, flow):
        self.seen.append(("quiet", "response"))

    @command.command("chaintest.hello")
    def hello(self) -> str:
        return "hello"


class Failing:
    def requestheaders(self, flow):
        raise RuntimeError("boom")


def test_hooks_run_in_the_links_order_async_ones_awaited():
    seen = []
    chain = Chain(Link("a", seen), Quiet(seen), Link("b", seen))
    with taddons.context(chain) as tctx:
        flow = tflow.tflow(resp=True)
        seen.clear()
        tctx.master.addons.trigger(hooks.ConfigureHook(set()))
        asyncio.run(tctx.master.addons.handle_lifecycle(_hook("requestheaders", flow)))
        asyncio.run(tctx.master.addons.handle_lifecycle(_hook("request", flow)))
        asyncio.run(tctx.master.addons.handle_lifecycle(_hook("response", flow)))
    assert seen == [("a", "configure"), ("b", "configure"),
                    ("a", "requestheaders"), ("b", "requestheaders"),
                    ("a", "request"), ("b", "request"),
                    ("quiet", "response")]


def test_a_hook_no_link_has_is_not_there():
    chain = Chain(Link("a", []))
    assert not hasattr(chain, "responseheaders") and not hasattr(chain, "error")
    assert not asyncio.iscoroutinefunction(chain.configure), "mitmproxy calls configure synchronously"
    assert asyncio.iscoroutinefunction(chain.request)


def test_links_options_commands_and_names_are_registered():
    seen = []
    first, quiet = Link("a", seen), Quiet(seen)
    with taddons.context(Chain(first, quiet)) as tctx:
        assert tctx.options.a_option == 1
        assert tctx.master.commands.execute("chaintest.hello") == "hello"
        assert tctx.master.addons.get("a") is first
        assert tctx.master.addons.get("quiet") is quiet


def test_an_exception_stops_the_later_links_of_that_event_as_for_a_scripts_children():
    seen = []
    chain = Chain(Link("a", seen), Failing(), Link("b", seen))
    with pytest.raises(RuntimeError):
        chain.requestheaders(tflow.tflow())
    assert seen == [("a", "requestheaders")]


def test_the_gateway_chain_is_one_addon_in_order():
    from addons.pouch import addons
    from addons.gateway import Gateway
    from addons.inspect import Inspect
    from addons.metrics import Metrics, MetricsStart
    from addons.upstream import Upstream

    assert len(addons) == 1 and isinstance(addons[0], Chain)
    kinds = [type(link) for link in addons[0].links]
    assert kinds[0] is Gateway and kinds[-2] is Inspect
    assert kinds[1] is MetricsStart and kinds[-1] is Metrics, "the overhead clock spans every flow hook"
    assert kinds.index(Upstream) == len(kinds) - 3, "upstream is the last link before the inspector"


def _hook(name, flow):
    from mitmproxy.proxy.layers import http as layers_http

    kind = {"requestheaders": layers_http.HttpRequestHeadersHook, "request": layers_http.HttpRequestHook,
            "response": layers_http.HttpResponseHook}[name]
    return kind(flow)


@pytest.mark.parametrize("freeze", [False, True])
def test_the_process_gateway_freezes_what_lives_at_start_a_gateway_in_a_test_does_not(freeze):
    import gc

    from tests.addon_helpers import gateway

    before = gc.get_freeze_count()
    with gateway(started=False) as gw:
        gw.shared.freeze_heap = freeze
        try:
            gw.lifecycle("running")
            assert (gc.get_freeze_count() > before + 10_000) is freeze
            gw.lifecycle("done")
        finally:
            if freeze:
                gc.unfreeze()  # this test process keeps collecting what the other tests leave


def test_a_reloaded_chain_s_links_are_found_by_name_not_the_old_ones():
    """mitmproxy reloads a changed script: it removes the old chain (its done hook runs), then
    registers the new one, whose links must be the ones found by name (the websocket link reads
    the ratelimit link's state that way)."""
    with taddons.context() as tctx:
        old = Chain(Link("a", []))
        tctx.master.addons.add(old)
        assert tctx.master.addons.get("a") is old.links[0]
        tctx.master.addons.remove(old)
        assert tctx.master.addons.get("a") is None
        new = Chain(Link("a", []))
        tctx.master.addons.add(new)
        assert tctx.master.addons.get("a") is new.links[0]


def test_a_link_named_like_another_addon_is_refused_as_mitmproxy_refuses_it():
    from mitmproxy import exceptions

    class Named:
        name = "core"  # mitmproxy's own

    with taddons.context() as tctx:
        with pytest.raises(exceptions.AddonManagerError, match="already exists"):
            tctx.master.addons.add(Chain(Named()))


def test_done_runs_every_links_done_hook():
    ended = []

    class Ends:
        def __init__(self, name):
            self.name = name

        def done(self):
            ended.append(self.name)

    chain = Chain(Ends("x"), Ends("y"))
    chain.done()
    assert ended == ["x", "y"]
