"""Side paths (pouch/providers/side_paths.py, each folder's table) and the answers pouch gives
itself (pouch/providers/local.py, each folder's answers.py): pure, no proxy, no store."""

import datetime
import json
import re

import pytest

from pouch.domain.errors import BadRequest
from pouch.providers import registry, side_paths
from pouch.providers.anthropic.answers import display_name
from pouch.providers.base import FREE, SIDE, Endpoint, Reply
from pouch.providers.local import Local, ModelCard
from pouch.providers.side_paths import LOCAL, PASS, REFUSE, SidePath, decide, family
from pouch.services import local_answers
from pouch.tokens.count import count_prompt

ANTHROPIC, OPENAI, GEMINI = (registry.PROVIDERS[name] for name in ("anthropic", "openai", "gemini"))
CREATED = datetime.datetime(2025, 9, 29, tzinfo=datetime.UTC)


@pytest.mark.parametrize("method, path, name, policy, credential", [
    ("GET", "/api/claude_code/settings", "claude_code.settings", PASS, True),
    ("GET", "/api/claude_code/policy_limits", "claude_code.policy_limits", PASS, True),
    ("GET", "/api/claude_cli/bootstrap?entrypoint=cli&model=claude-sonnet-4-6", "claude_cli.bootstrap", PASS, True),
    ("GET", "/api/claude_code/organizations/metrics_enabled", "claude_code.metrics_enabled", PASS, True),
    ("GET", "/api/claude_code_penguin_mode", "claude_code.fast_mode", PASS, True),
    ("POST", "/api/eval/sdk-zAZezfDKGoZuXXKe", "feature_flags", PASS, True),
    ("GET", "/api/directory/server-urls", "mcp_directory.server_urls", PASS, False),
    ("GET", "/mcp-registry/v0/servers?version=latest&limit=100", "mcp_registry", PASS, False),
    ("GET", "/api/directory/servers?limit=500", "mcp_directory", PASS, False),
    ("GET", "/api/hello", "hello", PASS, False),
    ("POST", "/api/event_logging/batch", "telemetry.event_logging", PASS, False),
    ("POST", "/api/event_logging/v2/batch", "telemetry.event_logging", PASS, False),
    ("POST", "/api/claude_code/metrics", "telemetry.claude_code_metrics", PASS, True),
    ("GET", "/api/oauth/profile", "oauth", REFUSE, True),
    ("POST", "/api/oauth/claude_cli/create_api_key", "oauth", REFUSE, True),
    ("GET", "/api/claude_code/memory?scope=user&repo=x", "claude_code.account", REFUSE, True),
    ("PUT", "/api/claude_code/team_memory", "claude_code.account", REFUSE, True),
])
def test_claude_codes_side_paths_by_family(method, path, name, policy, credential):
    side = side_paths.find(ANTHROPIC, method, path)
    assert side.endpoint.name == name and side.endpoint.metering == SIDE
    assert (side.policy, side.credential) == (policy, credential)
    assert side_paths.of(ANTHROPIC, side.endpoint) is side
    assert side_paths.public(ANTHROPIC, side.endpoint) is not credential


@pytest.mark.parametrize("method, path", [
    ("POST", "/api/claude_code/settings"),  # the family is GET only
    ("GET", "/api/claude_code/settings/extra"),  # matched whole
    ("GET", "/api/claude_code/unknown"),
    ("GET", "/v1/messages"),  # the model API is the endpoint table's, not a side path
    ("GET", "/api/event_logging/batch"),
    ("POST", "/api/eval/sdk-x/more"),
])
def test_other_paths_are_no_side_paths(method, path):
    assert side_paths.find(ANTHROPIC, method, path) is None


def test_the_model_api_is_never_shadowed_by_a_side_path():
    for side in ANTHROPIC.side_paths:
        for method in ("GET", "POST") if side.method == side_paths.ANY else (side.method,):
            probe = re.sub(r"[^/a-z_0-9-]", "x", side.path.pattern.replace("(?:v2/)?", "").replace(".*", "x"))
            assert ANTHROPIC.endpoint(method, probe) is None, probe


