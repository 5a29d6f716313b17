"""Claude Code CLI (npm @anthropic-ai/claude-code, pinned in scripts/compat-clients.txt) through a
real gateway, as a user runs it: ``eval "$(pouch env --key …)"`` (ANTHROPIC_API_KEY, HTTPS_PROXY,
NODE_EXTRA_CA_CERTS), then ``claude -p "say hi" --output-format json``, with an empty HOME.

Besides DISABLE_AUTOUPDATER=1 it needs nothing to run non-interactively: print mode asks no
question (no onboarding, no "use this API key?"), and every call it makes goes to
api.anthropic.com (the model API, plus its settings, policy, bootstrap, MCP directory and event
logging paths), so nothing is fetched from elsewhere.
"""

from __future__ import annotations

import json

import pytest

from tests.compat.clients import (MOCK_REPLY, NPM_BIN, assert_metered, assert_mock_never_upstream,
                                  assert_nothing_refused, assert_ran, harness, require)

CLAUDE = str(NPM_BIN / "claude")
ENV = {"DISABLE_AUTOUPDATER": "1"}
TIMEOUT = 90  # it retries a failing API for minutes: a hang fails the test instead


@pytest.fixture(scope="module")
def claude(tmp_path_factory):
    require("npm")
    yield from harness(tmp_path_factory)


def say_hi(claude, kind):
    return claude.run(kind, [CLAUDE, "-p", "say hi", "--output-format", "json"], env=ENV, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def real_hi(claude):
    return say_hi(claude, "real")


@pytest.fixture(scope="module")
def mock_hi(claude):
    return say_hi(claude, "mock")


@pytest.fixture(params=["real_hi", "mock_hi"], ids=["real-key", "mock-key"])
def hi(request):
    return request.getfixturevalue(request.param)


def result(run) -> dict:
    assert_ran(run)
    return json.loads(run.output)


def test_claude_code_gets_its_answer(hi):
    got = result(hi)
    assert got["is_error"] is False and got["subtype"] == "success"
    if hi.kind == "mock":
        assert got["result"] == MOCK_REPLY
    else:  # the fake echoes the last user message, which Claude Code prefixes with a system reminder
        assert got["result"].startswith("echo: ") and got["result"].endswith("say hi")


def test_each_paid_call_has_one_usage_row_at_its_price(hi):
    used = result(hi)["modelUsage"]  # what Claude Code says each model used
    assert_metered(hi, models=list(used))
    for model, tokens in used.items():
        rows = [row for row in hi.rows if row.model == model]
        reported_input = tokens["inputTokens"] + tokens["cacheReadInputTokens"] + tokens["cacheCreationInputTokens"]
        assert sum(row.input_tokens for row in rows) == reported_input
        assert sum(row.output_tokens for row in rows) == tokens["outputTokens"]


def test_no_mock_key_request_reaches_the_provider(mock_hi):
    assert_ran(mock_hi)
    assert_mock_never_upstream(mock_hi)


def test_context_of_a_mock_key_is_counted_without_the_provider(claude):
    """/context counts the context's parts with count_tokens (about 25 calls): free endpoints, which
    for a mock key pouch must answer itself rather than send upstream with the real key."""
    run = claude.run("mock", [CLAUDE, "-p", "/context", "--output-format", "json"], env=ENV, timeout=TIMEOUT)
    got = result(run)
    assert got["is_error"] is False and "Context Usage" in got["result"]
    assert_mock_never_upstream(run)


def test_no_flow_of_normal_operation_is_refused(hi):
    assert_ran(hi)
    assert_nothing_refused(hi)


@pytest.fixture(scope="module")
def claude_with_proxy_auth(tmp_path_factory):
    require("npm")
    yield from harness(tmp_path_factory, {"pouch_proxy_auth": "on"})


def test_with_proxy_authentication_a_mock_session_sends_nothing_at_all_upstream(claude_with_proxy_auth):
    """The strict reading, for an operator who wants a mock session wholly offline: with the key
    as proxy password (pouch env puts it there when authentication is on) every request on the
    connection is the key's, the keyless public ones too, so all are answered by pouch."""
    run = say_hi(claude_with_proxy_auth, "mock")
    assert result(run)["result"] == MOCK_REPLY
    assert [(r.method, r.path) for r in run.reached] == [] and not run.messages
    assert_nothing_refused(run)
