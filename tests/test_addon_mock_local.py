"""What pouch answers itself (addons/mock.py) with the whole chain: a mock key's free requests
answered locally and never forwarded (no upstream credential looked up), side paths by their
family's policy (pass with the right credential, answered locally, refused), telemetry
blocked on request, and what mitmweb says of each."""

import json
import types
from collections.abc import Mapping

import pytest
from mitmproxy import exceptions, http
from mitmproxy.hooks import ConfigureHook
from mitmproxy.test import tflow

import addons.upstream
from addons.inspect import Inspect
from pouch.domain.periods import utcnow
from pouch.services.explain import explain
from pouch.store import keys as key_store
from pouch.tokens.count import count_prompt, input_upper_bound
from tests.addon_helpers import chat_body, create_key, error_of, facts, gateway, openai_flow

REAL = {"ANTHROPIC_API_KEY": "sk-ant-real-provider-key", "OPENAI_API_KEY": "sk-real-provider-key",
        "GEMINI_API_KEY": "gm-real-provider-key"}
CLAUDE = "claude-sonnet-4-6"
HI = {"model": CLAUDE, "messages": [{"role": "user", "content": "how many tokens is this prompt?"}]}


class Looked(Mapping):
    """The gateway's environment, noting every variable read from it."""

    def __init__(self, values):
        self.values, self.read = dict(values), []

    def __getitem__(self, name):
        self.read.append(name)
        return self.values[name]

    def get(self, name, default=None):
        self.read.append(name)
        return self.values.get(name, default)

    def __iter__(self):
        return iter(self.values)

    def __len__(self):
        return len(self.values)


@pytest.fixture
def environ(monkeypatch):
    looked = Looked(REAL)
    monkeypatch.setattr(addons.upstream, "os", types.SimpleNamespace(environ=looked))  # the upstream link's only
    return looked


@pytest.fixture
def gw(environ):
    with gateway() as gw:
        gw.inspect = Inspect()
        gw.tctx.master.addons.add(gw.inspect)  # last, as in addons/pouch.py
        gw.tctx.master.addons.invoke_addon_sync(gw.inspect, ConfigureHook(set(gw.tctx.options.keys())))
        yield gw


def claude_flow(path, body=None, *, method="POST", secret=None, headers=None):
    """A request as Claude Code sends it to api.anthropic.com: its key in x-api-key."""
    sent = {"host": "api.anthropic.com", "content-type": "application/json"} | (headers or {})
    if secret is not None:
        sent["x-api-key"] = secret
    content = b"" if body is None else json.dumps(body).encode()
    return tflow.tflow(req=http.Request.make(method, f"https://api.anthropic.com{path}", content, sent))


def answer_of(flow):
    return json.loads(flow.response.content) if flow.response.content else None


def finished(gw, flow):
    """The response hooks, as mitmproxy calls them for an answer set in the request phase."""
    gw.hook("response", flow)
    return flow


def assert_not_forwarded(gw, flow, environ):
    assert flow.response is not None, "answered by pouch"
    assert gw.upstream.late.sending(flow) is None, "nothing pending for the provider"
    assert environ.read == [], "the upstream credential was not even looked up"


def everything_sent(request) -> str:
    return request.url + " " + " ".join(f"{k}: {v}" for k, v in request.headers.items(multi=True))


