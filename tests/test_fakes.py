"""The fake OpenAI upstream, driven directly by the real openai SDK: end-to-end tests of the
gateway can only be as trustworthy as the upstream they run against."""

import concurrent.futures
import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import openai
import pytest
from cryptography import x509

from pouch.tokens.count import count_prompt, count_text
from tests.fakes.openai_fake import FakeOpenAI, parse_controls
from tests.fakes.openai_shapes import Controls
from tests.fakes.tls import write_tls_files

HELLO = [{"role": "user", "content": "hello there world"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("tls")) as fake:
        yield fake


@pytest.fixture
def fake(server):
    server.reset()
    return server


@pytest.fixture(scope="module")
def client(server):
    http_client = httpx2.Client(verify=ssl.create_default_context(cafile=server.ca_path))
    yield openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", http_client=http_client, max_retries=0)
    http_client.close()


@pytest.mark.parametrize(
    "headers, behaviour, expected",
    [
        ({}, {}, Controls()),
        ({"x-fake-status": "503", "x-fake-chunk-delay": "0.5"}, {}, Controls(status=503, chunk_delay=0.5)),
        ({"x-fake-usage": '{"prompt_tokens": 3}'}, {}, Controls(usage={"prompt_tokens": 3})),
        ({"x-fake-no-usage": "1"}, {}, Controls(no_usage=True)),
        ({"x-fake-no-usage": "false"}, {"no_usage": True}, Controls(no_usage=False)),
        ({}, {"reply": "set once", "abort_after": 2}, Controls(reply="set once", abort_after=2)),
        ({"x-fake-reply": "header wins"}, {"reply": "set once"}, Controls(reply="header wins")),
        ({"x-fake-tool-calls": "3", "x-fake-ignore-bounds": "1", "x-fake-tool-input": "50"}, {},
         Controls(tool_calls=3, ignore_bounds=True, tool_input=50)),
        ({"x-fake-ignore-bounds": "no"}, {"tool_calls": 2, "ignore_bounds": True}, Controls(tool_calls=2)),
    ],
)
def test_parse_controls(headers, behaviour, expected):
    assert parse_controls(headers, behaviour) == expected


@pytest.mark.parametrize(
    "headers, behaviour",
    [({"x-fake-chunks": "many"}, {}), ({"x-fake-usage": "[1]"}, {}), ({"x-fake-usage": "{"}, {}), ({}, {"dely": 1}),
     ({"x-fake-tool-calls": "-1"}, {}), ({"x-fake-tool-input": "lots"}, {})],
)
def test_parse_controls_refuses(headers, behaviour):
    with pytest.raises(ValueError, match="fake:"):
        parse_controls(headers, behaviour)


def test_certificate_names_loopback_and_provider_hosts(tmp_path):
    files = write_tls_files(tmp_path, hosts=["api.openai.com", "llm.example.test"])
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "api.openai.com", "llm.example.test"}
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_certificate_verifies_as_a_provider_host(server):
    context = ssl.create_default_context(cafile=server.ca_path)
    with socket.create_connection((server.host, server.port)) as raw:
        with context.wrap_socket(raw, server_hostname="api.openai.com") as tls:
            assert tls.version()


