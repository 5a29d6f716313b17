"""Chain link 4 (addons/mock.py): fabricated, provider-shaped answers; nothing goes upstream."""

import json

import pytest
from mitmproxy import exceptions, http

import addons.mock
from addons.mock import fit
from pouch.domain.money import Money
from pouch.services import chain
from pouch.tokens.count import count_prompt, count_text
from tests.addon_helpers import MODEL, chat_body, create_key, facts, gateway, openai_flow

STORY = "Tell me a story about a gateway that never overspends"


@pytest.mark.parametrize("max_tokens", [None, 100, 11, 5, 1])
def test_fit_cuts_whole_words_to_the_cap(max_tokens):
    text, tokens = fit(MODEL, STORY, max_tokens)
    assert tokens == count_text(MODEL, text)
    assert STORY.startswith(text) and (text == STORY or STORY[len(text)] == " ")
    if max_tokens is None or max_tokens >= count_text(MODEL, STORY):
        assert text == STORY
    else:
        assert tokens <= max_tokens
        longer = STORY[: STORY.index(" ", len(text) + 1)] if " " in STORY[len(text) + 1:] else STORY
        assert count_text(MODEL, longer) > max_tokens  # not one word more would have fitted


def test_fit_does_not_tokenize_once_per_word(monkeypatch):
    calls = []

    def counting(model, text):
        calls.append(len(text))
        return count_text(model, text)

    monkeypatch.setattr(addons.mock, "count_text", counting)
    text, tokens = fit(MODEL, " ".join(f"word{i}" for i in range(1000)), 5)
    assert tokens <= 5
    assert len(calls) <= 50


@pytest.fixture
def gw():
    with gateway() as gw:
        yield gw


def through_mock(gw, secret, path="/v1/chat/completions", body=None):
    """keys, ratelimit, budget, then mock."""
    return gw.request(openai_flow(path, body or chat_body(STORY), secret=secret), until=gw.mock)


def sse_data(content: bytes) -> list[str]:
    return [line[len("data: "):] for line in content.decode().split("\n") if line.startswith("data: ")]