class TestMockKeysNeverGoUpstream:
    def test_count_tokens_is_pouchs_count_the_input_its_mock_reports(self, gw, environ):
        _, secret = create_key(mock=True)
        flow = finished(gw, gw.request(claude_flow("/v1/messages/count_tokens", HI, secret=secret)))
        assert_not_forwarded(gw, flow, environ)
        assert flow.response.status_code == 200 and flow.response.headers["x-pouch-local"] == "true"
        counted = answer_of(flow)["input_tokens"]
        assert counted == input_upper_bound(CLAUDE, count_prompt(CLAUDE, HI, "anthropic_messages"))
        mocked = gw.request(claude_flow("/v1/messages", HI | {"max_tokens": 20}, secret=secret))
        assert answer_of(mocked)["usage"]["input_tokens"] == counted, "count_tokens agrees with the mock's usage"
        assert facts(flow)["local"] == "mock key" and facts(flow)["refused"] is None
        assert explain(flow).startswith("alice · messages.count_tokens · answered locally (mock key)")
        assert flow.marked == ""

    def test_a_bad_count_tokens_body_is_a_400_in_anthropics_shape(self, gw, environ):
        _, secret = create_key(mock=True)
        flow = gw.request(claude_flow("/v1/messages/count_tokens", {"messages": []}, secret=secret))
        assert flow.response.status_code == 400 and answer_of(flow)["error"]["type"] == "invalid_request_error"
        assert environ.read == []

    def test_model_list_and_retrieve_from_the_price_table(self, gw, environ):
        _, secret = create_key(mock=True)
        listed = gw.request(claude_flow("/v1/models", method="GET", secret=secret))
        assert_not_forwarded(gw, listed, environ)
        models = answer_of(listed)
        assert CLAUDE in [m["id"] for m in models["data"]] and models["has_more"] is False
        assert all(m["type"] == "model" and m["id"].startswith("claude") for m in models["data"])
        one = gw.request(claude_flow(f"/v1/models/{CLAUDE}", method="GET", secret=secret))
        assert answer_of(one)["id"] == CLAUDE and answer_of(one)["display_name"] == "Claude Sonnet 4.6"
        unknown = finished(gw, gw.request(claude_flow("/v1/models/claude-nothing-9", method="GET", secret=secret)))
        assert unknown.response.status_code == 404 and answer_of(unknown)["error"]["type"] == "not_found_error"
        assert facts(unknown)["refused"] is None and explain(unknown).endswith("answered locally (mock key) · 404")
        assert environ.read == []

    def test_openai_model_list(self, gw, environ):
        _, secret = create_key(mock=True)
        flow = gw.request(openai_flow("/v1/models", method="GET", secret=secret))
        assert_not_forwarded(gw, flow, environ)
        assert {"gpt-4o-mini", "text-embedding-3-small"} <= {m["id"] for m in answer_of(flow)["data"]}

    def test_what_pouch_cannot_answer_is_refused_saying_why(self, gw, environ):
        _, secret = create_key(mock=True)
        flow = finished(gw, gw.request(openai_flow("/v1/responses/resp_123", method="GET", secret=secret)))
        assert flow.response.status_code == 403 and error_of(flow)["code"] == "mock_not_available"
        assert "never forwards" in error_of(flow)["message"] and "responses.retrieve" in error_of(flow)["message"]
        assert environ.read == [] and gw.upstream.late.sending(flow) is None

    def test_unmetered_endpoints_allowed_by_the_operator_are_still_refused_for_a_mock_key(self, gw, environ):
        gw.configure(pouch_unmetered="allow")
        _, secret = create_key(mock=True)
        flow = gw.request(openai_flow("/v1/files", method="GET", secret=secret))
        assert flow.response.status_code == 403 and error_of(flow)["code"] == "mock_not_available"
        assert environ.read == []

    def test_pouch_mock_all_answers_a_real_keys_free_requests_too(self, gw, environ):
        gw.configure(pouch_mock="all")
        _, secret = create_key()
        flow = gw.request(claude_flow("/v1/messages/count_tokens", HI, secret=secret))
        assert_not_forwarded(gw, flow, environ)
        assert facts(flow)["local"] == "pouch_mock=all"

    def test_a_real_keys_count_tokens_still_goes_upstream(self, gw, environ):
        _, secret = create_key()
        flow = gw.request(claude_flow("/v1/messages/count_tokens", HI, secret=secret))
        assert flow.response is None and facts(flow)["local"] is None
        assert gw.sent(flow).headers["x-api-key"] == REAL["ANTHROPIC_API_KEY"]