class TestChatCompletions:
    def test_json_echoes_with_realistic_usage(self, fake, client):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
        completion = raw.parse()
        assert completion.choices[0].message.content == "echo: hello there world"
        assert completion.choices[0].finish_reason == "stop"
        body = {"model": "gpt-4o-mini", "messages": HELLO}
        assert completion.usage.prompt_tokens == count_prompt("gpt-4o-mini", body, "chat")
        assert completion.usage.completion_tokens == count_text("gpt-4o-mini", "echo: hello there world")
        assert raw.headers["x-request-id"].startswith("req_")
        assert int(raw.headers["openai-processing-ms"]) >= 0
        assert raw.headers["content-type"] == "application/json"

    def test_stream_without_include_usage_has_no_usage_chunk(self, fake, client):
        chunks = list(client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True))
        assert all(chunk.choices for chunk in chunks)
        assert all("usage" not in chunk.model_fields_set for chunk in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: hello there world"
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices[0].finish_reason == "stop"

    def test_stream_with_include_usage_ends_with_usage_chunk(self, fake, client):
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o", messages=HELLO, stream=True, stream_options={"include_usage": True}
            )
        )
        *content, last = chunks
        assert last.choices == []
        assert last.usage.completion_tokens == count_text("gpt-4o", "echo: hello there world")
        # Like OpenAI: every earlier chunk carries "usage": null.
        assert all(c.usage is None and "usage" in c.model_fields_set for c in content)

    @pytest.mark.parametrize("stream", [False, True])
    def test_no_usage(self, fake, client, stream):
        options = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
        headers = {"x-fake-no-usage": "1"}
        answer = client.chat.completions.create(model="gpt-4o", messages=HELLO, extra_headers=headers, **options)
        chunks = list(answer) if stream else [answer]
        assert all(chunk.usage is None for chunk in chunks)
        assert all(chunk.choices for chunk in chunks)

    def test_max_tokens_cuts_the_reply(self, fake, client):
        completion = client.chat.completions.create(model="gpt-4o", messages=HELLO, max_completion_tokens=2)
        assert completion.choices[0].message.content == "echo:"  # "echo: hello" is 3 tokens
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage.completion_tokens <= 2

    def test_usage_override_fills_openai_details(self, fake, client):
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "cached_tokens": 2, "reasoning_tokens": 3}
        completion = client.chat.completions.create(
            model="gpt-4o", messages=HELLO, extra_headers={"x-fake-usage": json.dumps(usage)}
        )
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (10, 5)
        assert completion.usage.prompt_tokens_details.cached_tokens == 2
        assert completion.usage.completion_tokens_details.reasoning_tokens == 3

    def test_reply_and_chunks(self, fake, client):
        headers = {"x-fake-reply": "one two three four five", "x-fake-chunks": "2"}
        stream = client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True, extra_headers=headers)
        pieces = [c.choices[0].delta.content for c in stream if c.choices[0].delta.content]
        assert pieces == ["one two", " three four five"]

    def test_abort_mid_stream(self, fake, client):
        seen = []
        stream = client.chat.completions.create(
            model="gpt-4o", messages=HELLO, stream=True, extra_headers={"x-fake-abort-after": "2"}
        )
        with pytest.raises(openai.APIConnectionError):
            for chunk in stream:
                seen.append(chunk.choices[0].delta.content)
        assert seen == ["", "echo:", " hello"]  # the role chunk, then two content chunks

    def test_chunk_delay_slows_the_stream(self, fake, client):
        headers = {"x-fake-chunk-delay": "0.05"}
        arrivals = [
            time.monotonic()
            for _ in client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True, extra_headers=headers)
        ]
        assert arrivals[-1] - arrivals[0] >= 4 * 0.05  # six events, five gaps; one of slack

    def test_delay_before_headers(self, fake, client):
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(
                model="gpt-4o", messages=HELLO, extra_headers={"x-fake-delay": "0.5"}, timeout=0.1
            )


class TestResponses:
    def test_json(self, fake, client):
        response = client.responses.create(model="gpt-4o", input="hi you", max_output_tokens=100)
        assert response.output_text == "echo: hi you"
        assert response.status == "completed"
        body = {"model": "gpt-4o", "input": "hi you", "max_output_tokens": 100}
        assert response.usage.input_tokens == count_prompt("gpt-4o", body, "responses")
        assert response.usage.output_tokens == count_text("gpt-4o", "echo: hi you")

    def test_stream_event_sequence(self, fake, client):
        events = list(client.responses.create(model="gpt-4o", input=HELLO, stream=True))
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert [e.type for e in events[:4]] == [
            "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        ]
        deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
        assert "".join(deltas) == "echo: hello there world"
        final = events[-1]
        assert final.type == "response.completed"
        assert final.response.output_text == "echo: hello there world"
        assert final.response.usage.output_tokens == count_text("gpt-4o", "echo: hello there world")

    def test_stream_cut_by_max_output_tokens_is_incomplete(self, fake, client):
        events = list(client.responses.create(model="gpt-4o", input=HELLO, stream=True, max_output_tokens=2))
        assert events[-1].type == "response.incomplete"
        assert events[-1].response.usage.output_tokens <= 2

    def test_usage_override(self, fake, client):
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "cached_tokens": 2, "reasoning_tokens": 3}
        response = client.responses.create(model="gpt-4o", input="hi", extra_headers={"x-fake-usage": json.dumps(usage)})
        assert (response.usage.input_tokens, response.usage.output_tokens) == (10, 5)
        assert response.usage.input_tokens_details.cached_tokens == 2
        assert response.usage.output_tokens_details.reasoning_tokens == 3


