import json

import groq
import httpx
import pytest
from mitmproxy import http

from pouch.domain import errors
from pouch.domain.usage import Usage
from pouch.pricing.table import PriceTable
from pouch.providers import registry
from pouch.providers.base import FREE, METERED, UNMETERED
from pouch.providers.compatible import VENDORS, Compatible, parse_compatible

VENDOR = {provider.name: provider for provider in VENDORS}


@pytest.fixture
def configured():
    """Configured providers are global state: each test leaves none behind."""
    yield registry
    registry.replace_configured([])


# --- hosts, base paths, endpoints ----------------------------------------------------------


@pytest.mark.parametrize(
    "name, host, chat_path, env",
    [
        ("groq", "api.groq.com", "/openai/v1/chat/completions", "GROQ_API_KEY"),
        ("mistral", "api.mistral.ai", "/v1/chat/completions", "MISTRAL_API_KEY"),
        ("deepseek", "api.deepseek.com", "/chat/completions", "DEEPSEEK_API_KEY"),
        ("deepseek", "api.deepseek.com", "/v1/chat/completions", "DEEPSEEK_API_KEY"),
        ("xai", "api.x.ai", "/v1/chat/completions", "XAI_API_KEY"),
        ("openrouter", "openrouter.ai", "/api/v1/chat/completions", "OPENROUTER_API_KEY"),
        ("together", "api.together.xyz", "/v1/chat/completions", "TOGETHER_API_KEY"),
        ("together", "api.together.ai", "/v1/chat/completions", "TOGETHER_API_KEY"),
        ("fireworks", "api.fireworks.ai", "/inference/v1/chat/completions", "FIREWORKS_API_KEY"),
    ],
)
def test_vendor_host_and_base_path(name, host, chat_path, env):
    provider = registry.for_host(host)
    assert provider is registry.PROVIDERS[name] and provider.credential_env == (env,)
    assert provider.endpoint("POST", chat_path).name == "chat.completions"
    assert provider.endpoint("POST", chat_path.replace("/chat/completions", "/embeddings")).name == "embeddings"
    assert provider.endpoint("GET", chat_path.replace("/chat/completions", "/models")).metering == FREE
    assert provider.endpoint("POST", "/v2" + chat_path) is None


@pytest.mark.parametrize(
    "name, method, path, endpoint, metering",
    [
        ("groq", "POST", "/openai/v1/responses", "responses", METERED),
        ("groq", "POST", "/openai/v1/audio/transcriptions", "audio", UNMETERED),
        ("groq", "POST", "/v1/chat/completions", None, None),  # Groq's API lives under /openai/v1
        ("deepseek", "POST", "/completions", "completions", METERED),
        ("deepseek", "POST", "/beta/completions", "completions", METERED),  # FIM
        ("deepseek", "GET", "/v1/models", "models.list", FREE),
        ("deepseek", "GET", "/user/balance", None, None),
        ("xai", "POST", "/v1/responses", "responses", METERED),
        ("xai", "POST", "/v1/images/generations", "images", UNMETERED),
        ("openrouter", "POST", "/api/v1/completions", "completions", METERED),
        ("openrouter", "POST", "/v1/chat/completions", None, None),
        ("fireworks", "POST", "/v1/chat/completions", None, None),
        ("mistral", "POST", "/v1/fim/completions", None, None),  # not priced by pouch: refused
    ],
)
def test_endpoint(name, method, path, endpoint, metering):
    found = VENDOR[name].endpoint(method, path)
    assert (found.name, found.metering) == (endpoint, metering) if endpoint else found is None


def test_caps_go_in_max_tokens():
    chat = VENDOR["mistral"].endpoint("POST", "/v1/chat/completions")
    body = {"model": "mistral-small-latest"}
    VENDOR["mistral"].cap_output(chat, body, 300)
    assert body == {"model": "mistral-small-latest", "max_tokens": 300}
    responses = VENDOR["xai"].endpoint("POST", "/v1/responses")
    body = {"model": "grok-4.7"}
    VENDOR["xai"].cap_output(responses, body, 300)
    assert body == {"model": "grok-4.7", "max_output_tokens": 300}


def test_stream_usage_is_asked_for_except_from_mistral():
    for name, provider in VENDOR.items():
        body = {"model": "m", "stream": True}
        asked = provider.prepare_stream(provider.endpoint("POST", provider.base_path + "/chat/completions"), body)
        assert asked is (name != "mistral")  # Mistral refuses stream_options and sends usage anyway
        assert ("stream_options" in body) is asked