class TestSidePaths:
    def test_settings_pass_with_the_real_credential_in_place_of_the_pouch_key(self, gw, environ):
        _, secret = create_key()
        flow = gw.request(claude_flow("/api/claude_code/settings", method="GET", secret=secret))
        assert flow.response is None
        sent = gw.sent(flow)
        assert sent.headers["x-api-key"] == REAL["ANTHROPIC_API_KEY"] and secret not in everything_sent(sent)
        assert facts(flow)["endpoint"] == {"name": "claude_code.settings", "metering": "side", "api": ""}
        finished(gw, gw.respond(flow, http.Response.make(204)) or flow)
        assert explain(flow) == "side path · claude_code settings · passed (alice)" and flow.marked == ""

    def test_a_public_path_goes_with_no_credential_at_all(self, gw, environ):
        _, secret = create_key()
        flow = gw.request(claude_flow("/mcp-registry/v0/servers?version=latest", method="GET", secret=secret))
        assert flow.response is None
        sent = gw.sent(flow)
        assert "x-api-key" not in sent.headers and "authorization" not in sent.headers
        assert secret not in everything_sent(sent) and REAL["ANTHROPIC_API_KEY"] not in everything_sent(sent)
        assert environ.read == []

    def test_a_public_path_passes_without_any_key(self, gw, environ):
        flow = gw.request(claude_flow("/mcp-registry/v0/servers", method="GET"))
        assert flow.response is None and "x-api-key" not in gw.sent(flow).headers
        gw.respond(flow, http.Response.make(200, b'{"servers": []}'))
        assert explain(flow) == "side path · mcp_registry · passed (no key)" and flow.marked == ""

    def test_a_path_that_needs_the_organisations_credential_needs_a_valid_key(self, gw, environ):
        flow = gw.request(claude_flow("/api/claude_code/policy_limits", method="GET"))
        assert flow.response.status_code == 401 and answer_of(flow)["error"]["type"] == "authentication_error"
        key, secret = create_key()
        key_store.revoke(key, utcnow())
        for path, method in (("/api/claude_code/policy_limits", "GET"), ("/api/event_logging/batch", "POST")):
            revoked = gw.request(claude_flow(path, {} if method == "POST" else None, method=method, secret=secret))
            assert revoked.response.status_code == 401 and "revoked" in answer_of(revoked)["error"]["message"]
        unknown = gw.request(claude_flow("/mcp-registry/v0/servers", method="GET", secret="sk-ant-not-a-pouch-key"))
        assert unknown.response.status_code == 401, "a credential that is sent must be a pouch key"
        assert environ.read == []

    def test_side_paths_are_not_counted_against_requests_per_minute(self, gw, environ):
        _, secret = create_key(rpm=1)
        for path in ("/api/claude_code/settings", "/api/claude_code/policy_limits", "/api/claude_cli/bootstrap"):
            assert gw.request(claude_flow(path, method="GET", secret=secret)).response is None
        flow = gw.request(claude_flow("/v1/messages", HI | {"max_tokens": 10}, secret=secret))
        assert flow.response is None, "the key's one request a minute is still there for the model API"
        assert gw.request(claude_flow("/v1/messages", HI | {"max_tokens": 10}, secret=secret)).response.status_code == 429

    def test_telemetry_passes_by_default(self, gw, environ):
        _, secret = create_key()
        events = gw.request(claude_flow("/api/event_logging/v2/batch", {"events": []}, secret=secret))
        assert events.response is None and "x-api-key" not in gw.sent(events).headers
        metrics = gw.request(claude_flow("/api/claude_code/metrics", {"metrics": []}, secret=secret))
        assert gw.sent(metrics).headers["x-api-key"] == REAL["ANTHROPIC_API_KEY"]
        gw.respond(events, http.Response.make(200, b"{}"))
        assert explain(events) == "telemetry · event_logging · passed (alice)"

    def test_telemetry_blocked_is_answered_here(self, gw, environ):
        gw.configure(pouch_telemetry="block")
        _, secret = create_key()
        for path in ("/api/event_logging/batch", "/api/claude_code/metrics"):
            flow = finished(gw, gw.request(claude_flow(path, {"events": []}, secret=secret)))
            assert_not_forwarded(gw, flow, environ)
            assert flow.response.status_code == 200 and answer_of(flow) == {}
            assert facts(flow)["local"] == "telemetry blocked" and flow.marked == ""
        assert explain(flow) == "telemetry · claude_code_metrics · blocked locally (alice)"
        keyless = gw.request(claude_flow("/api/event_logging/batch", {"events": []}))
        assert keyless.response.status_code == 200 and gw.upstream.late.sending(keyless) is None
        settings = gw.request(claude_flow("/api/claude_code/settings", method="GET", secret=secret))
        assert settings.response is None, "blocking telemetry leaves the other side paths alone"

    def test_a_bad_telemetry_option_is_an_options_error(self, gw):
        with pytest.raises(exceptions.OptionsError, match="pouch_telemetry"):
            gw.configure(pouch_telemetry="drop")

    @pytest.mark.parametrize("path, status, answer", [
        ("/api/claude_code/settings", 204, None),
        ("/api/claude_code/policy_limits", 200,
         {"restrictions": {}, "compliance_taints": [], "monitoring_notice": None, "defaults": {}}),
        ("/api/claude_cli/bootstrap", 200, {"client_data": None, "additional_model_options": []}),
        ("/mcp-registry/v0/servers", 200, {"servers": [], "metadata": {"count": 0}}),
    ])
    def test_a_mock_keys_side_paths_are_answered_here(self, gw, environ, path, status, answer):
        _, secret = create_key(mock=True)
        flow = finished(gw, gw.request(claude_flow(path, method="GET", secret=secret)))
        assert_not_forwarded(gw, flow, environ)
        assert (flow.response.status_code, answer_of(flow)) == (status, answer)
        assert explain(flow).endswith("answered locally: mock key (alice)") and flow.marked == ""

    def test_a_mock_keys_side_path_without_a_local_answer_is_refused(self, gw, environ):
        _, secret = create_key(mock=True)
        flow = gw.request(claude_flow("/api/oauth/profile", method="GET", secret=secret))
        assert flow.response.status_code == 403 and "never forwards" in answer_of(flow)["error"]["message"]
        assert environ.read == []

    def test_pouch_mock_all_answers_keyless_side_paths(self, gw, environ):
        gw.configure(pouch_mock="all")
        flow = gw.request(claude_flow("/mcp-registry/v0/servers", method="GET"))
        assert_not_forwarded(gw, flow, environ)
        assert facts(flow)["local"] == "pouch_mock=all"

    def test_account_paths_are_refused_for_a_pouch_key(self, gw, environ):
        _, secret = create_key()
        for path in ("/api/oauth/profile", "/api/claude_code/memory?scope=user"):
            flow = finished(gw, gw.request(claude_flow(path, method="GET", secret=secret)))
            assert flow.response.status_code == 403
            assert answer_of(flow)["error"]["type"] == "permission_error"
            assert "pouch does not forward" in answer_of(flow)["error"]["message"]
            assert facts(flow)["refused"]["code"] == "side_path_refused"
        assert environ.read == []

    def test_account_paths_pass_untouched_with_the_clients_own_login(self, gw, environ):
        gw.configure(pouch_unknown_keys="observe")
        login = "sk-ant-oat01-the-users-own-oauth-token"
        flow = gw.request(claude_flow("/api/oauth/profile", method="GET", headers={"authorization": f"Bearer {login}"}))
        assert flow.response is None
        assert gw.sent(flow).headers["authorization"] == f"Bearer {login}" and "x-api-key" not in gw.sent(flow).headers


