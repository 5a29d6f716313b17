"""Python clients from PyPI (pinned in scripts/compat-clients.txt, installed in a venv of their
own) through a real gateway, configured by ``eval "$(pouch env --key …)"`` alone: the key in
OPENAI_API_KEY, HTTPS_PROXY, and SSL_CERT_FILE naming pouch's bundle (the system's CAs plus
pouch's), which httpx, under both, reads.

- ``llm`` (simonw): ``llm -m gpt-4o-mini "say hi"``, with LLM_USER_PATH in the empty HOME (where it
  logs each prompt and its usage, read back with ``llm logs --json``).
- the ``litellm`` SDK: ``litellm.completion(model="gpt-4o-mini", ...)`` (tests/compat/litellm_chat.py).
  On import it fetches its model price map from GitHub unless LITELLM_LOCAL_MODEL_COST_MAP=True;
  the suite's gateway tunnels nothing there, so it is set (a user's gateway would let it through).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.compat.clients import (HERE, MOCK_REPLY, VENV_BIN, assert_metered, assert_mock_never_upstream,
                                  assert_nothing_refused, assert_ran, assert_tokens, harness, require)

MODEL = "gpt-4o-mini"
CASES = [("llm", "real"), ("llm", "mock"), ("litellm", "real"), ("litellm", "mock")]


@pytest.fixture(scope="module")
def python_clients(tmp_path_factory):
    require("pypi")
    yield from harness(tmp_path_factory)


@pytest.fixture(scope="module")
def runs(python_clients):
    made = {}

    def run(client, kind):
        if (client, kind) not in made:
            made[client, kind] = (llm if client == "llm" else litellm)(python_clients, kind)
        return made[client, kind]

    return run


def llm(harness, kind):
    """The reply on stdout; then the prompt's log (model, tokens), as llm recorded it."""
    run = harness.run(kind, [str(VENV_BIN / "llm"), "-m", MODEL, "say hi"], env={"LLM_USER_PATH": "llm"})
    assert_ran(run)
    logs = subprocess.run([str(VENV_BIN / "llm"), "logs", "-n", "1", "--json"], capture_output=True, text=True,
                          timeout=60, env={"LLM_USER_PATH": str(run.home / "llm"), "HOME": str(run.home)})
    assert logs.returncode == 0, logs.stderr
    [log] = json.loads(logs.stdout)
    run.said = run.output.strip()
    run.reported = (log["model"], log["input_tokens"], log["output_tokens"])
    return run


def litellm(harness, kind):
    run = harness.run(kind, [str(VENV_BIN / "python"), str(HERE / "litellm_chat.py")],
                      env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert_ran(run)
    [got] = run.json_lines()
    run.said = got["text"]
    run.reported = (got["model"], got["usage"]["prompt_tokens"], got["usage"]["completion_tokens"])
    return run


@pytest.fixture(params=CASES, ids=[f"{c}-{k}-key" for c, k in CASES])
def say_hi(request, runs):
    return runs(*request.param)


def test_the_client_gets_its_answer(say_hi):
    assert say_hi.said == (MOCK_REPLY if say_hi.kind == "mock" else "echo: say hi")


def test_each_paid_call_has_one_usage_row_at_its_price(say_hi):
    model, input_tokens, output_tokens = say_hi.reported
    assert model.startswith(MODEL)
    assert_metered(say_hi, models=[MODEL])
    assert_tokens(say_hi, input_tokens, output_tokens)


@pytest.mark.parametrize("client", ["llm", "litellm"])
def test_no_mock_key_request_reaches_the_provider(runs, client):
    assert_mock_never_upstream(runs(client, "mock"))


def test_no_flow_of_normal_operation_is_refused(say_hi):
    assert_nothing_refused(say_hi)