SERVER_TOOLS = [  # (the tool, the output item the SDK parses a call into, fields of the n-th call)
    ({"type": "web_search"}, "ResponseFunctionWebSearch",
     lambda n: {"type": "web_search_call", "action": {"type": "search", "query": f"fake query {n}"}}),
    ({"type": "web_search_preview_2025_03_11"}, "ResponseFunctionWebSearch", lambda n: {"type": "web_search_call"}),
    ({"type": "file_search", "vector_store_ids": ["vs_1"]}, "ResponseFileSearchToolCall",
     lambda n: {"type": "file_search_call", "queries": [f"fake query {n}"], "results": None}),
    ({"type": "code_interpreter", "container": {"type": "auto"}}, "ResponseCodeInterpreterToolCall",
     lambda n: {"type": "code_interpreter_call", "code": f"print({n})", "outputs": None}),
    ({"type": "mcp", "server_label": "wiki", "server_url": "https://mcp.example.com"}, "McpCall",
     lambda n: {"type": "mcp_call", "name": "fake_tool", "server_label": "wiki", "arguments": "{}", "output": "ok"}),
]
WEB_SEARCH = [{"type": "web_search"}]


def tool_calls(**headers) -> dict:
    return {"extra_headers": {f"x-fake-{name.replace('_', '-')}": str(value) for name, value in headers.items()}}