def test_providers_without_side_paths_have_none():
    assert side_paths.find(OPENAI, "GET", "/api/claude_code/settings") is None
    assert not side_paths.public(OPENAI, Endpoint("models.list", FREE))
    assert not side_paths.public(OPENAI, None)


def test_every_family_says_why_and_can_be_answered_where_it_must():
    for side in ANTHROPIC.side_paths:
        assert len(side.why) > 30, side.endpoint.name
        if side.policy == PASS:  # a mock key's request of it is answered locally, in the shape Claude Code reads
            assert side.answer is not None and side.answer.status in (200, 204), side.endpoint.name
            if side.answer.status == 200:
                assert isinstance(json.loads(side.answer.body), dict)
            assert side.answer.headers["x-pouch-local"] == "true"
    telemetry = [side.endpoint.name for side in ANTHROPIC.side_paths if side.telemetry]
    assert telemetry == ["telemetry.event_logging", "telemetry.claude_code_metrics"]


def test_the_policy_answer_matches_what_claude_code_reads_as_nothing_to_apply():
    answers = {side.endpoint.name: side.answer for side in ANTHROPIC.side_paths}
    assert answers["claude_code.settings"].status == 204  # "Remote settings: No settings found (204)"
    assert json.loads(answers["claude_code.policy_limits"].body) == {
        "restrictions": {}, "compliance_taints": [], "monitoring_notice": None, "defaults": {}}


@pytest.mark.parametrize("kwargs, message", [
    ({"policy": "maybe"}, "unknown policy"),
    ({"policy": LOCAL}, "no answer"),
    ({"policy": PASS, "telemetry": True}, "no answer"),
])
def test_a_family_that_cannot_work_is_refused_at_import(kwargs, message):
    with pytest.raises(ValueError, match=message):
        family("x", "GET", "/x", why="because", **kwargs)


def test_a_side_path_is_classified_as_one():
    with pytest.raises(ValueError, match="side"):
        SidePath("GET", re.compile("/x"), Endpoint("x", FREE), PASS, "because")


PASSING = family("p", "GET", "/p", PASS, "passes", answer=Reply(204, b""))
REFUSED = family("r", "GET", "/r", REFUSE, "refused")
TELEMETRY = family("t", "POST", "/t", PASS, "telemetry", telemetry=True, answer=Reply(200, b"{}"))


@pytest.mark.parametrize("side, mock, blocked, own, expected", [
    (PASSING, False, False, False, PASS),
    (PASSING, True, False, False, LOCAL),  # a mock key never goes upstream
    (REFUSED, True, False, False, REFUSE),  # ... and what pouch cannot answer is refused
    (REFUSED, False, False, False, REFUSE),
    (REFUSED, False, False, True, PASS),  # the client's own credential goes untouched
    (REFUSED, True, False, True, REFUSE),  # but never a mock key's request
    (TELEMETRY, False, False, False, PASS),
    (TELEMETRY, False, True, False, LOCAL),
    (TELEMETRY, False, True, True, LOCAL),  # blocked is blocked, whoever's credential
    (PASSING, False, True, False, PASS),  # blocking telemetry leaves the rest alone
])
def test_decide(side, mock, blocked, own, expected):
    assert decide(side, mock=mock, telemetry_blocked=blocked, own_credential=own) == expected


# What pouch answers itself for the model APIs' free endpoints, from a Local.

CARDS = (ModelCard("claude-sonnet-4-6", CREATED, "chat", 200_000, 64_000),
         ModelCard("claude-haiku-4-5", CREATED - datetime.timedelta(days=30), "chat"),
         ModelCard("text-embedding-3-small", CREATED, "embedding", 8191))


def local(path, body=None, models=CARDS):
    counted = []

    def count(model, body, api):
        counted.append((model, api))
        return 42

    found = Local(path, body, lambda: models, lambda name: next(
        (ModelCard(name, c.created, c.mode, c.max_input_tokens, c.max_output_tokens) for c in models
         if name.startswith(c.id)), None), count)
    return found, counted


