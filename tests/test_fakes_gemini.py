"""The fake Gemini upstream, driven directly by the real google-genai SDK (and, for the
OpenAI-compatible surface, the openai SDK): end-to-end tests of the gateway can only be as
trustworthy as the upstream they run against."""

import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx2
import openai
import pytest
from google import genai
from google.genai import errors, types

from pouch.tokens.count import count_prompt, count_text
from tests.fakes.gemini_fake import FakeGemini

MODEL = "gemini-2.5-flash"
SAID = "hello there world"
CONTENTS = {"contents": [{"parts": [{"text": SAID}], "role": "user"}]}  # what the SDK sends for SAID


def fake_headers(**headers) -> types.GenerateContentConfig:
    """Per-request x-fake-* headers, the google-genai way."""
    return types.GenerateContentConfig(http_options=types.HttpOptions(headers=headers))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with FakeGemini(tls_dir=tmp_path_factory.mktemp("tls")) as fake:
        yield fake


@pytest.fixture
def fake(server):
    server.reset()
    return server


@pytest.fixture(scope="module")
def client(server):
    verify = ssl.create_default_context(cafile=server.ca_path)
    options = types.HttpOptions(base_url=server.url, client_args={"verify": verify})
    with genai.Client(api_key="gm-test", http_options=options) as client:
        yield client


@pytest.fixture(scope="module")
def raw(server):
    """A plain HTTP client, for what the SDK would not send."""
    with httpx2.Client(base_url=server.url, verify=ssl.create_default_context(cafile=server.ca_path)) as http:
        yield http


def test_certificate_verifies_as_generativelanguage(server):
    context = ssl.create_default_context(cafile=server.ca_path)
    with socket.create_connection((server.host, server.port)) as plain:
        with context.wrap_socket(plain, server_hostname="generativelanguage.googleapis.com") as tls:
            assert tls.version()