# --- usage, from what each vendor really sends ---------------------------------------------


def usage_of(name, body, path="/chat/completions"):
    provider = VENDOR[name]
    return provider.usage_from_body(provider.endpoint("POST", provider.base_path + path), body)


def test_groq_body():
    body = {
        "id": "chatcmpl-6f3",
        "object": "chat.completion",
        "model": "openai/gpt-oss-120b",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "4", "reasoning": "2+2"}, "finish_reason": "stop"}],
        "usage": {
            "queue_time": 0.0172, "prompt_tokens": 1203, "prompt_time": 0.0621, "completion_tokens": 418,
            "completion_time": 0.9, "total_tokens": 1621, "total_time": 0.96,
            "prompt_tokens_details": {"cached_tokens": 1024}, "completion_tokens_details": {"reasoning_tokens": 212},
        },
        "x_groq": {"id": "req_01k"},
    }  # fmt: skip
    usage = Usage(input_tokens=1203, cached_tokens=1024, output_tokens=418, reasoning_tokens=212)
    assert usage_of("groq", body) == (usage, "openai/gpt-oss-120b")


def test_deepseek_cache_hits_are_cached_tokens():
    reasoner = {
        "model": "deepseek-reasoner",
        "usage": {
            "prompt_tokens": 1500, "completion_tokens": 950, "total_tokens": 2450,
            "prompt_tokens_details": {"cached_tokens": 1280}, "completion_tokens_details": {"reasoning_tokens": 700},
            "prompt_cache_hit_tokens": 1280, "prompt_cache_miss_tokens": 220,
        },
    }  # fmt: skip
    assert usage_of("deepseek", reasoner)[0] == Usage(input_tokens=1500, cached_tokens=1280, output_tokens=950, reasoning_tokens=700)
    # Older replies carry only the hit/miss pair.
    chat = {"model": "deepseek-chat", "usage": {"prompt_tokens": 64, "completion_tokens": 12, "total_tokens": 76,
                                                "prompt_cache_hit_tokens": 40, "prompt_cache_miss_tokens": 24}}  # fmt: skip
    assert usage_of("deepseek", chat)[0] == Usage(input_tokens=64, cached_tokens=40, output_tokens=12)


def test_xai_reasoning_is_added_to_the_output():
    # xAI's own example: 32 + 9 + 94 = 135, reasoning outside completion_tokens.
    body = {
        "model": "grok-3-mini",
        "usage": {
            "prompt_tokens": 32, "completion_tokens": 9, "total_tokens": 135,
            "prompt_tokens_details": {"text_tokens": 32, "audio_tokens": 0, "image_tokens": 0, "cached_tokens": 6},
            "completion_tokens_details": {"reasoning_tokens": 94, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0},
            "num_sources_used": 0,
        },
    }  # fmt: skip
    assert usage_of("xai", body)[0] == Usage(input_tokens=32, cached_tokens=6, output_tokens=103, reasoning_tokens=94)
    without_total = {"usage": {k: v for k, v in body["usage"].items() if k != "total_tokens"}}
    assert usage_of("xai", without_total)[0].output_tokens == 103  # xAI's documented habit


def test_xai_responses_where_the_total_says_reasoning_is_inside():
    body = {"model": "grok-4.7", "usage": {"input_tokens": 125, "output_tokens": 48, "total_tokens": 173,
                                           "input_tokens_details": {"cached_tokens": 98},
                                           "output_tokens_details": {"reasoning_tokens": 30}}}  # fmt: skip
    assert usage_of("xai", body, "/responses")[0] == Usage(input_tokens=125, cached_tokens=98, output_tokens=48, reasoning_tokens=30)


def test_openrouter_cost_is_ignored_and_cache_writes_kept():
    body = {
        "model": "anthropic/claude-4.5-sonnet-20250929",
        "usage": {
            "prompt_tokens": 10339, "completion_tokens": 60, "total_tokens": 10399,
            "cost": 0.0331, "is_byok": False,
            "prompt_tokens_details": {"cached_tokens": 8192, "cache_write_tokens": 2048, "audio_tokens": 0},
            "cost_details": {"upstream_inference_cost": None},
            "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": 0},
        },
    }  # fmt: skip
    usage = Usage(input_tokens=10339, cached_tokens=8192, cache_write_5m_tokens=2048, output_tokens=60)
    assert usage_of("openrouter", body) == (usage, "anthropic/claude-4.5-sonnet-20250929")