class TestServerTools:
    """Responses run server tools as OpenAI does: one output item per call before the message,
    and each call's results billed again as input."""

    @pytest.mark.parametrize("tool, kind, fields", SERVER_TOOLS)
    def test_calls_are_output_items_before_the_message(self, fake, client, tool, kind, fields):
        response = client.responses.create(model="gpt-4o", input="hi", tools=[tool], **tool_calls(tool_calls=2))
        *calls, message = response.output
        assert [type(item).__name__ for item in calls] == [kind, kind]
        for n, item in enumerate(calls, start=1):
            assert item.to_dict().items() >= fields(n).items()
            assert item.status == "completed"
        assert len({item.id for item in calls}) == 2
        assert message.type == "message" and response.output_text == "echo: hi"
        if kind == "ResponseCodeInterpreterToolCall":  # one container for the whole response
            assert calls[0].container_id == calls[1].container_id and calls[0].container_id.startswith("cntr_")
        prompt = count_prompt("gpt-4o", fake.requests[-1].body, "responses")
        assert response.usage.input_tokens == prompt + 2 * 1000
        assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens

    @pytest.mark.parametrize("headers, performed", [
        ({"tool_calls": 5}, 2),
        ({"tool_calls": 1}, 1),
        ({"tool_calls": 5, "ignore_bounds": 1}, 5),  # a provider that overruns the bound
    ])
    def test_max_tool_calls_bounds_the_calls(self, fake, client, headers, performed):
        response = client.responses.create(model="gpt-4o", input="hi", tools=WEB_SEARCH, max_tool_calls=2,
                                           **tool_calls(**headers))
        assert [item.type for item in response.output] == ["web_search_call"] * performed + ["message"]
        prompt = count_prompt("gpt-4o", fake.requests[-1].body, "responses")
        assert response.usage.input_tokens == prompt + performed * 1000
        assert response.max_tool_calls == 2

    def test_tool_input_sets_what_each_call_bills(self, fake, client):
        response = client.responses.create(model="gpt-4o", input="hi", tools=WEB_SEARCH,
                                           **tool_calls(tool_calls=3, tool_input=7))
        assert response.usage.input_tokens == count_prompt("gpt-4o", fake.requests[-1].body, "responses") + 3 * 7

    def test_usage_override_still_wins(self, fake, client):
        headers = tool_calls(tool_calls=3)
        headers["extra_headers"]["x-fake-usage"] = '{"input_tokens": 10}'
        response = client.responses.create(model="gpt-4o", input="hi", tools=WEB_SEARCH, **headers)
        assert len(response.output) == 4 and response.usage.input_tokens == 10

    @pytest.mark.parametrize("tools", [[], [{"type": "function", "name": "f", "parameters": {"type": "object"}}]])
    def test_no_server_tool_no_calls(self, fake, client, tools):
        response = client.responses.create(model="gpt-4o", input="hi", tools=tools, **tool_calls(tool_calls=3))
        assert [item.type for item in response.output] == ["message"]
        assert response.usage.input_tokens == count_prompt("gpt-4o", fake.requests[-1].body, "responses")

    def test_first_server_tool_is_the_one_called(self, fake, client):
        tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}},
                 {"type": "file_search", "vector_store_ids": ["vs_1"]}, {"type": "web_search"}]
        response = client.responses.create(model="gpt-4o", input="hi", tools=tools, **tool_calls(tool_calls=1))
        assert [item.type for item in response.output] == ["file_search_call", "message"]

    @pytest.mark.parametrize("tool, kind, fields", SERVER_TOOLS[::2])
    def test_stream_agrees_with_json(self, fake, client, tool, kind, fields):
        ask = {"model": "gpt-4o", "input": "hi", "tools": [tool], "max_tool_calls": 3, **tool_calls(tool_calls=4)}
        whole = client.responses.create(**ask)
        events = list(client.responses.create(**ask, stream=True))
        assert [e.sequence_number for e in events] == list(range(len(events)))
        items = [(e.type, e.output_index, e.item.type, e.item.status) for e in events if "output_item" in e.type]
        call = fields(1)["type"]
        assert items == [
            ("response.output_item.added", 0, call, "in_progress"), ("response.output_item.done", 0, call, "completed"),
            ("response.output_item.added", 1, call, "in_progress"), ("response.output_item.done", 1, call, "completed"),
            ("response.output_item.added", 2, call, "in_progress"), ("response.output_item.done", 2, call, "completed"),
            ("response.output_item.added", 3, "message", "in_progress"),
            ("response.output_item.done", 3, "message", "completed"),
        ]
        assert {e.output_index for e in events if e.type == "response.output_text.delta"} == {3}
        final = events[-1].response
        assert events[-1].type == "response.completed"
        assert [type(item).__name__ for item in final.output] == [kind] * 3 + ["ResponseOutputMessage"]
        done = [e.item for e in events if e.type == "response.output_item.done"]
        assert [item.id for item in final.output] == [item.id for item in done]
        assert final.usage == whole.usage

    def test_stream_helper_final_response(self, fake, client):
        with client.responses.stream(model="gpt-4o", input="hi", tools=WEB_SEARCH, **tool_calls(tool_calls=2)) as s:
            final = s.get_final_response()
        assert [item.type for item in final.output] == ["web_search_call", "web_search_call", "message"]
        assert final.output_text == "echo: hi"
        assert final.usage.input_tokens == count_prompt("gpt-4o", fake.requests[-1].body, "responses") + 2000

    def test_cut_stream_is_incomplete_with_the_calls(self, fake, client):
        events = list(client.responses.create(model="gpt-4o", input=HELLO, tools=WEB_SEARCH, stream=True,
                                              max_output_tokens=2, **tool_calls(tool_calls=2)))
        assert events[-1].type == "response.incomplete"
        assert [item.type for item in events[-1].response.output] == ["web_search_call"] * 2 + ["message"]

    @pytest.mark.parametrize("search", [{}, None])
    def test_chat_search_model_cites_one_search(self, fake, client, search):
        options = {} if search is None else {"web_search_options": search}
        ask = {"model": "gpt-4o-search-preview", "messages": HELLO, **options, **tool_calls(tool_calls=3)}
        completion = client.chat.completions.create(**ask)
        with client.chat.completions.stream(**ask, stream_options={"include_usage": True}) as stream:
            streamed = stream.get_final_completion()
        prompt = count_prompt("gpt-4o-search-preview", fake.requests[-1].body, "chat")
        for answer in (completion, streamed):
            annotations = answer.choices[0].message.annotations or []
            if search is None:
                assert annotations == [] and answer.usage.prompt_tokens == prompt
                continue
            assert [a.type for a in annotations] == ["url_citation"]
            assert annotations[0].url_citation.url == "https://example.com/1"
            assert answer.usage.prompt_tokens == prompt + 1000
            assert answer.choices[0].message.content == "echo: hello there world"

    def test_chat_search_model_without_tool_calls_does_not_search(self, fake, client):
        completion = client.chat.completions.create(model="gpt-4o-search-preview", messages=HELLO,
                                                    web_search_options={})
        assert completion.choices[0].message.annotations == []
        assert completion.usage.prompt_tokens == count_prompt("gpt-4o-search-preview", fake.requests[-1].body, "chat")


def test_completions_json_and_stream(fake, client):
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say this")
    assert completion.choices[0].text == "echo: say this"
    assert completion.usage.prompt_tokens == count_prompt("gpt-3.5-turbo-instruct", {"prompt": "say this"}, "completions")
    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="say this", stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks[:-1]) == "echo: say this"
    assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens


