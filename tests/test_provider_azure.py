import json

import httpx2
import openai
import pytest
from mitmproxy import http

from pouch.domain import errors
from pouch.domain.usage import Usage
from pouch.providers import registry
from pouch.providers.azure import AzureOpenAI, parse_deployment, parse_deployments
from pouch.providers.base import FREE, METERED, UNMETERED, Call

DEPLOYMENT = "/openai/deployments/prod-chat"
VERSION = "?api-version=2024-10-21"


def azure(**deployments):
    return AzureOpenAI(parse_deployments(f"{d}={m}" for d, m in deployments.items()))


PROVIDER = azure(**{"prod-chat": "gpt-4o", "embedder": "text-embedding-3-small"})
CHAT = PROVIDER.endpoint("POST", f"{DEPLOYMENT}/chat/completions{VERSION}")


# --- option specs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, parsed",
    [
        ("prod-chat=gpt-4o", ("prod-chat", "gpt-4o")),
        (" Prod_Chat.2 = gpt-4o-2024-11-20 ", ("Prod_Chat.2", "gpt-4o-2024-11-20")),
        ("x1=ft:gpt-4o-mini:acme::abc", ("x1", "ft:gpt-4o-mini:acme::abc")),
    ],
)
def test_parse_deployment(spec, parsed):
    assert parse_deployment(spec) == parsed


@pytest.mark.parametrize(
    "spec", ["", "prod-chat", "prod-chat=", "=gpt-4o", "prod chat=gpt-4o", "prod/chat=gpt-4o", "-x=gpt-4o",
             "prod=gpt 4o", "prod=a=b", "x" * 65 + "=gpt-4o"],
)  # fmt: skip
def test_parse_deployment_refuses(spec):
    with pytest.raises(ValueError, match="DEPLOYMENT=MODEL"):
        parse_deployment(spec)


def test_parse_deployments():
    assert parse_deployments(["Prod=gpt-4o", "mini=gpt-4o-mini", "PROD=gpt-4o"]) == {"prod": "gpt-4o", "mini": "gpt-4o-mini"}
    with pytest.raises(ValueError, match="two models"):
        parse_deployments(["prod=gpt-4o", "Prod=gpt-5"])


# --- endpoints -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, name, metering",
    [
        ("POST", f"{DEPLOYMENT}/chat/completions{VERSION}", "chat.completions", METERED),
        ("POST", f"{DEPLOYMENT}/completions{VERSION}", "completions", METERED),
        ("POST", f"/openai/deployments/embedder/embeddings{VERSION}", "embeddings", METERED),
        ("POST", f"/openai/deployments/my%20dep/chat/completions{VERSION}", "chat.completions", METERED),
        ("POST", f"{DEPLOYMENT}/audio/transcriptions{VERSION}", "audio", UNMETERED),
        ("POST", f"{DEPLOYMENT}/images/generations{VERSION}", "images", UNMETERED),
        ("POST", "/openai/v1/chat/completions", "chat.completions", METERED),
        ("POST", "/openai/v1/responses", "responses", METERED),
        ("POST", "/openai/v1/embeddings?api-version=preview", "embeddings", METERED),
        ("GET", "/openai/v1/models", "models.list", FREE),
        ("GET", "/openai/v1/responses/resp_1", "responses.retrieve", FREE),
        ("POST", f"/openai/responses{VERSION}", "responses", METERED),
        ("POST", f"/openai/files{VERSION}", "files", UNMETERED),
    ],
)
def test_endpoint(method, path, name, metering):
    endpoint = PROVIDER.endpoint(method, path)
    assert (endpoint.name, endpoint.metering) == (name, metering)


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/chat/completions"),  # OpenAI's own path: not Azure's
        ("POST", "/chat/completions"),
        ("GET", f"/openai/deployments{VERSION}"),
        ("POST", f"/openai/deployments/prod-chat{VERSION}"),
        ("POST", f"/openai/deployments//chat/completions{VERSION}"),
        ("POST", f"{DEPLOYMENT}/extensions/chat/completions{VERSION}"),
        ("POST", "/openai/v1/unknown"),
    ],
)
def test_unknown_endpoint(method, path):
    assert PROVIDER.endpoint(method, path) is None


def test_registry():
    provider = registry.PROVIDERS["azure"]
    assert isinstance(provider, AzureOpenAI) and provider.credential_env == ("AZURE_OPENAI_API_KEY",)
    assert registry.for_host("myres.openai.azure.com") is provider
    assert registry.for_host("MyRes.OpenAI.Azure.com.") is provider
    assert registry.for_host("myres.cognitiveservices.azure.com") is provider
    assert registry.for_host("openai.azure.com") is None
    assert registry.for_host("myres.openai.azure.com.evil.example") is None
    assert registry.for_host("myres-openai.azure.com") is None


