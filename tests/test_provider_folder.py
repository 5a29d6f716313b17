"""A provider is a folder: a made-up API format ("echo"), written at test time into a folder
outside pouch and named on the registry's line (``registry.FOLDERS``), is metered by the
chain, counted by pouch's tokenizer, mocked, refused in its own error shape and shown in
mitmweb's LLM view, with nothing else changed.

Echo's API: ``POST /v1/echo`` with ``{"model", "input", "limit"}``; the answer is
``{"model", "output", "spent": {"in", "out"}}``, or with ``"stream": true`` events
``data: {"delta": ...}`` and a last ``data: {"spent": ...}``. Its models (``echo-*``) are counted
with cl100k_base, and may bill twice what that counts.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from mitmproxy import contentviews, http
from mitmproxy.test import tflow

from pouch.domain.money import Money
from pouch.providers import registry
from pouch.services import llm_view, prices
from pouch.services.store_thread import store_thread
from pouch.store.database import LedgerRow, ReservationRow, UsageRow
from pouch.tokens.count import count_prompt, input_upper_bound, is_exact
from pouch.tokens.encodings import get_encoding
from tests import pinned_prices
from tests.addon_helpers import create_key, gateway

FOLDER = "pouch_test_echo"
FILES = {
    "__init__.py": '''
        """Echo, an API format made up for tests."""

        from pouch_test_echo.provider import Echo

        PROVIDERS = (Echo(),)
    ''',
    "tokens.py": '''
        """Echo's prompt: its input, plus one token marking the turn; echo-* models bill up to
        twice what cl100k_base counts."""

        import re
        from fractions import Fraction

        from pouch.providers.base import Tokenizer

        TOKENIZERS = (Tokenizer(re.compile(r"echo-").match, "cl100k_base", Fraction(2)),)


        def count_prompt(prompt, body):
            return prompt.text(body.get("input"), "input") + 1
    ''',
    "transcript.py": '''
        from pouch.providers.transcript_format import Renderer, Stream, parameter_line
        from pouch.providers.values import loads


        def request(body):
            return [parameter_line([("model", body.get("model"))]), "── user ──", body["input"]]


        def response(body):
            return [parameter_line([("model", body.get("model"))]), "── assistant ──", body["output"]]


        def stream(events):
            said = [loads(event.data) for event in events]
            text = "".join(part["delta"] for part in said if "delta" in part)
            return Stream({"output": text}, any("spent" in part for part in said), "spent")


        RENDERER = Renderer(request, response, stream)
    ''',
    "provider.py": '''
        """Echo's provider: hosts, the one endpoint, credentials, errors, usage, mock."""

        import json
        import re

        from pouch.domain.errors import BadRequest
        from pouch.domain.usage import Usage
        from pouch.providers.base import METERED, Api, Call, Endpoint, GuardedTracker, Reply
        from pouch.providers.sse import SSESplitter
        from pouch.providers.values import as_dict, count, loads_object
        from pouch_test_echo import tokens, transcript

        ECHO = Endpoint("echo", METERED, "echo")
        API = Api("echo", tokens.count_prompt, lambda body: body.get("input", ""), transcript.RENDERER,
                  re.compile(r"/v1/echo$"))


        def usage_of(spent):
            spent = as_dict(spent)
            read, written = count(spent.get("in")), count(spent.get("out"))
            return None if read is None or written is None else Usage(input_tokens=read, output_tokens=written)


        class Tracker(GuardedTracker):
            name = "echo"

            def __init__(self):
                super().__init__()
                self._splitter, self._usage, self._text = SSESplitter(), None, []

            def _read(self, data):
                for event in self._splitter.feed(data) if data else self._splitter.end():
                    said = loads_object(event.data) or {}
                    self._text.append(said.get("delta", ""))
                    self._usage = usage_of(said.get("spent")) or self._usage
                return data

            def usage(self):
                return self._usage

            def output_text(self):
                return "".join(self._text)

            def model(self):
                return None


        class Echo:
            name = "echo"
            hosts = ("api.echo.test",)
            credential_env = ("ECHO_API_KEY",)
            apis = (API,)
            tokenizers = tokens.TOKENIZERS

            def endpoint(self, method, path):
                return ECHO if (method, path.split("?")[0]) == ("POST", "/v1/echo") else None

            def credential(self, headers, query):
                return [value for value in headers.get_all("x-echo-key") if value]

            def read_call(self, endpoint, path, body):
                if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                    raise BadRequest("echo wants a model")
                return Call(body["model"], body.get("stream") is True, body.get("limit"))

            def cap_output(self, endpoint, body, max_tokens):
                body["limit"] = max_tokens

            def bound_tools(self, endpoint, body, max_calls):
                pass

            def prepare_stream(self, endpoint, body):
                return False

            def usage_from_body(self, endpoint, body):
                return usage_of(body.get("spent")), body.get("model")

            def stream_tracker(self, endpoint, injected_usage):
                return Tracker()

            def error(self, error):
                body = {"fault": {"why": error.message, "code": error.code}}
                headers = {"content-type": "application/json", **error.headers}
                return Reply(error.status, json.dumps(body).encode(), headers)

            def authorize(self, headers, query, secret):
                headers["x-echo-key"] = secret

            def mock(self, endpoint, call, body, usage, text):
                spent = {"in": usage.input_tokens, "out": usage.output_tokens}
                answer = {"model": call.model, "output": text, "spent": spent}
                return Reply(200, json.dumps(answer).encode(), {"content-type": "application/json"})
    ''',
}
# USD per 1M tokens: a token in costs 1,000,000 pico-dollars, a token out 2,000,000.
PRICE = {"model": "echo-1", "provider": "echo", "input": "1", "output": "2", "max_output_tokens": 100,
         "source": "made up for tests/test_provider_folder.py", "as_of": "2026-11-27"}
SAID = "Echo me, echo me"
CL100K = len(get_encoding("cl100k_base").encode(SAID))


@pytest.fixture
def echo(tmp_path, isolated_home):
    """The folder, written where Python finds it, and its name added to the registry's line."""
    folder = tmp_path / FOLDER
    folder.mkdir()
    for name, text in FILES.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    pinned_prices.write(isolated_home, [PRICE])
    prices.price_table.cache_clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(tmp_path))
        patch.setattr(registry, "FOLDERS", (*registry.FOLDERS, FOLDER))
        registry.load()
        yield registry.PROVIDERS["echo"]
    registry.load()  # the line as it was: echo is gone again
    assert registry.for_host("api.echo.test") is None and registry.api("echo") is None
    for module in [m for m in sys.modules if m.split(".")[0] == FOLDER]:
        del sys.modules[module]


@pytest.fixture
def gw(echo, monkeypatch):
    monkeypatch.setenv("ECHO_API_KEY", "echo-real-key")
    with gateway() as gw:
        yield gw


def echo_flow(secret: str, **fields) -> http.HTTPFlow:
    body = {"model": "echo-1", "input": SAID, "limit": 10} | fields
    headers = {"host": "api.echo.test", "content-type": "application/json", "x-echo-key": secret}
    request = http.Request.make("POST", "https://api.echo.test/v1/echo", json.dumps(body).encode(), headers)
    return tflow.tflow(req=request)


def ledger(key) -> tuple[int, int]:
    """(spent, reserved) of the key, in pico-dollars, once the store has caught up."""
    store_thread.drain()
    row = LedgerRow.get(LedgerRow.key == key.id)
    return row.spent_pico, row.reserved_pico


def settled(key) -> int:
    spent, reserved = ledger(key)
    assert reserved == 0 and ReservationRow.select().count() == 0
    return spent


def test_the_folder_is_read_from_the_registry_line(echo):
    assert registry.for_host("api.echo.test") is echo
    assert registry.is_built_in(echo)
    assert registry.api("echo") is echo.apis[0]
    assert registry.for_host("api.openai.com").name == "openai"  # the others are still there


def test_its_tokenizer_counts_its_models(echo):
    assert count_prompt("echo-1", {"input": SAID}, "echo") == CL100K + 1
    assert not is_exact("echo-1")
    assert input_upper_bound("echo-1", 10) == 20
    assert is_exact("gpt-4o")  # the others' tokenizers are still there


def test_a_request_is_metered_through_the_chain(gw):
    key, secret = create_key(budget=Money.usd("1"))
    flow = gw.request(echo_flow(secret))
    assert flow.response is None  # on its way to Echo
    sent = gw.sent(flow)
    assert sent.headers["x-echo-key"] == "echo-real-key"
    assert secret not in bytes(sent.headers).decode() + sent.text
    # The worst case: the prompt as echo's tokenizer counts it, twice over, and the limit.
    assert ledger(key) == (0, 2 * (CL100K + 1) * 1_000_000 + 10 * 2_000_000)
    answer = {"model": "echo-1", "output": "Echo me", "spent": {"in": 6, "out": 3}}
    gw.respond(flow, http.Response.make(200, json.dumps(answer), {"content-type": "application/json"}))
    assert settled(key) == 6 * 1_000_000 + 3 * 2_000_000
    row = UsageRow.get()
    assert (row.provider, row.model, row.endpoint) == ("echo", "echo-1", "echo")
    assert (row.input_tokens, row.output_tokens) == (6, 3)


def test_a_stream_is_metered_as_it_passes(gw):
    key, secret = create_key(budget=Money.usd("1"))
    flow = gw.request(echo_flow(secret, stream=True))
    events = [b'data: {"delta": "Echo"}\n\n', b'data: {"delta": " me"}\n\n',
              b'data: {"spent": {"in": 6, "out": 2}}\n\n']
    received = gw.respond(flow, http.Response.make(200, b"", {"content-type": "text/event-stream"}), chunks=events)
    assert received == b"".join(events)
    assert settled(key) == 6 * 1_000_000 + 2 * 2_000_000


def test_a_refusal_is_in_its_own_shape(gw):
    flow = gw.request(echo_flow("not-a-pouch-key"))
    assert flow.response.status_code == 401
    assert json.loads(flow.response.content)["fault"]["code"] == "invalid_api_key"


def test_a_mock_answers_in_its_own_shape(gw):
    _, secret = create_key(budget=Money.usd("1"), mock=True)
    flow = gw.request(echo_flow(secret))
    assert json.loads(flow.response.content) == {  # what the user said, echoed, with what it would cost
        "model": "echo-1", "output": SAID, "spent": {"in": 2 * (CL100K + 1), "out": CL100K}}
    gw.hook("response", flow)
    store_thread.drain()
    assert UsageRow.get().mock


def test_the_llm_view_shows_its_transcript(echo):
    flow = echo_flow("key")
    flow.response = http.Response.make(200, json.dumps({"model": "echo-1", "output": "hi"}),
                                       {"content-type": "application/json"})
    view = llm_view.LLMView()
    request = view.prettify(flow.request.content, _metadata(flow, flow.request))
    response = view.prettify(flow.response.content, _metadata(flow, flow.response))
    assert request.splitlines() == ["model echo-1", "── user ──", SAID]
    assert response.splitlines()[:3] == ["model echo-1", "── assistant ──", "hi"]
    assert llm_view._api_from_path("/proxied/v1/echo") == "echo"  # a server pouch does not know


def _metadata(flow, message):
    return contentviews.Metadata(flow=flow, http_message=message, content_type="application/json")
