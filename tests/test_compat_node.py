"""The Node ``openai`` SDK (npm openai + undici, pinned in scripts/compat-clients.txt) on the
machine's Node.js, through a real gateway, configured by ``eval "$(pouch env --key …)"``:
OPENAI_API_KEY and NODE_EXTRA_CA_CERTS. Node 20's fetch ignores HTTPS_PROXY (NODE_USE_ENV_PROXY
needs Node 24), so the SDK is pointed at the gateway one of the two ways a user does it
(tests/compat/openai_node.cjs): an undici ProxyAgent on HTTPS_PROXY as ``fetchOptions.dispatcher``,
or ``baseURL`` at the gateway's reverse-mode listener.
"""

from __future__ import annotations

import pytest

from tests.compat.clients import (HERE, MOCK_REPLY, NODE_MODULES, assert_metered, assert_mock_never_upstream,
                                  assert_nothing_refused, assert_ran, assert_tokens, harness, require)

MODEL = "gpt-4o-mini"
CASES = [("proxy", "real"), ("proxy", "mock"), ("base-url", "real"), ("base-url", "mock")]


@pytest.fixture(scope="module")
def node_sdk(tmp_path_factory):
    require("npm")
    yield from harness(tmp_path_factory)


@pytest.fixture(scope="module")
def runs(node_sdk):
    made = {}

    def run(how, kind):
        if (how, kind) not in made:
            made[how, kind] = node_sdk.run(
                kind, ["node", str(HERE / "openai_node.cjs"), how, MODEL],
                env={"NODE_PATH": str(NODE_MODULES), "POUCH_BASE_URL": node_sdk.reverse_url})
        return made[how, kind]

    return run


@pytest.fixture(params=CASES, ids=[f"{h}-{k}-key" for h, k in CASES])
def say_hi(request, runs):
    return runs(*request.param)


def reply(run) -> dict:
    assert_ran(run)
    [got] = run.json_lines()
    return got


def test_the_sdk_gets_its_answer(say_hi):
    assert reply(say_hi)["text"] == (MOCK_REPLY if say_hi.kind == "mock" else "echo: say hi")


def test_each_paid_call_has_one_usage_row_at_its_price(say_hi):
    got = reply(say_hi)
    assert got["model"].startswith(MODEL)
    assert_metered(say_hi, models=[MODEL])
    assert_tokens(say_hi, got["usage"]["prompt_tokens"], got["usage"]["completion_tokens"])


@pytest.mark.parametrize("how", ["proxy", "base-url"])
def test_no_mock_key_request_reaches_the_provider(runs, how):
    run = runs(how, "mock")
    assert_ran(run)
    assert_mock_never_upstream(run)


def test_no_flow_of_normal_operation_is_refused(say_hi):
    assert_ran(say_hi)
    assert_nothing_refused(say_hi)