def answered(provider, endpoint_path, method="GET", body=None, path=None, models=CARDS):
    endpoint = provider.endpoint(method, endpoint_path)
    found, counted = local(path or endpoint_path.split("?")[0], body, models)
    reply = provider.answer(endpoint, found)
    return reply, (json.loads(reply.body) if reply and reply.body else None), counted


def test_anthropic_count_tokens_is_pouchs_count():
    body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
    reply, answer, counted = answered(ANTHROPIC, "/v1/messages/count_tokens", "POST", body)
    assert reply.status == 200 and answer == {"input_tokens": 42}
    assert counted == [("claude-sonnet-4-6", "anthropic_messages")]
    assert reply.headers["x-pouch-local"] == "true" and reply.headers["content-type"] == "application/json"


def test_anthropic_count_tokens_needs_a_model():
    with pytest.raises(BadRequest, match="model"):
        answered(ANTHROPIC, "/v1/messages/count_tokens", "POST", {"messages": []})


def test_anthropic_model_list_newest_first_in_one_page():
    reply, answer, _ = answered(ANTHROPIC, "/v1/models?limit=20")
    assert reply.status == 200
    assert [m["id"] for m in answer["data"]] == ["text-embedding-3-small", "claude-sonnet-4-6", "claude-haiku-4-5"]
    assert answer["data"][1] == {"type": "model", "id": "claude-sonnet-4-6", "display_name": "Claude Sonnet 4.6",
                                 "created_at": "2025-09-29T00:00:00Z"}
    assert (answer["has_more"], answer["first_id"], answer["last_id"]) == (
        False, "text-embedding-3-small", "claude-haiku-4-5")
    _, empty, _ = answered(ANTHROPIC, "/v1/models", models=())
    assert empty == {"data": [], "has_more": False, "first_id": None, "last_id": None}


def test_anthropic_model_retrieve_and_its_404():
    reply, answer, _ = answered(ANTHROPIC, "/v1/models/claude-sonnet-4-6-20260101")
    assert reply.status == 200 and answer["id"] == "claude-sonnet-4-6-20260101"
    reply, answer, _ = answered(ANTHROPIC, "/v1/models/gpt-nothing")
    assert reply.status == 404
    assert answer["type"] == "error" and answer["error"]["type"] == "not_found_error"
    assert answer["error"]["message"].startswith("model: gpt-nothing")


@pytest.mark.parametrize("model, name", [
    ("claude-sonnet-4-6", "Claude Sonnet 4.6"), ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5"),
    ("claude-opus-5", "Claude Opus 5"), ("claude-3-5-haiku-20241022", "Claude 3.5 Haiku"),
])
def test_anthropic_display_names(model, name):
    assert display_name(model) == name


def test_openai_model_list_and_retrieve():
    reply, answer, _ = answered(OPENAI, "/v1/models")
    assert answer["object"] == "list" and len(answer["data"]) == 3
    assert answer["data"][0] == {"id": "claude-haiku-4-5", "object": "model",
                                 "created": int((CREATED - datetime.timedelta(days=30)).timestamp()), "owned_by": "openai"}
    reply, answer, _ = answered(OPENAI, "/v1/models/text-embedding-3-small")
    assert reply.status == 200 and answer["id"] == "text-embedding-3-small" and answer["object"] == "model"
    reply, answer, _ = answered(OPENAI, "/v1/models/nothing-like-it")
    assert reply.status == 404 and answer["error"]["code"] == "model_not_found"
    assert answer["error"]["type"] == "invalid_request_error"


def test_openai_input_tokens_is_pouchs_count():
    body = {"model": "gpt-4o-mini", "input": "hi"}
    reply, answer, counted = answered(OPENAI, "/v1/responses/input_tokens", "POST", body)
    assert answer == {"object": "response.input_tokens", "input_tokens": 42} and counted == [("gpt-4o-mini", "responses")]


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/responses/resp_123"), ("POST", "/v1/moderations"), ("GET", "/v1/chat/completions"),
    ("DELETE", "/v1/responses/resp_123"),
])
def test_openai_endpoints_pouch_cannot_answer(method, path):
    reply, _, _ = answered(OPENAI, path, method, {"input": "x"} if method == "POST" else None)
    assert reply is None