class TestMock:
    def test_bad_pouch_mock_is_an_options_error(self, gw):
        with pytest.raises(exceptions.OptionsError, match="pouch_mock"):
            gw.configure(pouch_mock="some")

    def test_a_mock_key_gets_an_echo_with_realistic_usage(self, gw):
        _, secret = create_key(mock=True)
        flow = through_mock(gw, secret)
        assert flow.response.status_code == 200
        assert flow.response.headers["x-pouch-mock"] == "true"
        assert flow.response.headers["content-type"] == "application/json"
        completion = json.loads(flow.response.content)
        assert completion["object"] == "chat.completion" and completion["model"] == MODEL
        assert completion["choices"][0]["message"] == {
            "role": "assistant", "content": STORY, "refusal": None, "annotations": []}
        assert completion["choices"][0]["finish_reason"] == "stop"
        prompt, reply = count_prompt(MODEL, chat_body(STORY), "chat"), count_text(MODEL, STORY)
        assert (completion["usage"]["prompt_tokens"], completion["usage"]["completion_tokens"]) == (prompt, reply)
        assert facts(flow)["mock"] == {"input_tokens": prompt, "output_tokens": reply}
        assert facts(flow)["refused"] is None

    def test_pouch_mock_all_mocks_every_key(self, gw):
        gw.configure(pouch_mock="all")
        _, secret = create_key()
        flow = through_mock(gw, secret)
        assert flow.response.headers["x-pouch-mock"] == "true"
        assert facts(flow)["mock"] is not None

    def test_pouch_mock_all_mocks_observed_credentials_too(self, gw):
        gw.configure(pouch_mock="all", pouch_unknown_keys="observe")
        flow = through_mock(gw, "sk-proj-someone")
        assert flow.response.headers["x-pouch-mock"] == "true"

    def test_pouch_mock_reply(self, gw):
        gw.configure(pouch_mock_reply="All systems nominal.")
        _, secret = create_key(mock=True)
        completion = json.loads(through_mock(gw, secret).response.content)
        assert completion["choices"][0]["message"]["content"] == "All systems nominal."
        assert completion["usage"]["completion_tokens"] == count_text(MODEL, "All systems nominal.")

    def test_the_reply_is_cut_to_the_clients_cap(self, gw):
        _, secret = create_key(mock=True)
        flow = through_mock(gw, secret, body=chat_body(STORY, max_tokens=4))
        completion = json.loads(flow.response.content)
        content = completion["choices"][0]["message"]["content"]
        assert STORY.startswith(content) and content != STORY
        assert completion["usage"]["completion_tokens"] == count_text(MODEL, content) <= 4
        assert completion["choices"][0]["finish_reason"] == "length"

    def test_the_reply_is_cut_to_the_cap_pouch_set(self, gw):
        budget = count_prompt(MODEL, chat_body(STORY), "chat") * 150_000 + 3 * 600_000
        _, secret = create_key(mock=True, budget=Money(budget))
        flow = through_mock(gw, secret)
        assert facts(flow)["output_capped"] == 3
        assert facts(flow)["mock"]["output_tokens"] <= 3

    def test_a_reply_cut_at_the_cap_pouch_set_says_so(self, gw):
        budget = count_prompt(MODEL, chat_body(STORY), "chat") * 150_000 + 3 * 600_000
        _, secret = create_key(mock=True, budget=Money(budget))
        completion = json.loads(through_mock(gw, secret).response.content)
        assert completion["choices"][0]["finish_reason"] == "length"

    def test_every_choice_is_counted(self, gw):
        _, secret = create_key(mock=True)
        flow = through_mock(gw, secret, body=chat_body(STORY, n=2))
        completion = json.loads(flow.response.content)
        assert len(completion["choices"]) == 2
        assert completion["usage"]["completion_tokens"] == 2 * count_text(MODEL, STORY)

    def test_embeddings(self, gw):
        _, secret = create_key(mock=True)
        body = {"model": "text-embedding-3-small", "input": ["a cat", "a dog"]}
        flow = through_mock(gw, secret, "/v1/embeddings", body)
        result = json.loads(flow.response.content)
        assert [len(item["embedding"]) for item in result["data"]] == [1536, 1536]
        prompt = count_prompt("text-embedding-3-small", body, "embeddings")
        assert result["usage"] == {"prompt_tokens": prompt, "total_tokens": prompt}
        assert facts(flow)["mock"] == {"input_tokens": prompt, "output_tokens": 0}

    def test_a_stream_is_mocked_as_sse(self, gw):
        _, secret = create_key(mock=True)
        flow = through_mock(gw, secret, body=chat_body(STORY, stream=True))
        assert flow.response.headers["content-type"].startswith("text/event-stream")
        assert flow.response.content.endswith(b"data: [DONE]\n\n")
        chunks = [json.loads(data) for data in sse_data(flow.response.content)[:-1]]
        assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
        assert "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks) == STORY
        assert all("usage" not in chunk for chunk in chunks)  # the client did not ask for it

    def test_a_stream_that_asks_for_usage_gets_it(self, gw):
        _, secret = create_key(mock=True)
        body = chat_body(STORY, stream=True, stream_options={"include_usage": True})
        flow = through_mock(gw, secret, body=body)
        last = json.loads(sse_data(flow.response.content)[-2])
        assert last["choices"] == []
        assert last["usage"]["completion_tokens"] == count_text(MODEL, STORY)

    def test_responses_api(self, gw):
        _, secret = create_key(mock=True)
        flow = through_mock(gw, secret, "/v1/responses", {"model": MODEL, "input": "hi there"})
        response = json.loads(flow.response.content)
        assert response["object"] == "response" and response["status"] == "completed"
        assert response["output"][0]["content"][0]["text"] == "hi there"

    def test_a_key_that_is_not_a_mock_key_is_untouched(self, gw):
        _, secret = create_key()
        flow = through_mock(gw, secret)
        assert flow.response is None and facts(flow)["mock"] is None

    def test_free_endpoints_of_a_mock_key_are_answered_here(self, gw):
        # more in tests/test_addon_mock_local.py
        _, secret = create_key(mock=True)
        flow = gw.request(openai_flow("/v1/models", method="GET", secret=secret), until=gw.mock)
        assert flow.response.status_code == 200 and json.loads(flow.response.content)["object"] == "list"
        assert facts(flow)["local"] == "mock key" and facts(flow)["mock"] is None

    def test_free_endpoints_of_other_keys_are_left_alone(self, gw):
        _, secret = create_key()
        flow = gw.request(openai_flow("/v1/models", method="GET", secret=secret), until=gw.mock)
        assert flow.response is None and facts(flow)["local"] is None

    def test_already_handled_flows_are_left_alone(self, gw):
        _, secret = create_key(mock=True)
        flow = gw.request(openai_flow(body=chat_body(), secret=secret), until=gw.budget)
        flow.response = http.Response.make(204)
        gw.run(gw.mock.request(flow))
        assert flow.response.status_code == 204 and facts(flow)["mock"] is None

    def test_a_refused_request_is_not_mocked(self, gw):
        _, secret = create_key(mock=True, budget=Money(0))
        flow = through_mock(gw, secret)
        assert flow.response.status_code == 429 and facts(flow)["mock"] is None