@pytest.mark.parametrize("name", ["mistral", "together", "fireworks"])
def test_plain_usage(name):
    body = {"model": "m", "usage": {"prompt_tokens": 12, "total_tokens": 312, "completion_tokens": 300}}
    assert usage_of(name, body)[0] == Usage(input_tokens=12, output_tokens=300)


def test_garbage_usage():
    for body in ({}, {"usage": None}, {"usage": "x"}, {"usage": {"prompt_tokens": "3"}}, {"x_groq": "x"}):
        assert usage_of("groq", body)[0] is None


def sse(*chunks):
    return [f"data: {json.dumps(c, separators=(',', ':'))}\n\n".encode() for c in chunks]


GROQ_HEAD = {"id": "chatcmpl-6f3", "object": "chat.completion.chunk", "created": 1761000000,
             "model": "llama-3.3-70b-versatile", "system_fingerprint": "fp_3f"}  # fmt: skip
GROQ_USAGE = {"queue_time": 0.05, "prompt_tokens": 23, "prompt_time": 0.006, "completion_tokens": 19,
              "completion_time": 0.022, "total_tokens": 42, "total_time": 0.028}  # fmt: skip


def groq_chunk(delta, finish_reason=None, **extra):
    return GROQ_HEAD | {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]} | extra


def test_groq_stream_usage_in_the_final_chunks_x_groq():
    events = sse(
        groq_chunk({"role": "assistant", "content": ""}, x_groq={"id": "req_01k"}),
        groq_chunk({"content": "Hello"}),
        groq_chunk({"content": " there"}),
        groq_chunk({}, "stop", x_groq={"id": "req_01k", "usage": GROQ_USAGE}),
    )
    stream = b"".join(events) + b"data: [DONE]\n\n"
    tracker = VENDOR["groq"].stream_tracker(VENDOR["groq"].endpoint("POST", "/openai/v1/chat/completions"), False)
    assert tracker.feed(stream) + tracker.feed(b"") == stream
    assert tracker.usage() == Usage(input_tokens=23, output_tokens=19)
    assert tracker.model() == "llama-3.3-70b-versatile"
    assert tracker.output_text() == "Hello there"


def test_groq_stream_with_the_usage_chunk_pouch_asked_for():
    events = sse(
        groq_chunk({"role": "assistant", "content": ""}, usage=None),
        groq_chunk({"content": "Hi"}, usage=None),
        groq_chunk({}, "stop", usage=None, x_groq={"id": "req_01k", "usage": GROQ_USAGE}),
        GROQ_HEAD | {"choices": [], "usage": GROQ_USAGE},
    )
    tracker = VENDOR["groq"].stream_tracker(VENDOR["groq"].endpoint("POST", "/openai/v1/chat/completions"), True)
    sent = b"".join(tracker.feed(e) for e in events) + tracker.feed(b"data: [DONE]\n\n") + tracker.feed(b"")
    assert sent == b"".join(events[:3]) + b"data: [DONE]\n\n"  # only the usage-only chunk is removed
    assert tracker.usage() == Usage(input_tokens=23, output_tokens=19)


