"""End to end: a mock key never reaches the provider, whatever it calls (count_tokens, model
lists and lookups answered by pouch in the provider's shape), and the side paths Claude Code
calls besides the Messages API get their family's policy. Real mitmweb with the chain, the
real anthropic and openai SDKs through HTTPS_PROXY, fakes on loopback that record every
request they receive; mitmweb's own API says what each flow was marked."""

import uuid

import anthropic
import httpx2
import openai
import pytest

from pouch.services import keys as key_service
from pouch.store.database import UsageRow
from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import REAL_KEYS, Gateway

CLAUDE = "claude-sonnet-4-6"
HI = [{"role": "user", "content": "how long is this prompt, in tokens?"}]
REAL_ANTHROPIC = REAL_KEYS["ANTHROPIC_API_KEY"]


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    tls = tmp_path_factory.mktemp("tls")
    with FakeAnthropic(tls_dir=tls / "a") as claude, FakeOpenAI(tls_dir=tls / "o") as gpt:
        bundle = tls / "cas.pem"  # the gateway trusts each fake's own CA
        bundle.write_text(open(claude.ca_path).read() + open(gpt.ca_path).read())
        yield {"anthropic": claude, "openai": gpt, "ca_bundle": bundle}


def start(fakes, home, **options) -> Gateway:
    routes = {"api.anthropic.com": fakes["anthropic"].url, "api.openai.com": fakes["openai"].url}
    return Gateway(home, routes, str(fakes["ca_bundle"]), options, tool="mitmweb").start()


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory):
    gateway = start(fakes, tmp_path_factory.mktemp("gateway"))
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def fresh(fakes, gateway):
    fakes["anthropic"].reset()
    fakes["openai"].reset()
    gateway.open_store()


def new_key(**options):
    return key_service.create(f"k{uuid.uuid4().hex[:10]}", **options)


def claude(gateway, secret) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=secret, max_retries=0, http_client=anthropic.DefaultHttpxClient(
        proxy=gateway.proxy_url, verify=gateway.tls()))


def claude_code(gateway, secret: str | None = None) -> httpx2.Client:
    """What Claude Code's own HTTP client sends to api.anthropic.com: its key in x-api-key."""
    headers = {"x-api-key": secret} if secret else {}
    return httpx2.Client(base_url="https://api.anthropic.com", proxy=gateway.proxy_url, verify=gateway.tls(),
                         headers=headers, timeout=30)


def web_flows(gateway, path_part: str) -> list[dict]:
    """mitmweb's flows whose path holds ``path_part``, oldest first."""
    with httpx2.Client(base_url=f"http://127.0.0.1:{gateway.web_port}",
                       headers={"authorization": f"Bearer {gateway.web_password}"}) as api:
        return [f for f in api.get("/flows").json() if path_part in f["request"]["path"]]


def assert_the_providers(response, status: int) -> None:
    """The answer came from the provider (the fake), not from pouch: pouch's own Anthropic
    answers carry a request-id of its own, or x-pouch-local."""
    assert response.status_code == status
    assert response.headers["request-id"].startswith("req_")
    assert not response.headers["request-id"].startswith("req_pouch_") and "x-pouch-local" not in response.headers


def usage_rows() -> int:
    return UsageRow.select().count()


def test_a_mock_keys_count_tokens_and_model_calls_never_reach_anthropic(gateway, fakes):
    _, secret = new_key(mock=True)
    client = claude(gateway, secret)
    rows = usage_rows()
    counted = client.messages.count_tokens(model=CLAUDE, messages=HI)
    message = client.messages.create(model=CLAUDE, max_tokens=50, messages=HI)
    assert counted.input_tokens == message.usage.input_tokens > 0, "the count a mock's answer reports"
    listed = list(client.models.list())
    assert CLAUDE in [m.id for m in listed] and all(m.type == "model" and m.id.startswith("claude") for m in listed)
    model = client.models.retrieve(CLAUDE)
    assert (model.id, model.display_name, model.type) == (CLAUDE, "Claude Sonnet 4.6", "model")
    with pytest.raises(anthropic.NotFoundError, match="claude-nothing-9"):
        client.models.retrieve("claude-nothing-9")
    assert fakes["anthropic"].requests == [], "nothing of a mock key's reached the provider"
    gateway.settled(expected_rows=rows + 1)
    assert usage_rows() == rows + 1, "only the Messages call is a usage row: the others are free"
    comments = [f["comment"] for f in web_flows(gateway, "/v1/") if f["request"]["host"] == "api.anthropic.com"][-5:]
    assert [c.split(" · ")[1] for c in comments] == [
        "messages.count_tokens", CLAUDE, "models.list", "models.retrieve", "models.retrieve"]
    assert all("answered locally (mock key)" in c for c in comments[:1] + comments[2:]), comments


def test_a_mock_keys_openai_model_calls_never_reach_openai(gateway, fakes):
    _, secret = new_key(mock=True)
    client = gateway.client(secret)
    assert {"gpt-4o-mini", "text-embedding-3-small"} <= {m.id for m in client.models.list()}
    model = client.models.retrieve("gpt-4o-mini")
    assert (model.id, model.object, model.owned_by) == ("gpt-4o-mini", "model", "openai") and model.created > 0
    with pytest.raises(openai.NotFoundError, match="gpt-nothing"):
        client.models.retrieve("gpt-nothing")
    counted = client.responses.input_tokens.count(model="gpt-4o-mini", input="hello there")
    assert counted.input_tokens > 0 and counted.object == "response.input_tokens"
    with pytest.raises(openai.PermissionDeniedError, match="never forwards"):
        client.responses.retrieve("resp_mock123")
    assert fakes["openai"].requests == []