class TestGenerateContent:
    def test_json_echoes_with_realistic_usage(self, fake, client):
        response = client.models.generate_content(model=MODEL, contents=SAID)
        assert response.text == "echo: hello there world"
        assert response.candidates[0].finish_reason == types.FinishReason.STOP
        assert response.model_version == MODEL and response.response_id
        usage = response.usage_metadata
        assert fake.requests[-1].body == CONTENTS
        assert usage.prompt_token_count == count_prompt(MODEL, CONTENTS, "gemini")
        assert usage.candidates_token_count == count_text(MODEL, "echo: hello there world")
        assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
        assert usage.thoughts_token_count is usage.cached_content_token_count is None  # zeros are left out

    def test_stream_is_sse_with_cumulative_usage(self, fake, client):
        chunks = list(client.models.generate_content_stream(model=MODEL, contents=SAID))
        assert fake.requests[-1].path == f"/v1/models/{MODEL}:streamGenerateContent?alt=sse"
        assert "".join(chunk.text for chunk in chunks) == "echo: hello there world"
        assert [c.candidates[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + [types.FinishReason.STOP]
        counts = [chunk.usage_metadata.candidates_token_count for chunk in chunks]
        assert counts == sorted(counts) and counts[-1] == count_text(MODEL, "echo: hello there world")
        prompt = count_prompt(MODEL, CONTENTS, "gemini")
        assert {chunk.usage_metadata.prompt_token_count for chunk in chunks} == {prompt}

    def test_sse_events_end_with_crlf(self, fake, raw):
        response = raw.post(f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse", json=CONTENTS,
                            headers={"x-goog-api-key": "k"})
        assert response.headers["content-type"] == "text/event-stream"
        events = response.text.split("\r\n\r\n")
        assert events[-1] == "" and all(event.startswith("data: {") for event in events[:-1])

    def test_stream_without_alt_sse_is_a_json_array(self, fake, raw):
        url = f"/v1beta/models/{MODEL}:streamGenerateContent?key=k"
        with raw.stream("POST", url, json=CONTENTS, headers={"x-fake-chunk-delay": "0.01"}) as response:
            assert response.headers["content-type"] == "application/json; charset=UTF-8"
            assert response.headers["transfer-encoding"] == "chunked"
            pieces = list(response.iter_raw())
        body = b"".join(pieces)
        assert body.startswith(b'[{"candidates": ') and b"\r\n,\r\n{" in body and body.endswith(b"}\r\n]")
        assert len(pieces) > 1  # sent as it goes, not at once
        chunks = json.loads(body)
        assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "echo: hello there world"
        assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
        assert fake.requests[-1].path == url

    @pytest.mark.parametrize("stream", [False, True])
    def test_max_output_tokens_cuts_the_reply(self, fake, client, stream):
        config = types.GenerateContentConfig(max_output_tokens=2)
        if stream:
            chunks = list(client.models.generate_content_stream(model=MODEL, contents=SAID, config=config))
        else:
            chunks = [client.models.generate_content(model=MODEL, contents=SAID, config=config)]
        assert "".join(chunk.text for chunk in chunks) == "echo:"
        assert chunks[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
        assert chunks[-1].usage_metadata.candidates_token_count <= 2

    @pytest.mark.parametrize("stream", [False, True])
    def test_usage_override_fills_gemini_fields(self, fake, client, stream):
        usage = {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 3,
                 "cachedContentTokenCount": 4}
        config = fake_headers(**{"x-fake-usage": json.dumps(usage)})
        if stream:
            got = list(client.models.generate_content_stream(model=MODEL, contents=SAID, config=config))[-1]
        else:
            got = client.models.generate_content(model=MODEL, contents=SAID, config=config)
        metadata = got.usage_metadata
        assert (metadata.prompt_token_count, metadata.candidates_token_count) == (10, 5)
        assert (metadata.thoughts_token_count, metadata.cached_content_token_count) == (3, 4)
        assert metadata.total_token_count == 10 + 5 + 3  # cached is part of the prompt already

    def test_unknown_usage_field_is_a_400(self, fake, client):
        with pytest.raises(errors.ClientError, match="unknown usage fields"):
            config = fake_headers(**{"x-fake-usage": '{"input_tokens": 1}'})
            client.models.generate_content(model=MODEL, contents=SAID, config=config)

    @pytest.mark.parametrize("alt", ["?alt=sse", ""])
    def test_no_usage(self, fake, raw, alt):
        headers = {"x-goog-api-key": "k", "x-fake-no-usage": "1"}
        for method in ("generateContent", "streamGenerateContent"):
            response = raw.post(f"/v1beta/models/{MODEL}:{method}{alt}", json=CONTENTS, headers=headers)
            assert response.status_code == 200 and "usageMetadata" not in response.text

    def test_reply_and_chunks(self, fake, client):
        config = fake_headers(**{"x-fake-reply": "one two three four five", "x-fake-chunks": "2"})
        chunks = client.models.generate_content_stream(model=MODEL, contents=SAID, config=config)
        assert [chunk.text for chunk in chunks] == ["one two", " three four five"]

    def test_abort_mid_stream(self, fake, client):
        seen = []
        config = fake_headers(**{"x-fake-abort-after": "2"})
        with pytest.raises(httpx2.RemoteProtocolError):  # the SDK lets the transport error through
            for chunk in client.models.generate_content_stream(model=MODEL, contents=SAID, config=config):
                seen.append(chunk.text)
        assert seen == ["echo:", " hello"]


SEARCH = types.Tool(google_search=types.GoogleSearch())
URL_CONTEXT = types.Tool(url_context=types.UrlContext())
CODE = types.Tool(code_execution=types.ToolCodeExecution())
FUNCTION = types.Tool(function_declarations=[types.FunctionDeclaration(name="lookup", description="look it up")])


def with_tools(*tools, **controls) -> types.GenerateContentConfig:
    headers = {f"x-fake-{name.replace('_', '-')}": str(value) for name, value in controls.items()}
    return types.GenerateContentConfig(tools=list(tools), http_options=types.HttpOptions(headers=headers))


def prompt_of(fake) -> int:
    return count_prompt(MODEL, fake.requests[-1].body, "gemini")


class TestServerTools:
    """Server tools run as Google runs them: grounding or URL context metadata on the candidate,
    or code execution parts before the text, and the tool rounds' input billed as
    toolUsePromptTokenCount."""

    def test_google_search_grounds_the_candidate(self, fake, client):
        response = client.models.generate_content(model=MODEL, contents=SAID, config=with_tools(SEARCH, tool_calls=3))
        assert fake.requests[-1].body["tools"] == [{"googleSearch": {}}]
        grounding = response.candidates[0].grounding_metadata
        assert grounding.web_search_queries == ["fake query 1", "fake query 2", "fake query 3"]
        uris = [chunk.web.uri for chunk in grounding.grounding_chunks]
        assert uris == ["https://example.com/1", "https://example.com/2", "https://example.com/3"]
        assert grounding.grounding_chunks[2].web.title == "Result 3"
        assert grounding.search_entry_point.rendered_content == "<div></div>"
        assert response.text == "echo: hello there world"
        usage = response.usage_metadata
        assert usage.prompt_token_count == prompt_of(fake)  # the tool rounds are billed beside it
        assert usage.tool_use_prompt_token_count == 3 * 1000
        assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count + 3000

    def test_url_context_lists_the_urls(self, fake, client):
        config = with_tools(URL_CONTEXT, tool_calls=2)
        candidate = client.models.generate_content(model=MODEL, contents=SAID, config=config).candidates[0]
        assert fake.requests[-1].body["tools"] == [{"urlContext": {}}]
        assert [(u.retrieved_url, u.url_retrieval_status) for u in candidate.url_context_metadata.url_metadata] == [
            ("https://example.com/1", types.UrlRetrievalStatus.URL_RETRIEVAL_STATUS_SUCCESS),
            ("https://example.com/2", types.UrlRetrievalStatus.URL_RETRIEVAL_STATUS_SUCCESS),
        ]
        assert candidate.grounding_metadata is None

    def test_code_execution_parts_come_before_the_text(self, fake, client):
        config = with_tools(CODE, tool_calls=2, tool_input=5)
        response = client.models.generate_content(model=MODEL, contents=SAID, config=config)
        assert fake.requests[-1].body["tools"] == [{"codeExecution": {}}]
        parts = response.candidates[0].content.parts
        assert [(p.executable_code.code, p.executable_code.language) for p in parts[0:4:2]] == [
            ("print(1)", types.Language.PYTHON), ("print(2)", types.Language.PYTHON)]
        assert [(p.code_execution_result.outcome, p.code_execution_result.output) for p in parts[1:4:2]] == [
            (types.Outcome.OUTCOME_OK, "1"), (types.Outcome.OUTCOME_OK, "2")]
        assert parts[4].text == "echo: hello there world"
        assert response.usage_metadata.tool_use_prompt_token_count == 2 * 5

    @pytest.mark.parametrize("tool, field", [
        ({"google_search": {}}, "groundingMetadata"),
        ({"googleSearchRetrieval": {}}, "groundingMetadata"),  # the legacy search tool
        ({"url_context": {}}, "urlContextMetadata"),
    ])
    def test_either_spelling(self, fake, raw, tool, field):
        response = raw.post(f"/v1beta/models/{MODEL}:generateContent", json={**CONTENTS, "tools": [tool]},
                            headers={"x-goog-api-key": "k", "x-fake-tool-calls": "1"})
        assert field in response.json()["candidates"][0]
        assert response.json()["usageMetadata"]["toolUsePromptTokenCount"] == 1000

    @pytest.mark.parametrize("controls", [{}, {"ignore_bounds": 1}])
    def test_no_bound_so_all_calls_are_made(self, fake, client, controls):
        config = with_tools(SEARCH, tool_calls=7, **controls)
        response = client.models.generate_content(model=MODEL, contents=SAID, config=config)
        assert len(response.candidates[0].grounding_metadata.web_search_queries) == 7
        assert response.usage_metadata.tool_use_prompt_token_count == 7000

    def test_first_server_tool_is_the_one_called(self, fake, client):
        config = with_tools(FUNCTION, CODE, SEARCH, tool_calls=1)
        candidate = client.models.generate_content(model=MODEL, contents=SAID, config=config).candidates[0]
        assert candidate.content.parts[0].executable_code is not None
        assert candidate.grounding_metadata is None

    @pytest.mark.parametrize("tools", [(), (FUNCTION,)])
    def test_no_server_tool_no_calls(self, fake, client, tools):
        response = client.models.generate_content(model=MODEL, contents=SAID, config=with_tools(*tools, tool_calls=3))
        candidate = response.candidates[0]
        assert candidate.grounding_metadata is candidate.url_context_metadata is None
        assert len(candidate.content.parts) == 1
        assert response.usage_metadata.tool_use_prompt_token_count is None
        assert response.usage_metadata.prompt_token_count == prompt_of(fake)

    def test_usage_override_wins(self, fake, client):
        config = with_tools(SEARCH, tool_calls=2)
        config.http_options.headers["x-fake-usage"] = '{"toolUsePromptTokenCount": 9, "promptTokenCount": 10}'
        usage = client.models.generate_content(model=MODEL, contents=SAID, config=config).usage_metadata
        assert (usage.prompt_token_count, usage.tool_use_prompt_token_count) == (10, 9)
        assert usage.total_token_count == 10 + usage.candidates_token_count + 9

    @pytest.mark.parametrize("tool, metadata", [(SEARCH, "grounding_metadata"), (URL_CONTEXT, "url_context_metadata")])
    def test_stream_puts_the_metadata_on_the_last_chunk(self, fake, client, tool, metadata):
        config = with_tools(tool, tool_calls=2)
        whole = client.models.generate_content(model=MODEL, contents=SAID, config=config)
        chunks = list(client.models.generate_content_stream(model=MODEL, contents=SAID, config=config))
        assert len(chunks) == 4 and "".join(chunk.text for chunk in chunks) == whole.text
        assert [getattr(c.candidates[0], metadata) is not None for c in chunks] == [False, False, False, True]
        assert getattr(chunks[-1].candidates[0], metadata) == getattr(whole.candidates[0], metadata)
        assert [c.usage_metadata.tool_use_prompt_token_count for c in chunks] == [None, None, None, 2000]
        assert chunks[-1].usage_metadata == whole.usage_metadata
        before = chunks[-2].usage_metadata  # the tool rounds are not in the total before they show
        assert before.total_token_count == before.prompt_token_count + before.candidates_token_count

    def test_stream_leads_with_code_execution(self, fake, client):
        config = with_tools(CODE, tool_calls=1)
        whole = client.models.generate_content(model=MODEL, contents=SAID, config=config)
        chunks = list(client.models.generate_content_stream(model=MODEL, contents=SAID, config=config))
        streamed = [part for chunk in chunks for part in chunk.candidates[0].content.parts]
        assert [len(chunk.candidates[0].content.parts) for chunk in chunks] == [3, 1, 1, 1]
        assert [(p.executable_code, p.code_execution_result) for p in streamed[:2]] == [
            (p.executable_code, p.code_execution_result) for p in whole.candidates[0].content.parts[:2]]
        # The tool round is counted from the chunk that shows it, and stays: usage is cumulative.
        assert [c.usage_metadata.tool_use_prompt_token_count for c in chunks] == [1000] * 4
        assert chunks[-1].usage_metadata == whole.usage_metadata


def test_count_tokens(fake, client):
    counted = client.models.count_tokens(model=MODEL, contents=SAID)
    assert counted.total_tokens == count_prompt(MODEL, CONTENTS, "gemini")
    assert fake.requests[-1].path.endswith(f"/models/{MODEL}:countTokens")


def test_embed_content(fake, client, raw):
    config = types.EmbedContentConfig(output_dimensionality=8)
    embedded = client.models.embed_content(model="gemini-embedding-001", contents=["a", "b"], config=config)
    assert fake.requests[-1].path.endswith(":batchEmbedContents")  # what the SDK uses for the Gemini API
    assert [len(e.values) for e in embedded.embeddings] == [8, 8]
    one = raw.post("/v1beta/models/gemini-embedding-001:embedContent", headers={"x-goog-api-key": "k"},
                   json={"content": {"parts": [{"text": "a"}]}}).json()
    assert len(one["embedding"]["values"]) == 3072


def test_models_list_and_get(fake, client):
    assert f"models/{MODEL}" in [model.name for model in client.models.list()]
    assert client.models.get(model=MODEL).output_token_limit == 65_536


@pytest.mark.parametrize(
    "status, error, name",
    [
        (400, errors.ClientError, "INVALID_ARGUMENT"),
        (403, errors.ClientError, "PERMISSION_DENIED"),
        (429, errors.ClientError, "RESOURCE_EXHAUSTED"),
        (500, errors.ServerError, "INTERNAL"),
        (503, errors.ServerError, "UNAVAILABLE"),
    ],
)
def test_status_raises_the_sdk_exception(fake, client, status, error, name):
    with pytest.raises(error) as raised:
        config = fake_headers(**{"x-fake-status": str(status)})
        client.models.generate_content(model=MODEL, contents=SAID, config=config)
    assert (raised.value.code, raised.value.status) == (status, name)
    assert raised.value.message.startswith("fake: HTTP")


def test_api_key_as_header_or_query(fake, client, raw):
    client.models.generate_content(model=MODEL, contents=SAID)
    assert fake.requests[-1].headers["x-goog-api-key"] == "gm-test"
    assert raw.post(f"/v1beta/models/{MODEL}:generateContent?key=k", json=CONTENTS).status_code == 200
    missing = raw.post(f"/v1beta/models/{MODEL}:generateContent", json=CONTENTS)
    assert missing.status_code == 403  # what Google answers a request without a key
    assert missing.json()["error"]["status"] == "PERMISSION_DENIED"


def test_missing_contents_is_a_400(fake, raw):
    response = raw.post(f"/v1beta/models/{MODEL}:generateContent", json={}, headers={"x-goog-api-key": "k"})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": 400, "message": "* GenerateContentRequest.contents: contents is not specified",
        "status": "INVALID_ARGUMENT",
    }


@pytest.fixture(scope="module")
def compat(server):
    """The openai SDK pointed at the OpenAI-compatible surface."""
    http_client = httpx2.Client(verify=ssl.create_default_context(cafile=server.ca_path))
    yield openai.OpenAI(base_url=server.url + "/v1beta/openai/", api_key="gm-test", http_client=http_client,
                        max_retries=0)
    http_client.close()


class TestOpenAICompatible:
    def test_chat_json_and_stream(self, fake, compat):
        messages = [{"role": "user", "content": SAID}]
        completion = compat.chat.completions.create(model=MODEL, messages=messages)
        assert completion.choices[0].message.content == "echo: hello there world"
        assert completion.usage.prompt_tokens == count_prompt(MODEL, {"messages": messages}, "chat")
        assert fake.requests[-1].headers["authorization"] == "Bearer gm-test"
        chunks = list(compat.chat.completions.create(
            model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}))
        assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens

    def test_embeddings_and_models(self, fake, compat):
        assert len(compat.embeddings.create(model="gemini-embedding-001", input="a").data) == 1
        assert f"models/{MODEL}" in [model.id for model in compat.models.list()]

    def test_errors_are_google_errors_in_a_list(self, fake, compat):
        with pytest.raises(openai.InternalServerError) as raised:
            compat.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                           extra_headers={"x-fake-status": "503"})
        assert raised.value.body == [{"error": {
            "code": 503, "message": "fake: HTTP 503 as requested by x-fake-status", "status": "UNAVAILABLE"}}]

    def test_needs_a_bearer_token(self, fake, raw):
        response = raw.post("/v1beta/openai/chat/completions", json={"model": MODEL, "messages": []})
        assert response.status_code == 403


def test_runs_as_a_process(tmp_path):
    root = Path(__file__).parents[1]
    command = [sys.executable, "-m", "tests.fakes.gemini_fake", "--print-url", "--tls-dir", str(tmp_path)]
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) as process:
        try:
            url = process.stdout.readline().strip()
            assert process.stdout.readline().strip() == str(tmp_path / "ca.pem")
            with httpx2.Client(verify=ssl.create_default_context(cafile=tmp_path / "ca.pem")) as http:
                assert "models" in http.get(url + "/v1beta/models?key=k").json()
        finally:
            process.terminate()