def test_a_compatible_vendor_owns_its_models():
    groq = registry.PROVIDERS["groq"]
    _, answer, _ = answered(groq, "/openai/v1/models")
    assert {m["owned_by"] for m in answer["data"]} == {"groq"}


def test_gemini_count_tokens_from_contents_or_a_whole_request():
    contents = {"contents": [{"parts": [{"text": "hi"}]}]}
    for body in (contents, {"generateContentRequest": {"model": "models/gemini-2.5-flash", **contents}}):
        reply, answer, counted = answered(GEMINI, "/v1beta/models/gemini-2.5-flash:countTokens", "POST", body)
        assert answer == {"totalTokens": 42} and counted == [("gemini-2.5-flash", "gemini")]
    with pytest.raises(BadRequest):
        answered(GEMINI, "/v1beta/models/gemini-2.5-flash:countTokens", "POST", {"generateContentRequest": []})


def test_gemini_model_list_and_get():
    cards = (ModelCard("gemini-2.5-flash", CREATED, "chat", 1_048_576, 65_536),
             ModelCard("gemini-embedding-001", CREATED, "embedding", 2048))
    _, answer, _ = answered(GEMINI, "/v1beta/models", models=cards)
    assert answer["models"][0] == {"name": "models/gemini-2.5-flash", "displayName": "gemini-2.5-flash",
                                   "supportedGenerationMethods": ["generateContent", "countTokens"],
                                   "inputTokenLimit": 1_048_576, "outputTokenLimit": 65_536}
    assert "embedContent" in answer["models"][1]["supportedGenerationMethods"]
    reply, answer, _ = answered(GEMINI, "/v1/models/gemini-2.5-flash", models=cards)
    assert reply.status == 200 and answer["name"] == "models/gemini-2.5-flash"
    reply, answer, _ = answered(GEMINI, "/v1beta/models/nothing", models=cards)
    assert reply.status == 404 and answer["error"]["status"] == "NOT_FOUND"


def test_geminis_openai_compatible_models_are_named_as_google_names_them():
    cards = (ModelCard("gemini-2.5-flash", CREATED, "chat"),)
    _, answer, _ = answered(GEMINI, "/v1beta/openai/models", models=cards)
    assert [m["id"] for m in answer["data"]] == ["models/gemini-2.5-flash"]
    reply, answer, _ = answered(GEMINI, "/v1beta/openai/models/models%2Fgemini-2.5-flash", models=cards)
    assert reply.status == 200 and answer["id"] == "models/gemini-2.5-flash"


# The facts the chain gathers for a folder (pouch/services/local_answers.py), from the real price table.

def test_local_models_are_the_providers_priced_models():
    claude = local_answers.models("anthropic")
    assert claude and all(card.id.startswith("claude") for card in claude)
    assert {card.id for card in local_answers.models("openai")} >= {"gpt-4o-mini", "text-embedding-3-small"}
    assert local_answers.models("nobody") == ()


def test_a_lookup_answers_exactly_what_a_mock_key_could_call():
    now = datetime.datetime.now(datetime.UTC)
    assert local_answers.lookup("claude-sonnet-4-5-20250929", "anthropic", now).id == "claude-sonnet-4-5-20250929"
    assert local_answers.lookup("no-such-model", "anthropic", now) is None


def test_the_local_count_is_what_a_mock_reports():
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
    assert local_answers.count("gpt-4o-mini", body, "chat") == 8  # exact for OpenAI models
    claude = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "Hello there"}]}
    raw = count_prompt("claude-sonnet-4-6", claude, "anthropic_messages")
    assert local_answers.count("claude-sonnet-4-6", claude, "anthropic_messages") > raw  # the upper bound
    with pytest.raises(BadRequest, match="cannot read the prompt"):
        local_answers.count("gpt-4o-mini", {"messages": "nope"}, "chat")