def test_a_real_keys_count_tokens_still_goes_upstream(gateway, fakes):
    _, secret = new_key()
    assert claude(gateway, secret).messages.count_tokens(model=CLAUDE, messages=HI).input_tokens > 0
    sent = fakes["anthropic"].requests
    assert [r.path for r in sent] == ["/v1/messages/count_tokens"]
    assert sent[0].headers["x-api-key"] == REAL_ANTHROPIC and secret not in str(sent[0].headers)


def test_claude_codes_side_paths_pass_with_the_organisations_credential(gateway, fakes):
    _, secret = new_key()
    with claude_code(gateway, secret) as client:
        for path in ("/api/claude_code/settings", "/api/claude_code/policy_limits",
                     "/api/claude_cli/bootstrap?entrypoint=cli"):
            assert_the_providers(client.get(path), 404)  # the fake knows no such path
        # the fake wants a key on every path (the real MCP registry and event logging take none)
        assert_the_providers(client.get("/mcp-registry/v0/servers", params={"version": "latest", "limit": "100"}), 401)
        assert_the_providers(client.post("/api/event_logging/v2/batch", json={"events": [{"event_type": "x"}]}), 401)
    sent = fakes["anthropic"].requests
    assert [r.path.split("?")[0] for r in sent] == [
        "/api/claude_code/settings", "/api/claude_code/policy_limits", "/api/claude_cli/bootstrap",
        "/mcp-registry/v0/servers", "/api/event_logging/v2/batch"]
    assert [r.headers.get("x-api-key") for r in sent] == [REAL_ANTHROPIC] * 3 + [None, None], \
        "the organisation's credential where it is needed, none on public paths"
    assert not any(secret in str(r.headers) or secret in r.path for r in sent), "never the pouch key"
    flows = web_flows(gateway, "/api/")[-4:] + web_flows(gateway, "/mcp-registry/")[-1:]
    assert all(f["marked"] == "" for f in flows), "no refusal marker"
    assert flows[0]["comment"].startswith("side path · claude_code settings · passed (k")
    assert flows[3]["comment"].startswith("telemetry · event_logging · passed (k")


def test_a_public_side_path_passes_without_any_key(gateway, fakes):
    with claude_code(gateway) as client:
        assert_the_providers(client.get("/mcp-registry/v0/servers"), 401)
        refused = client.get("/api/claude_code/settings")
        assert refused.status_code == 401 and "no API key" in refused.json()["error"]["message"]
    sent = fakes["anthropic"].requests
    assert [r.path for r in sent] == ["/mcp-registry/v0/servers"] and "x-api-key" not in sent[0].headers
    assert web_flows(gateway, "/mcp-registry/")[-1]["comment"] == "side path · mcp_registry · passed (no key)"


def test_a_mock_keys_side_paths_are_answered_by_pouch(gateway, fakes):
    _, secret = new_key(mock=True)
    with claude_code(gateway, secret) as client:
        assert client.get("/api/claude_code/settings").status_code == 204
        limits = client.get("/api/claude_code/policy_limits")
        assert limits.status_code == 200 and limits.json()["restrictions"] == {}
        assert client.get("/mcp-registry/v0/servers").json() == {"servers": [], "metadata": {"count": 0}}
        assert client.post("/api/event_logging/batch", json={"events": []}).status_code == 200
        assert client.get("/api/oauth/profile").status_code == 403
    assert fakes["anthropic"].requests == []
    flows = web_flows(gateway, "/api/claude_code/settings")[-1:]
    assert flows[0]["comment"].endswith("answered locally: mock key (" + flows[0]["comment"].split("(")[-1])
    assert flows[0]["marked"] == ""


def test_account_paths_are_refused_for_a_pouch_key(gateway, fakes):
    _, secret = new_key()
    with claude_code(gateway, secret) as client:
        refused = client.get("/api/oauth/profile")
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    assert "pouch does not forward /api/oauth/profile" in refused.json()["error"]["message"]
    assert fakes["anthropic"].requests == []


def test_telemetry_blocked_never_leaves(fakes, tmp_path):
    gateway = start(fakes, tmp_path / "blocking", pouch_telemetry="block")
    try:
        gateway.open_store()
        _, secret = key_service.create("telemetry")
        fakes["anthropic"].reset()
        with claude_code(gateway, secret) as client:
            events = client.post("/api/event_logging/v2/batch", json={"events": [{"event_type": "x"}]})
            metrics = client.post("/api/claude_code/metrics", json={"metrics": []})
            anonymous = httpx2.post("https://api.anthropic.com/api/event_logging/batch", json={"events": []},
                                    proxy=gateway.proxy_url, verify=gateway.tls())
            settings = client.get("/api/claude_code/settings")
        assert (events.status_code, events.json()) == (200, {}) and metrics.status_code == anonymous.status_code == 200
        assert events.headers["x-pouch-local"] == "true"
        assert [r.path for r in fakes["anthropic"].requests] == ["/api/claude_code/settings"], \
            "telemetry never left; the rest still passes"
        blocked = web_flows(gateway, "/api/event_logging/v2/batch")[-1]
        assert blocked["comment"] == "telemetry · event_logging · blocked locally (telemetry)" and blocked["marked"] == ""
        assert_the_providers(settings, 404)
    finally:
        gateway.stop()