def test_embeddings_base64_by_default_and_float(fake, client):
    default = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert fake.requests[-1].body["encoding_format"] == "base64"  # the SDK's choice; it decodes
    assert [len(d.embedding) for d in default.data] == [1536, 1536]
    floats = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"], encoding_format="float")
    assert floats.data[1].embedding == pytest.approx(default.data[1].embedding, abs=1e-6)
    short = client.embeddings.create(model="text-embedding-3-small", input="a", dimensions=8)
    assert len(short.data[0].embedding) == 8
    assert short.usage.prompt_tokens == count_prompt("text-embedding-3-small", {"input": "a"}, "embeddings")


def test_models_list(fake, client):
    assert "gpt-4o-mini" in [model.id for model in client.models.list()]


@pytest.mark.parametrize(
    "status, error",
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_status_raises_the_sdk_exception(fake, client, status, error):
    with pytest.raises(error) as raised:
        client.chat.completions.create(model="gpt-4o", messages=HELLO, extra_headers={"x-fake-status": str(status)})
    assert raised.value.status_code == status
    assert raised.value.body["message"].startswith("fake: HTTP")


def test_unknown_path_is_an_openai_404(fake, client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.get("/nope", cast_to=object)
    assert raised.value.body == {
        "message": "Invalid URL (GET /v1/nope)", "type": "invalid_request_error", "param": None, "code": None,
    }


def test_bad_control_is_a_400(fake, client):
    with pytest.raises(openai.BadRequestError, match="x-fake-chunks"):
        client.chat.completions.create(model="gpt-4o", messages=HELLO, extra_headers={"x-fake-chunks": "lots"})


def test_behaviour_applies_until_a_header_overrides_it(fake, client):
    fake.behaviour["reply"] = "set once"
    assert client.chat.completions.create(model="gpt-4o", messages=HELLO).choices[0].message.content == "set once"
    headers = {"x-fake-reply": "per request"}
    completion = client.chat.completions.create(model="gpt-4o", messages=HELLO, extra_headers=headers)
    assert completion.choices[0].message.content == "per request"


def test_requests_are_recorded(fake, client):
    client.chat.completions.create(model="gpt-4o", messages=HELLO, extra_headers={"x-trace": "t1"})
    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["x-trace"] == "t1"
    assert request.body == {"model": "gpt-4o", "messages": HELLO}
    assert request.timestamp == pytest.approx(time.time(), abs=5)


def test_fifty_concurrent_sdk_requests(fake, client):
    fake.behaviour["delay"] = 0.1  # so the requests overlap

    def ask(n):
        messages = [{"role": "user", "content": f"request {n}"}]
        return client.chat.completions.create(model="gpt-4o", messages=messages).choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(ask, range(50)))
    assert replies == [f"echo: request {n}" for n in range(50)]
    assert len(fake.requests) == 50


def test_plain_http_many_connections_and_keep_alive(tmp_path):
    with FakeOpenAI(plain=True, behaviour={"delay": 0.2}) as fake:
        assert fake.url.startswith("http://") and fake.ca_path is None
        body = json.dumps({"model": "gpt-4o", "messages": HELLO, "stream": True})

        def stream_then_json(_):
            connection = http.client.HTTPConnection(fake.host, fake.port, timeout=10)
            connection.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
            streamed = connection.getresponse()
            assert streamed.getheader("transfer-encoding") == "chunked"
            assert streamed.read().endswith(b"data: [DONE]\n\n")
            connection.request("GET", "/v1/models")  # same connection: it was kept alive
            assert connection.getresponse().status == 200
            connection.close()

        with concurrent.futures.ThreadPoolExecutor(120) as pool:
            list(pool.map(stream_then_json, range(120)))
        assert len(fake.requests) == 240


def test_stop_closes_listener_and_open_connections():
    fake = FakeOpenAI(plain=True).start()
    idle = socket.create_connection((fake.host, fake.port))
    idle.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
    idle.settimeout(5)
    assert idle.recv(100).startswith(b"HTTP/1.1 200")
    fake.stop()
    while idle.recv(65536):  # the rest of the response, then EOF: stop() closed it
        pass
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((fake.host, fake.port))


def test_runs_as_a_process(tmp_path):
    root = Path(__file__).parents[1]
    command = [sys.executable, "-m", "tests.fakes.openai_fake", "--port", "0", "--print-url", "--tls-dir", str(tmp_path)]
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) as process:
        try:
            url = process.stdout.readline().strip()
            assert process.stdout.readline().strip() == str(tmp_path / "ca.pem")
            with httpx2.Client(verify=ssl.create_default_context(cafile=tmp_path / "ca.pem")) as http:
                assert http.get(url + "/v1/models").json()["object"] == "list"
        finally:
            process.terminate()
