"""Chain link 6 (addons/upstream.py): the real credential, routes, pouch-only headers, and the
last line of defence against forwarding anything unaccounted."""

import json

import pytest
from mitmproxy import exceptions, http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons

from addons.upstream import Route, Upstream, parse_route
from pouch.domain.money import Money
from pouch.services import chain, upstream_connection
from tests.addon_helpers import chat_body, create_key, error_of, exchange_of, gateway, openai_flow

REAL_KEY = "sk-real-provider-key"


@pytest.mark.parametrize("spec, route", [
    ("api.openai.com=http://127.0.0.1:8000", Route("api.openai.com", "http", "127.0.0.1", 8000, "")),
    (" API.OpenAI.com = https://my-azure.example/openai/ ",
     Route("api.openai.com", "https", "my-azure.example", 443, "/openai")),
    ("api.openai.com=http://localhost/v1-proxy", Route("api.openai.com", "http", "localhost", 80, "/v1-proxy")),
])
def test_parse_route(spec, route):
    assert parse_route(spec) == route


@pytest.mark.parametrize("spec", [
    "api.openai.com", "=http://127.0.0.1:8000", "api.openai.com=ftp://127.0.0.1", "api.openai.com=http://",
    "api.openai.com=127.0.0.1:8000",
])
def test_parse_route_refuses_bad_specs(spec):
    with pytest.raises(ValueError, match="HOST=URL"):
        parse_route(spec)