# --- reading a call ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, body, expected",
    [
        # The deployment decides; a body model is ignored by Azure, so by pouch too.
        (f"{DEPLOYMENT}/chat/completions{VERSION}", {"messages": []}, Call("gpt-4o", False, None)),
        (f"{DEPLOYMENT}/chat/completions{VERSION}", {"model": "gpt-4o-mini", "stream": True}, Call("gpt-4o", True, None)),
        (f"/openai/deployments/PROD-CHAT/chat/completions{VERSION}", {"max_tokens": 50}, Call("gpt-4o", False, 50)),
        (f"/openai/deployments/gpt-4.1-mini/chat/completions{VERSION}", {}, Call("gpt-4.1-mini", False, None)),
        (f"/openai/deployments/embedder/embeddings{VERSION}", {"input": "hi"}, Call("text-embedding-3-small", False, 0)),
        (f"{DEPLOYMENT}/completions{VERSION}", {"prompt": "x"}, Call("gpt-4o", False, 16)),
        # Without a deployment in the path, the body's model names it.
        ("/openai/v1/chat/completions", {"model": "prod-chat", "n": 2}, Call("gpt-4o", False, None, 2)),
        ("/openai/v1/responses", {"model": "gpt-5-mini", "max_output_tokens": 9}, Call("gpt-5-mini", False, 9)),
        (f"/openai/responses{VERSION}", {"model": "prod-chat", "stream": True}, Call("gpt-4o", True, None)),
    ],
)
def test_read_call(path, body, expected):
    before = json.loads(json.dumps(body))
    assert PROVIDER.read_call(PROVIDER.endpoint("POST", path), path, body) == expected
    assert body == before  # what goes upstream is the client's body


@pytest.mark.parametrize("body", [{}, {"model": ""}, {"model": 4}, [], None])
def test_read_call_refuses_v1_without_model(body):
    with pytest.raises(errors.BadRequest):
        PROVIDER.read_call(PROVIDER.endpoint("POST", "/openai/v1/chat/completions"), "/openai/v1/chat/completions", body)


def test_deployments_can_be_replaced():
    provider = AzureOpenAI()
    path = f"{DEPLOYMENT}/chat/completions{VERSION}"
    assert provider.read_call(CHAT, path, {}).model == "prod-chat"
    provider.deployments = parse_deployments(["prod-chat=gpt-5"])
    assert provider.read_call(CHAT, path, {}).model == "gpt-5"


# --- credentials ---------------------------------------------------------------------------


def request(headers):
    url = f"https://myres.openai.azure.com{DEPLOYMENT}/chat/completions{VERSION}"
    return http.Request.make("POST", url, headers=[(k.encode(), v.encode()) for k, v in headers])


@pytest.mark.parametrize(
    "headers, expected",
    [
        ([("api-key", "pk-1")], ["pk-1"]),
        ([("Authorization", "Bearer pk-entra")], ["pk-entra"]),  # where Entra ID tokens go
        ([("api-key", "pk-1"), ("Authorization", "Bearer pk-1")], ["pk-1"]),
        ([("api-key", "pk-1"), ("Authorization", "Bearer pk-2")], ["pk-2", "pk-1"]),
        ([], []),
    ],
)
def test_credential(headers, expected):
    req = request(headers)
    assert PROVIDER.credential(req.headers, req.query) == expected


def test_authorize_sends_the_key_as_api_key_only():
    req = request([("api-key", "pk-1"), ("Authorization", "Bearer pk-1"), ("X-Api-Key", "pk-1"), ("x-ms-client", "c")])
    PROVIDER.authorize(req.headers, req.query, "azure-secret")
    assert req.headers.get_all("api-key") == ["azure-secret"]
    assert "authorization" not in req.headers and "x-api-key" not in req.headers
    assert req.headers["x-ms-client"] == "c"
    assert req.query["api-version"] == "2024-10-21"


# --- usage: OpenAI's, and the model Azure reports ------------------------------------------

AZURE_BODY = {
    "id": "chatcmpl-B9",
    "object": "chat.completion",
    "created": 1761000000,
    "model": "gpt-4o-2024-11-20",
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False}}}],
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 2048,
        "completion_tokens": 64,
        "total_tokens": 2112,
        "prompt_tokens_details": {"cached_tokens": 1536, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
}


def test_usage_from_body_reports_the_real_model():
    usage = Usage(input_tokens=2048, cached_tokens=1536, output_tokens=64)
    assert PROVIDER.usage_from_body(CHAT, AZURE_BODY) == (usage, "gpt-4o-2024-11-20")


def sse(*chunks):
    return b"".join(f"data: {json.dumps(c, separators=(',', ':'))}\n\n".encode() for c in chunks)