def test_the_mock_link_leaves_handled_flows_alone(gw, environ):
    gw.configure(pouch_telemetry="block")
    _, secret = create_key()
    flow = gw.request(claude_flow("/api/event_logging/batch", {}, secret=secret), until=gw.budget)
    flow.response = http.Response.make(418)
    gw.run(gw.mock.request(flow))
    assert flow.response.status_code == 418 and facts(flow)["local"] is None


def test_the_key_link_alone_classifies_side_paths(gw):
    _, secret = create_key()
    flow = claude_flow("/api/claude_code/settings", method="GET", secret=secret)
    gw.run(gw.keys.request(flow))
    assert flow.response is None and facts(flow)["endpoint"]["metering"] == "side"
    unknown = claude_flow("/api/claude_code/nothing", method="GET", secret=secret)
    gw.run(gw.keys.request(unknown))
    assert unknown.response.status_code == 404, "other paths are still unknown endpoints"


def test_a_refused_chat_is_still_a_refusal_for_mitmweb(gw):
    _, secret = create_key(mock=True, models=["gpt-4o"])
    flow = finished(gw, gw.request(openai_flow(body=chat_body(), secret=secret)))
    assert flow.response.status_code == 403 and flow.marked == ":no_entry_sign:"


def test_a_keyless_public_side_path_passes_only_for_this_hosts_clients(environ):
    """Without a key a public side path would let anyone who reaches the gateway use it as a
    relay to the provider: a client from another host must authenticate (its key as proxy
    password), as for every other tunnel."""
    with gateway() as gw:
        remote = claude_flow("/mcp-registry/v0/servers", method="GET")
        remote.client_conn.peername = ("203.0.113.9", 50000)
        assert gw.request(remote).response.status_code == 401
        local = gw.request(claude_flow("/mcp-registry/v0/servers", method="GET"))
        assert local.response is None, "loopback: passes, with no credential"