@pytest.fixture
def gw(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", REAL_KEY)
    with gateway() as gw:
        yield gw


def forwarded(gw, secret, body=None, **kwargs):
    """The whole chain; what would leave for the provider."""
    return gw.request(openai_flow(body=body or chat_body(max_tokens=10), secret=secret, **kwargs))


def assert_no_real_credential(flow):
    assert REAL_KEY not in flow.request.url
    assert not [value for _, value in flow.request.headers.items(multi=True) if REAL_KEY in value]


class TestUpstream:
    def test_a_bad_route_is_an_options_error(self, gw):
        with pytest.raises(exceptions.OptionsError, match="bad route"):
            gw.configure(pouch_route=["api.openai.com=http://127.0.0.1:8000", "nonsense"])

    def test_the_pouch_key_is_swapped_for_the_real_credential(self, gw):
        _, secret = create_key()
        flow = forwarded(gw, secret, headers={"x-api-key": secret, "api-key": secret})
        assert flow.response is None
        request = gw.sent(flow)
        assert request is not flow.request and request.headers.get_all("authorization") == [f"Bearer {REAL_KEY}"]
        for shown in (request, flow.request):
            assert "x-api-key" not in shown.headers and "api-key" not in shown.headers
            assert secret not in shown.url
            assert not [value for _, value in shown.headers.items(multi=True) if secret in value]
        assert flow.request.headers["authorization"] == f"Bearer <OPENAI_API_KEY for {secret[:12]}…>", \
            "the flow, which mitmweb shows and flows are saved from, keeps the placeholder"
        assert request.content == flow.request.content and request.url == flow.request.url

    def test_the_credential_is_hidden_again_when_the_response_comes(self, gw):
        _, secret = create_key()
        flow = forwarded(gw, secret)
        assert gw.sent(flow).headers["authorization"] == f"Bearer {REAL_KEY}"
        gw.respond(flow, http.Response.make(200, json.dumps({"usage": {}}), {"content-type": "application/json"}))
        assert gw.upstream.late.sending(flow) is None, "nothing pending once the response came"
        assert_no_real_credential(flow)

    def test_a_missing_credential_refuses_naming_the_variable(self, gw, monkeypatch):
        monkeypatch.delenv("OPENAI_API_KEY")
        _, secret = create_key()
        flow = forwarded(gw, secret)
        assert flow.response.status_code == 500
        error = error_of(flow)
        assert error["code"] == "gateway_error" and "OPENAI_API_KEY" in error["message"]

    def test_observed_credentials_pass_untouched(self, gw):
        gw.configure(pouch_unknown_keys="observe")
        flow = forwarded(gw, "sk-proj-the-clients-own")
        assert flow.response is None
        assert gw.sent(flow).headers["authorization"] == "Bearer sk-proj-the-clients-own"
        assert flow.request.headers["authorization"] == "Bearer sk-pro…redacted"

    def test_pouch_route_rewrites_the_destination(self, gw):
        gw.configure(pouch_route=["API.openai.com=http://127.0.0.1:8000/proxy/"])
        _, secret = create_key()
        flow = gw.request(openai_flow("/v1/chat/completions?api-version=1", chat_body(max_tokens=5), secret=secret))
        assert flow.response is None
        assert flow.request.url == "http://127.0.0.1:8000/proxy/v1/chat/completions?api-version=1"
        assert flow.request.host_header == "127.0.0.1:8000"

    def test_unrouted_hosts_keep_their_destination(self, gw):
        gw.configure(pouch_route=["api.anthropic.com=http://127.0.0.1:8000"])
        _, secret = create_key()
        assert forwarded(gw, secret).request.url == "https://api.openai.com/v1/chat/completions"

    def test_pouch_headers_are_stripped_and_bodies_come_back_readable(self, gw):
        _, secret = create_key()
        headers = {"x-pouch-trace": "1", "X-Pouch-Debug": "yes", "x-other": "kept", "accept-encoding": "gzip, br"}
        flow = forwarded(gw, secret, headers=headers)
        assert [name for name in flow.request.headers if name.lower().startswith("x-pouch")] == []
        assert flow.request.headers["x-other"] == "kept"
        assert flow.request.headers["accept-encoding"] == "identity"

    def test_an_unchanged_body_goes_on_byte_for_byte(self, gw):
        _, secret = create_key()
        content = (b'{"model":   "gpt-4o-mini", "max_tokens": 3,\n'
                   b' "messages": [{"role": "user", "content": "caf\\u00e9"}]}')
        flow = gw.request(openai_flow(content=content, secret=secret))
        assert flow.response is None and flow.request.content == content
        assert exchange_of(flow).body is None and not exchange_of(flow).body_changed

    def test_a_changed_body_is_written_back(self, gw):
        _, secret = create_key()
        flow = forwarded(gw, secret, chat_body("café", stream=True))
        sent = json.loads(flow.request.content)
        assert sent == chat_body("café", stream=True, stream_options={"include_usage": True})
        assert "café".encode() in flow.request.content
        assert flow.request.headers["content-length"] == str(len(flow.request.content))
        assert exchange_of(flow).body is None  # written back, then dropped: not kept with the flow

    def test_the_body_is_dropped_from_metadata_on_refused_flows(self, gw):
        _, secret = create_key(budget=Money(0))
        body = chat_body(stream=True)
        flow = forwarded(gw, secret, body)
        assert flow.response.status_code == 429
        assert exchange_of(flow).body is None and not exchange_of(flow).body_changed
        assert json.loads(flow.request.content) == body

    def test_free_endpoints_get_the_real_credential(self, gw):
        _, secret = create_key()
        flow = gw.request(openai_flow("/v1/models", method="GET", secret=secret))
        assert flow.response is None and gw.sent(flow).headers["authorization"] == f"Bearer {REAL_KEY}"

    def test_other_hosts_are_untouched(self, gw):
        headers = {"x-pouch-trace": "1", "accept-encoding": "gzip"}
        flow = forwarded(gw, "pouch-abc", host="example.com", headers=headers)
        assert flow.response is None and flow.metadata == {} and gw.upstream.late.sending(flow) is None
        assert flow.request.headers["authorization"] == "Bearer pouch-abc"
        assert flow.request.headers["x-pouch-trace"] == "1" and flow.request.headers["accept-encoding"] == "gzip"

    def test_already_handled_flows_are_not_given_the_credential(self, gw):
        _, secret = create_key()
        flow = gw.request(openai_flow(body=chat_body(max_tokens=3), secret=secret), until=gw.usage)
        flow.response = http.Response.make(204)
        gw.request(flow, after=gw.usage)
        assert flow.response.status_code == 204
        assert_no_real_credential(flow)


class TestLastLineOfDefence:
    def test_a_flow_no_link_accounted_for_is_refused(self, gw):
        flow = openai_flow(body=chat_body(), secret="pouch-abc")
        gw.request(flow, skip=(gw.keys,))  # keys failed silently
        assert flow.response.status_code == 500
        assert "did not account for this request" in error_of(flow)["message"]
        assert_no_real_credential(flow)

    def test_a_metered_keyed_flow_without_a_reservation_is_refused(self, gw):
        _, secret = create_key()
        flow = gw.request(openai_flow(body=chat_body(max_tokens=3), secret=secret), skip=(gw.budget,))
        assert flow.response.status_code == 503
        assert error_of(flow)["code"] == "store_unavailable"
        assert_no_real_credential(flow)


class TestLoad:
    def test_one_credential_callback_also_after_a_reload(self):
        first, second = Upstream(), Upstream()
        with taddons.context(Proxyserver(), first):
            with taddons.context(Proxyserver(), second):  # a script reload: a new instance
                assert upstream_connection._on_connected == second.late.sending