def test_stream_model_and_usage_after_azures_content_filter_chunk():
    head = {"id": "chatcmpl-B9", "object": "chat.completion.chunk", "created": 1761000000, "model": "gpt-4o-2024-11-20"}
    usage = {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22}
    stream = sse(
        # Azure opens with the prompt's filter results: no choices, an empty model.
        {"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": []},
        head | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        head | {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
        head | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        head | {"choices": [], "usage": usage},
    ) + b"data: [DONE]\n\n"
    tracker = PROVIDER.stream_tracker(CHAT, injected_usage=True)
    sent = tracker.feed(stream) + tracker.feed(b"")
    assert b'"usage"' not in sent and b"prompt_filter_results" in sent
    assert tracker.usage() == Usage(input_tokens=20, output_tokens=2)
    assert tracker.model() == "gpt-4o-2024-11-20"
    assert tracker.output_text() == "Hi"


# --- the openai SDK's Azure clients against pouch ------------------------------------------


def azure_sdk(handler, **options):
    options = {"api_key": "pk-test", "max_retries": 0} | options
    transport = httpx2.MockTransport(handler)
    return openai.AzureOpenAI(
        azure_endpoint="https://myres.openai.azure.com",
        api_version="2024-10-21",
        http_client=httpx2.Client(transport=transport),
        **options,
    )


def mocking(seen, provider=PROVIDER, usage=Usage(input_tokens=12, cached_tokens=4, output_tokens=5)):
    """An upstream that is pouch's Azure provider: reads the request as the chain would, mocks a reply."""

    def handler(request):
        req = http.Request.make(request.method, str(request.url), request.content, list(request.headers.raw))
        endpoint = provider.endpoint(req.method, req.path)
        body = json.loads(req.content)
        call = provider.read_call(endpoint, req.path, body)
        seen.append((req, endpoint, call, provider.credential(req.headers, req.query)))
        reply = provider.mock(endpoint, call, body, usage, "Hello")
        return httpx2.Response(reply.status, headers=reply.headers, content=reply.body)

    return handler


def test_sdk_chat_on_a_deployment():
    seen = []
    completion = azure_sdk(mocking(seen)).chat.completions.create(model="prod-chat", messages=[{"role": "user", "content": "hi"}])
    req, endpoint, call, credentials = seen[0]
    assert req.path == f"{DEPLOYMENT}/chat/completions{VERSION}"
    assert req.headers["api-key"] == "pk-test" and "authorization" not in req.headers
    assert credentials == ["pk-test"]
    assert (endpoint.name, call.model) == ("chat.completions", "gpt-4o")
    assert completion.choices[0].message.content == "Hello"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 5)


def test_sdk_stream_on_a_fixed_deployment_with_an_entra_token():
    seen = []
    client = azure_sdk(mocking(seen), api_key=None, azure_ad_token="pk-entra", azure_deployment="prod-chat")
    chunks = list(client.chat.completions.create(model="ignored", messages=[], stream=True, stream_options={"include_usage": True}))
    req, endpoint, call, credentials = seen[0]
    assert req.path == f"{DEPLOYMENT}/chat/completions{VERSION}"
    assert req.headers["authorization"] == "Bearer pk-entra" and credentials == ["pk-entra"]
    assert call == Call("gpt-4o", True, None)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 4


def test_sdk_embeddings():
    seen = []
    result = azure_sdk(mocking(seen)).embeddings.create(model="embedder", input="hello")
    req, endpoint, call, _ = seen[0]
    assert req.path == f"/openai/deployments/embedder/embeddings{VERSION}"
    assert (endpoint.name, call.model) == ("embeddings", "text-embedding-3-small")
    assert result.usage.prompt_tokens == 12


def test_sdk_v1_surface_with_the_plain_client():
    seen = []
    transport = httpx2.MockTransport(mocking(seen))
    client = openai.OpenAI(base_url="https://myres.openai.azure.com/openai/v1/", api_key="pk-test",
                           http_client=httpx2.Client(transport=transport), max_retries=0)  # fmt: skip
    response = client.responses.create(model="prod-chat", input="hi")
    req, endpoint, call, credentials = seen[0]
    assert (req.path, req.headers["authorization"], credentials) == ("/openai/v1/responses", "Bearer pk-test", ["pk-test"])
    assert (endpoint.name, call.model) == ("responses", "gpt-4o")
    assert response.output_text == "Hello"


@pytest.mark.parametrize(
    "error, exception",
    [
        (errors.InvalidKey("unknown pouch key"), openai.AuthenticationError),
        (errors.ModelNotAllowed("key 'alice' may not use gpt-5"), openai.PermissionDeniedError),
        (errors.BudgetExhausted("budget of key 'alice' exhausted"), openai.RateLimitError),
        (errors.ModelNotPriced("no price for gpt-x"), openai.BadRequestError),
        (errors.StoreUnavailable("store unavailable"), openai.InternalServerError),
    ],
)
def test_errors_raise_the_sdk_exception(error, exception):
    reply = PROVIDER.error(error)
    calls = []

    def handler(request):
        calls.append(request)
        return httpx2.Response(reply.status, headers=reply.headers, content=reply.body)

    with pytest.raises(exception) as caught:
        azure_sdk(handler, max_retries=2).chat.completions.create(model="prod-chat", messages=[])
    assert (caught.value.code, error.message in caught.value.message) == (error.code, True)
    if isinstance(error, errors.BudgetExhausted):
        assert len(calls) == 1  # x-should-retry: false holds for the Azure client too
