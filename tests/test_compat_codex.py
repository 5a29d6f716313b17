"""Codex CLI (npm @openai/codex, pinned in scripts/compat-clients.txt) through a real gateway, as
a user runs it: ``eval "$(pouch env --key …)"`` (CODEX_API_KEY — Codex does not read
OPENAI_API_KEY —, HTTPS_PROXY, SSL_CERT_FILE), then ``codex exec --skip-git-repo-check "say hi"``
with an empty HOME (so an empty CODEX_HOME) and stdin closed (else it waits for more input).

Over both of its transports: its built-in OpenAI provider opens the Responses API over a
WebSocket first (``wss://api.openai.com/v1/responses``), and falls back to HTTPS after five
reconnects; a provider configured with ``supports_websockets = false`` speaks HTTPS only (the
built-in provider cannot be reconfigured, so that one is named ``openai-https``).

Codex also reaches for chatgpt.com, ab.chatgpt.com and GitHub (model catalogue, feature flags,
plugins): the suite's gateway tunnels nothing there, and Codex carries on without them.
"""

from __future__ import annotations

import pytest

from tests.compat.clients import (MOCK_REPLY, NPM_BIN, assert_metered, assert_mock_never_upstream,
                                  assert_nothing_refused, assert_ran, harness, require)

CODEX = str(NPM_BIN / "codex")
# Codex 0.171's default, named so that its rows are checked against it. A model Codex has no
# metadata for (gpt-5-mini) gets generic metadata and a `namespace` tool in its requests.
MODEL = "gpt-6.2-sol"
TIMEOUT = 90  # its reconnects and retries can take minutes: a hang fails the test instead
HTTPS_ONLY = """\
model_provider = "openai-https"

[model_providers.openai-https]
name = "OpenAI over HTTPS only"
base_url = "https://api.openai.com/v1"
env_key = "CODEX_API_KEY"
wire_api = "responses"
supports_websockets = false
"""
FELL_BACK = "Falling back from WebSockets to HTTPS transport"


@pytest.fixture(scope="module")
def codex(tmp_path_factory):
    require("npm")
    yield from harness(tmp_path_factory)


CASES = [("websocket", "real"), ("websocket", "mock"), ("https", "real"), ("https", "mock")]


@pytest.fixture(scope="module")
def runs(codex, tmp_path_factory):
    """One run per case, made when a test first asks for it."""
    made = {}

    def run(transport, kind):
        if (transport, kind) not in made:
            codex_home = tmp_path_factory.mktemp(f"codex-home-{transport}-{kind}")
            if transport == "https":
                (codex_home / "config.toml").write_text(HTTPS_ONLY)
            made[transport, kind] = codex.run(
                kind, [CODEX, "exec", "--json", "--skip-git-repo-check", "-m", MODEL, "say hi"],
                env={"CODEX_HOME": str(codex_home)}, timeout=TIMEOUT)
        return made[transport, kind]

    return run


@pytest.fixture(params=CASES, ids=[f"{t}-{k}-key" for t, k in CASES])
def say_hi(request, runs):
    run = runs(*request.param)
    run.transport = request.param[0]
    return run


def events(run) -> list[dict]:
    assert_ran(run)
    return run.json_lines()


def test_codex_gets_its_answer(say_hi):
    said = [e["item"]["text"] for e in events(say_hi)
            if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"]
    assert said == [MOCK_REPLY if say_hi.kind == "mock" else "echo: say hi"]


def test_each_paid_call_has_one_usage_row_at_its_price(say_hi):
    turns = [e["usage"] for e in events(say_hi) if e["type"] == "turn.completed"]
    assert len(turns) == 1
    assert_metered(say_hi, models=[MODEL])
    # the turn's call is one of the rows (over a WebSocket Codex first sends a prewarm create,
    # "generate": false, that its turn's usage leaves out)
    assert (turns[0]["input_tokens"], turns[0]["output_tokens"]) in \
        [(row.input_tokens, row.output_tokens) for row in say_hi.rows]


def test_no_mock_key_request_reaches_the_provider(runs):
    for transport in ("websocket", "https"):
        run = runs(transport, "mock")
        assert_ran(run)
        assert_mock_never_upstream(run)


def test_the_websocket_carries_the_turn(runs):
    """Codex's first choice works: no reconnects, no fallback to HTTPS."""
    for kind in ("real", "mock"):
        run = runs("websocket", kind)
        assert_ran(run)
        assert FELL_BACK not in run.process.stderr and "Reconnecting" not in run.process.stderr
        assert not [r for r in run.reached if r.method == "POST"], "the turn went over HTTPS"


def test_no_flow_of_normal_operation_is_refused(say_hi):
    assert_ran(say_hi)
    assert_nothing_refused(say_hi)