def test_mistral_stream_usage_in_the_last_chunk():
    head = {"id": "cmpl-e5", "object": "chat.completion.chunk", "created": 1761000000, "model": "mistral-small-latest"}
    stream = b"".join(sse(
        head | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        head | {"choices": [{"index": 0, "delta": {"content": "Bonjour"}, "finish_reason": None}]},
        head | {"choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "total_tokens": 13, "completion_tokens": 3}},
    )) + b"data: [DONE]\n\n"  # fmt: skip
    tracker = VENDOR["mistral"].stream_tracker(VENDOR["mistral"].endpoint("POST", "/v1/chat/completions"), False)
    assert tracker.feed(stream) + tracker.feed(b"") == stream
    assert tracker.usage() == Usage(input_tokens=10, output_tokens=3)


def test_xai_stream_reasoning():
    head = {"id": "x1", "object": "chat.completion.chunk", "created": 1761000000, "model": "grok-4.7"}
    usage = {"prompt_tokens": 279, "completion_tokens": 6, "total_tokens": 374,
             "prompt_tokens_details": {"cached_tokens": 256}, "completion_tokens_details": {"reasoning_tokens": 89}}  # fmt: skip
    stream = b"".join(sse(
        head | {"choices": [{"index": 0, "delta": {"content": "Paris", "role": "assistant"}}]},
        head | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        head | {"choices": [], "usage": usage},
    ))  # fmt: skip
    tracker = VENDOR["xai"].stream_tracker(VENDOR["xai"].endpoint("POST", "/v1/chat/completions"), True)
    tracker.feed(stream)
    assert tracker.usage() == Usage(input_tokens=279, cached_tokens=256, output_tokens=95, reasoning_tokens=89)


# --- self-hosted servers from configuration ------------------------------------------------


@pytest.mark.parametrize(
    "spec, name, hosts, base_path, env",
    [
        ("vllm=gpu-box:8000/v1", "vllm", ("gpu-box:8000",), "/v1", ()),
        ("ollama=127.0.0.1:11434", "ollama", ("127.0.0.1:11434",), "/v1", ()),
        ("llamacpp=localhost:8080/,LLAMA_API_KEY", "llamacpp", ("localhost:8080",), "", ("LLAMA_API_KEY",)),
        # without a port: the default ports only, never every port of the host
        (" VLLM = GPU-Box.lan/api/v1/ , VLLM_KEY ", "vllm", ("gpu-box.lan:80", "gpu-box.lan:443"), "/api/v1",
         ("VLLM_KEY",)),
        ("tgi_2=tgi,", "tgi_2", ("tgi:80", "tgi:443"), "/v1", ()),
    ],
)
def test_parse_compatible(spec, name, hosts, base_path, env):
    provider = parse_compatible(spec)
    assert isinstance(provider, Compatible)
    assert (provider.name, provider.hosts, provider.base_path, provider.credential_env) == (name, hosts, base_path, env)
    assert provider.endpoint("POST", base_path + "/chat/completions").name == "chat.completions"


@pytest.mark.parametrize(
    "spec, complaint",
    [
        ("", "NAME=HOST"),
        ("vllm", "NAME=HOST"),
        ("vllm=", "NAME=HOST"),
        ("=gpu-box", "the name"),
        ("v llm=gpu-box", "the name"),
        ("9vllm=gpu-box", "the name"),
        ("vllm=gpu-box:99999", "out of range"),
        ("vllm=gpu-box:port", "bad compatible server"),
        ("vllm=gpu-box:0", "NAME=HOST"),
        ("vllm=user:pw@gpu-box", "NAME=HOST"),
        ("vllm=[::1]:8000", "NAME=HOST"),
        ("vllm=gpu_box", "NAME=HOST"),
        ("vllm=gpu-box/v1?x=1", "NAME=HOST"),
        ("vllm=http://gpu-box:8000/v1", "NAME=HOST"),
        ("vllm=gpu-box,VLLM-KEY", "environment variable"),
    ],
)
def test_parse_compatible_refuses(spec, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_compatible(spec)


def test_registered_servers_own_only_the_ports_they_name(configured):
    vllm, web = parse_compatible("vllm=gpu-box:8000/v1"), parse_compatible("web=gpu-box")
    configured.replace_configured([vllm, web])
    assert configured.for_host("gpu-box", 8000) is vllm
    assert configured.for_host("GPU-Box.", 443) is web and configured.for_host("gpu-box", 80) is web
    assert configured.for_host("gpu-box", 11434) is None  # another service of the host: not an LLM host
    assert configured.for_host("gpu-box") is None
    assert configured.named_host(vllm, "gpu-box", 8000) and configured.named_host(web, "GPU-BOX", 443)
    assert not configured.named_host(vllm, "gpu-box", 8001) and not configured.named_host(vllm, "gpu-box")
    assert not configured.named_host(web, "gpu-box", 8000)
    configured.unregister("vllm")
    assert configured.for_host("gpu-box", 8000) is None and "vllm" not in configured.PROVIDERS


def test_a_configured_server_must_name_its_ports(configured):
    with pytest.raises(ValueError, match="names no port"):
        configured.register(Compatible("bare", ("gpu-box",), (), "/v1"))
    with pytest.raises(ValueError, match="gpu-box:443 already belongs to provider 'a'"):
        configured.replace_configured([parse_compatible("a=gpu-box"), parse_compatible("b=gpu-box:443")])
    assert set(configured.PROVIDERS) == {*configured._BUILT_IN}


@pytest.mark.parametrize(
    "spec",
    [
        "openai=gpu-box",  # a built-in name
        "mine=api.openai.com",  # a built-in host...
        "mine=api.openai.com:8443",  # ...on any port
        "mine=myres.openai.azure.com",  # a built-in's subdomain
    ],
)
def test_register_refuses_built_ins(configured, spec):
    with pytest.raises(ValueError, match="already"):
        configured.register(parse_compatible(spec))
    assert set(configured.PROVIDERS) == {*configured._BUILT_IN}


def test_replace_configured_is_all_or_nothing(configured):
    configured.replace_configured([parse_compatible("vllm=gpu-box:8000")])
    clash = [parse_compatible("a=box-a"), parse_compatible("b=gpu-box:8000")]  # b takes vllm's host
    with pytest.raises(ValueError, match="gpu-box:8000 already belongs to provider 'vllm'"):
        configured.replace_configured([parse_compatible("vllm=gpu-box:8000"), *clash])
    assert configured.for_host("gpu-box", 8000).name == "vllm" and configured.for_host("box-a", 443) is None
    with pytest.raises(KeyError):
        configured.unregister("openai")


def test_a_keyless_server_gets_no_credential():
    req = http.Request.make("POST", "http://gpu-box:8000/v1/chat/completions", headers=[(b"Authorization", b"Bearer pk-1")])
    provider = parse_compatible("vllm=gpu-box:8000")
    assert provider.credential_env == () and provider.credential(req.headers, req.query) == ["pk-1"]
    provider.authorize(req.headers, req.query, "")
    assert "authorization" not in req.headers


# --- prices for what clients send each vendor ----------------------------------------------


@pytest.mark.parametrize(
    "provider, model, priced_as",
    [
        ("groq", "openai/gpt-oss-120b", ("groq", "openai/gpt-oss-120b")),
        ("groq", "qwen/qwen3.8-27b", ("groq", "qwen/qwen3.8-27b")),
        ("mistral", "mistral-large-latest", ("mistral", "mistral-large-latest")),
        ("mistral", "codestral-latest", ("mistral", "codestral-latest")),
        ("mistral", "mistral-embed", ("mistral", "mistral-embed")),
        ("deepseek", "deepseek-flash", ("deepseek", "deepseek-v4-flash")),  # the current name, an alias
        ("deepseek", "deepseek-v4-pro", ("deepseek", "deepseek-v4-pro")),
        ("xai", "grok-4.7", ("xai", "grok-4.7")),
        ("xai", "grok-4.5-latest", ("xai", "grok-4.5")),
        ("xai", "grok-4.20-reasoning", ("xai", "grok-4.20-reasoning")),
        # OpenRouter passes prices through: a vendor's own name finds the vendor's own price.
        ("openrouter", "anthropic/claude-sonnet-4.5", ("anthropic", "claude-sonnet-4-5")),
        ("openrouter", "anthropic/claude-haiku-4.5", ("anthropic", "claude-haiku-4-5")),
        ("openrouter", "google/gemini-2.5-pro", ("gemini", "gemini-2.5-pro")),
        ("openrouter", "openai/gpt-4o", ("openai", "gpt-4o")),
        ("together", "meta-models/Muse-Glimmer-30B", ("together", "meta-models/Muse-Glimmer-30B")),
        ("together", "openai/gpt-oss-120b", ("together", "openai/gpt-oss-120b")),  # not Groq's, not stripped
        ("together", "deepseek-ai/DeepSeek-V3", ("together", "deepseek-ai/DeepSeek-V3")),
        ("fireworks", "accounts/fireworks/models/llama-v3p3-70b-instruct",
         ("fireworks", "accounts/fireworks/models/llama-v3p3-70b-instruct")),
        ("fireworks", "accounts/fireworks/models/deepseek-v3p2", ("fireworks", "accounts/fireworks/models/deepseek-v3p2")),
        ("azure", "gpt-4o-2024-11-20", ("openai", "gpt-4o")),  # Azure is priced as OpenAI
    ],
)  # fmt: skip
def test_popular_models_are_priced(provider, model, priced_as):
    price = PriceTable.load().resolve(model, provider)
    assert (price.provider, price.model) == priced_as


def test_openrouter_names_are_not_another_vendors():
    table = PriceTable.load()
    sonnet = table.resolve("anthropic/claude-sonnet-4.5", "openrouter")
    assert (sonnet.input, sonnet.output) == (table.resolve("claude-sonnet-4-5", "anthropic").input,
                                             table.resolve("claude-sonnet-4-5", "anthropic").output)  # fmt: skip
    assert table.resolve("openrouter/anthropic/claude-sonnet-4.5", "openrouter") is None
    assert table.resolve("anthropic/claude-sonnet-4.5-extended", "openrouter") is None


# --- the groq SDK against the Groq provider's mock -----------------------------------------

MOCK_USAGE = Usage(input_tokens=40, cached_tokens=32, output_tokens=12, reasoning_tokens=5)


def groq_client(seen, reply=None, **options):
    provider = VENDOR["groq"]

    def handler(request):
        req = http.Request.make(request.method, str(request.url), request.content, list(request.headers.raw))
        endpoint = provider.endpoint(req.method, req.path)
        body = json.loads(req.content)
        call = provider.read_call(endpoint, req.path, body)
        seen.append((req, endpoint, call))
        answer = reply or provider.mock(endpoint, call, body, MOCK_USAGE, "Hi from Groq")
        return httpx.Response(answer.status, headers=answer.headers, content=answer.body)

    transport = httpx.MockTransport(handler)
    return groq.Groq(api_key="pk-test", http_client=httpx.Client(transport=transport), **({"max_retries": 0} | options))


def test_groq_sdk_chat():
    seen = []
    completion = groq_client(seen).chat.completions.create(
        model="openai/gpt-oss-120b", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=100
    )
    req, endpoint, call = seen[0]
    assert (req.host, req.path, req.headers["authorization"]) == ("api.groq.com", "/openai/v1/chat/completions", "Bearer pk-test")
    assert VENDOR["groq"].credential(req.headers, req.query) == ["pk-test"]
    assert (endpoint.name, call.model, call.max_output) == ("chat.completions", "openai/gpt-oss-120b", 100)
    assert completion.choices[0].message.content == "Hi from Groq"
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (40, 12, 52)
    assert (usage.prompt_tokens_details.cached_tokens, usage.completion_tokens_details.reasoning_tokens) == (32, 5)


def test_groq_sdk_stream_through_pouchs_tracker():
    """The groq SDK asks for no stream usage: pouch asks, reads it, and removes what it asked for."""
    provider, trackers = VENDOR["groq"], []

    def handler(request):
        req = http.Request.make(request.method, str(request.url), request.content, list(request.headers.raw))
        endpoint, body = provider.endpoint(req.method, req.path), json.loads(req.content)
        call = provider.read_call(endpoint, req.path, body)
        injected = provider.prepare_stream(endpoint, body)
        tracker = provider.stream_tracker(endpoint, injected)
        trackers.append(tracker)
        reply = provider.mock(endpoint, call, body, MOCK_USAGE, "Hi from Groq")
        return httpx.Response(200, headers=reply.headers, content=tracker.feed(reply.body) + tracker.feed(b""))

    client = groq.Groq(api_key="pk-test", http_client=httpx.Client(transport=httpx.MockTransport(handler)), max_retries=0)
    chunks = list(client.chat.completions.create(model="openai/gpt-oss-20b", messages=[], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hi from Groq"
    assert all(c.choices and c.usage is None for c in chunks)
    assert trackers[0].usage() == MOCK_USAGE and trackers[0].model() == "openai/gpt-oss-20b"


@pytest.mark.parametrize(
    "error, exception",
    [
        (errors.InvalidKey("unknown pouch key"), groq.AuthenticationError),
        (errors.ModelNotAllowed("key 'alice' may not use openai/gpt-oss-120b"), groq.PermissionDeniedError),
        (errors.BudgetExhausted("budget of key 'alice' exhausted"), groq.RateLimitError),
        (errors.ModelNotPriced("no price for llama-9"), groq.BadRequestError),
    ],
)
def test_groq_sdk_raises_its_own_exceptions(error, exception):
    seen = []
    with pytest.raises(exception) as caught:
        groq_client(seen, VENDOR["groq"].error(error), max_retries=2).chat.completions.create(model="m", messages=[])
    assert error.message in str(caught.value)
    if isinstance(error, errors.BudgetExhausted):
        assert len(seen) == 1  # the groq SDK honours x-should-retry: false as well
