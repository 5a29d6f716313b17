"""Google's Gemini API (generativelanguage.googleapis.com) as a pouch provider.

Two APIs share the host: Gemini's own (``/v1beta/models/{model}:generateContent``, what the
google-genai SDKs speak) and its OpenAI-compatible one under ``/v1beta/openai/`` (what the
openai SDKs speak). The second is served by an OpenAI provider inside this one; every
method that is handed an Endpoint tells the two apart by its ``api``: Gemini's own
endpoints are the only ones whose api is "gemini".
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs

from pouch.domain.errors import BadRequest, ModelNotFound, PouchError
from pouch.domain.usage import Usage
from pouch.providers.base import FREE, METERED, UNMETERED, Call, Endpoint, Reply, StreamTracker, ToolBound
from pouch.providers.gemini import answers, mock
from pouch.providers.gemini.apis import APIS
from pouch.providers.gemini.usage import GeminiStreamTracker, usage_from_body
from pouch.providers.local import Local
from pouch.providers.openai import OpenAI
from pouch.providers.openai import answers as openai_answers
from pouch.providers.values import bearer_tokens, shown

GENERATE = Endpoint("generateContent", METERED, "gemini")
STREAM = Endpoint("streamGenerateContent", METERED, "gemini")
# Equal to STREAM (the same endpoint, named the same in usage rows) but a distinct object:
# without ``alt=sse`` Gemini streams a JSON array, and only the mock needs to know which.
STREAM_ARRAY = Endpoint("streamGenerateContent", METERED, "gemini")
# Embeddings are input only. The api is "gemini" so the prompt is counted by pouch's Gemini
# counter; read_call lends it the embedded contents (see _lend_contents).
EMBED = Endpoint("embedContent", METERED, "gemini")
BATCH_EMBED = Endpoint("batchEmbedContents", METERED, "gemini")

_MODEL_METHODS = {
    "generateContent": GENERATE,
    "embedContent": EMBED,
    "batchEmbedContents": BATCH_EMBED,
    "countTokens": Endpoint("countTokens", FREE),
    # Paid, but billed in ways pouch cannot price: images and video, the half-price Batch API.
    "predict": Endpoint("predict", UNMETERED),
    "predictLongRunning": Endpoint("predictLongRunning", UNMETERED),
    "batchGenerateContent": Endpoint("batches", UNMETERED),
    "asyncBatchEmbedContent": Endpoint("batches", UNMETERED),
}
# {version}/models/{model}:{method} or tunedModels/{model}:{method}
_MODEL_CALL = re.compile(r"/v1(?:beta|alpha)?/(models|tunedModels)/([^/:]+):(\w+)$")
_MODEL_GET = re.compile(r"/v1(?:beta|alpha)?/models(/[^/:]+)?$")
# Paid resources pouch cannot price (storage, tuning, batches, indexing), whatever the method.
_FAMILY = re.compile(r"(?:/upload)?/v1(?:beta|alpha)?/([A-Za-z]+)(?:[/:?]|$)")
_UNMETERED_FAMILIES = {
    family: Endpoint(family, UNMETERED)
    for family in ("cachedContents", "files", "tunedModels", "batches", "fileSearchStores", "corpora", "operations")
}
_OPERATIONS = re.compile(r"/v1(?:beta|alpha)?/models/[^/:]+/operations(/|$)")  # polling a video job

_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}  # fmt: skip
_MAX_CAP = 10_000_000
_MAX_CANDIDATES = 128
# Tools Google runs, by the tool field (either spelling) -> (price-table name, the most calls one
# request makes: URL context fetches its URLs in one retrieval; code execution runs its code at
# most 5 times, https://ai.google.dev/gemini-api/docs/code-execution). No field of the request
# bounds them, so these are Google's own bounds.
_SERVER_TOOLS = {"urlContext": ("url_context", 1), "url_context": ("url_context", 1),
                 "codeExecution": ("code_execution", 5), "code_execution": ("code_execution", 5)}
_CLIENT_TOOLS = frozenset({"functionDeclarations", "function_declarations"})


class Gemini:
    name = "gemini"
    hosts = ("generativelanguage.googleapis.com",)
    credential_env = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    apis = (*APIS, *OpenAI.apis)  # its own, and its OpenAI-compatible API's
    tokenizers = ()  # Gemini's tokenizer is not public: pouch.tokens's default estimate

    def __init__(self):
        self._openai = OpenAI(
            name=self.name, hosts=self.hosts, credential_env=self.credential_env, base_path="/v1beta/openai"
        )

    def endpoint(self, method: str, path: str) -> Endpoint | None:
        path, _, query = path.partition("?")
        if path.startswith(self._openai.base_path + "/"):
            return self._openai.endpoint(method, path)
        method = method.upper()
        if match := _MODEL_CALL.match(path):
            collection, _, name = match.groups()
            if method != "POST":
                return None
            if name == "streamGenerateContent":
                return STREAM if "sse" in parse_qs(query).get("alt", ()) else STREAM_ARRAY
            found = _MODEL_METHODS.get(name)
            return _UNMETERED_FAMILIES["tunedModels"] if found is None and collection == "tunedModels" else found
        if match := _MODEL_GET.match(path):
            if method != "GET":
                return None
            return Endpoint("models.get", FREE) if match.group(1) else Endpoint("models.list", FREE)
        if _OPERATIONS.match(path):
            return _UNMETERED_FAMILIES["operations"]
        if match := _FAMILY.match(path):
            return _UNMETERED_FAMILIES.get(match.group(1))
        return None

    def credential(self, headers, query) -> list[str]:
        """``x-goog-api-key`` (the SDKs), ``?key=`` (REST examples), Bearer (the
        OpenAI-compatible API), each distinct value once."""
        found = [value.strip() for value in headers.get_all("x-goog-api-key")]
        found += [value.strip() for value in query.get_all("key")]
        found += bearer_tokens(headers)
        return list(dict.fromkeys(value for value in found if value))

    def read_call(self, endpoint: Endpoint, path: str, body: dict) -> Call:
        if endpoint.api != "gemini":
            return _google_extension(self._openai.read_call(endpoint, path, body), body)
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        match = _MODEL_CALL.match(path.partition("?")[0])
        if match is None:
            raise ValueError(f"{path} does not name a model")
        # "models/gemini-2.5-flash" is priced as "gemini-2.5-flash"; a tuned model keeps its
        # collection, so an operator prices "tunedModels/..." on purpose.
        model = match.group(2) if match.group(1) == "models" else f"{match.group(1)}/{match.group(2)}"
        if endpoint in (EMBED, BATCH_EMBED):
            _lend_contents(endpoint, body)
            return Call(model, stream=False, max_output=0)
        config = _generation_config(body) or {}
        cap = _number(config, "maxOutputTokens", "max_output_tokens", _MAX_CAP)
        candidates = _number(config, "candidateCount", "candidate_count", _MAX_CANDIDATES)
        server, unmetered = _tools(body)
        cached = bool(body.get("cachedContent") or body.get("cached_content"))
        if cached:  # a cached content may hold tools (search grounding) the request does not show
            unmetered += ("cachedContent",)
        tier = body.get("serviceTier", body.get("service_tier"))
        if tier not in (None, "standard", "flex"):
            unmetered += (f"serviceTier {shown(tier)}",)
        return Call(model, endpoint.name == STREAM.name, cap, 1 if candidates is None else candidates,
                    hidden_input=cached, server_tools=server, unmetered_tools=unmetered)

    def cap_output(self, endpoint: Endpoint, body: dict, max_tokens: int) -> None:
        if endpoint.api != "gemini":
            return self._openai.cap_output(endpoint, body, max_tokens)
        if endpoint in (EMBED, BATCH_EMBED):
            body.pop("contents", None)  # the body goes upstream again: without what read_call lent
            return
        config = _generation_config(body)
        if config is None:  # absent or null: an object under the spelling the client used
            config = body["generation_config" if "generation_config" in body else "generationConfig"] = {}
        config["max_output_tokens" if "max_output_tokens" in config else "maxOutputTokens"] = max_tokens

    def bound_tools(self, endpoint: Endpoint, body: dict, max_calls: int) -> None:
        if endpoint.api != "gemini":  # Google's own tools have Google's own bounds
            self._openai.bound_tools(endpoint, body, max_calls)

    def prepare_stream(self, endpoint: Endpoint, body: dict) -> bool:
        if endpoint.api != "gemini":
            return self._openai.prepare_stream(endpoint, body)
        return False  # every Gemini stream reports usage

    def usage_from_body(self, endpoint: Endpoint, body: dict | list) -> tuple[Usage | None, str | None]:
        """Gemini's embeddings may carry no usageMetadata: then (None, None), and the chain
        charges the reservation (the prompt as counted, with the non-OpenAI safety factor)."""
        if endpoint.api != "gemini":
            return self._openai.usage_from_body(endpoint, body)
        return usage_from_body(body)

    def stream_tracker(self, endpoint: Endpoint, injected_usage: bool) -> StreamTracker:
        if endpoint.api != "gemini":
            return self._openai.stream_tracker(endpoint, injected_usage)
        return GeminiStreamTracker()

    def error(self, error: PouchError) -> Reply:
        """Google's error shape, with pouch's reason in an ErrorInfo detail.

        The chain does not say which API a refused request used, so the OpenAI-compatible
        API gets this shape too, as it does from Google itself; the openai SDKs still raise
        the exception class that matches the status.
        """
        status = _STATUS.get(error.status) or ("INTERNAL" if error.status >= 500 else "INVALID_ARGUMENT")
        detail = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": error.code, "domain": "pouch"}
        body = {"error": {"code": error.status, "message": error.message, "status": status, "details": [detail]}}
        headers = {"content-type": "application/json; charset=UTF-8"}
        return Reply(error.status, json.dumps(body).encode(), {**headers, **error.headers})

    def authorize(self, headers, query, secret: str) -> None:
        """The real key goes where the client put its own: Google's own API refuses a
        Bearer API key (it takes Bearer for OAuth tokens), and its OpenAI-compatible API is
        documented with Bearer, so a client that works against Google chose right."""
        bearer = bool(bearer_tokens(headers))
        headers.pop("x-goog-api-key", None)
        query.pop("key", None)
        if bearer:
            self._openai.authorize(headers, query, secret)
        else:
            headers.pop("authorization", None)
            headers["x-goog-api-key"] = secret

    def mock(self, endpoint: Endpoint, call: Call, body: dict, usage: Usage, text: str) -> Reply:
        if endpoint.api != "gemini":
            return self._openai.mock(endpoint, call, body, usage, text)
        if endpoint == EMBED:
            return mock.embed(body, usage)
        if endpoint == BATCH_EMBED:
            return mock.batch_embed(body, usage)
        if endpoint.name == STREAM.name:
            return mock.stream(call, usage, text, sse=endpoint is not STREAM_ARRAY)
        return mock.generate(call, usage, text)

    def answer(self, endpoint: Endpoint, local: Local) -> Reply | None:
        if local.path.startswith(self._openai.base_path + "/"):  # its OpenAI-compatible API
            return openai_answers.answer(endpoint, local, "google", self._not_found, id_prefix="models/")
        return answers.answer(endpoint, local, self._not_found)

    def _not_found(self, message: str) -> Reply:
        return self.error(ModelNotFound(message))


# What Google's OpenAI-compatible API takes in its "google" extension object (the openai SDKs'
# extra_body): a cached content is input the body does not show; thinking settings change nothing.
_KNOWN_EXTENSION = frozenset({"cached_content", "thinking_config"})


def _google_extension(call: Call, body: dict) -> Call:
    """Read the extension where Google reads it: top level, or inside ``extra_body`` (the
    spelling Google documents for clients that send it literally)."""
    extra = body.get("extra_body")
    if extra is not None and not isinstance(extra, dict):
        raise BadRequest("'extra_body' must be an object")
    for where, extension in (("google", body.get("google")), ("extra_body.google", (extra or {}).get("google"))):
        if extension is None:
            continue
        if not isinstance(extension, dict):
            raise BadRequest(f"'{where}' must be an object")
        if extension.get("cached_content"):  # hidden input, which may also hold tools
            call.hidden_input = True
            call.unmetered_tools += (f"{where}.cached_content",)
        call.unmetered_tools += tuple(f"{where}.{field}" for field in extension if field not in _KNOWN_EXTENSION)
    if extra:
        call.unmetered_tools += tuple(f"extra_body.{field}" for field in extra if field != "google")
    call.unmetered_tools = tuple(dict.fromkeys(call.unmetered_tools))
    return call


def _tools(body: dict) -> tuple[tuple[ToolBound, ...], tuple[str, ...]]:
    """(tools Google runs, with its bound on their calls; tools pouch cannot bound or price:
    Google Search grounding is billed per search query, and a request cannot limit how many
    queries the model makes)."""
    tools = body.get("tools")
    if tools is None:
        return (), ()
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise BadRequest("'tools' must be an array of objects")
    server, unmetered = {}, []
    for tool in tools:
        for field in tool:
            if field in _SERVER_TOOLS:
                name, calls = _SERVER_TOOLS[field]
                server[name] = ToolBound((name,), calls)
            elif field not in _CLIENT_TOOLS:
                unmetered.append(field)
    return tuple(server.values()), tuple(dict.fromkeys(unmetered))


def _lend_contents(endpoint: Endpoint, body: dict) -> None:
    """Give an embeddings body the ``contents`` list a generateContent body has, so pouch's
    Gemini counter counts its prompt. The body is sent upstream as the client wrote it
    unless a link rewrites it, and the only rewrite, cap_output, takes the loan back."""
    if "contents" in body:
        raise BadRequest(f"{endpoint.name} takes 'content', not 'contents'")
    if endpoint == EMBED:
        contents = [body.get("content")]
    else:
        requests = body.get("requests")
        if not isinstance(requests, list) or not all(isinstance(r, dict) for r in requests):
            raise BadRequest("'requests' must be an array of objects, each with a 'content'")
        contents = [request.get("content") for request in requests]
    if not all(isinstance(content, dict) for content in contents):
        raise BadRequest(f"each content of {endpoint.name} must be an object with 'parts'")
    body["contents"] = contents


def _generation_config(body: dict) -> dict | None:
    """The request's generationConfig, in either of the spellings Google accepts (both at
    once would leave pouch guessing which cap Google applies, so that is refused)."""
    if "generationConfig" in body and "generation_config" in body:
        raise BadRequest("set 'generationConfig' once, not also as 'generation_config'")
    config = body.get("generationConfig", body.get("generation_config"))
    if config is not None and not isinstance(config, dict):
        raise BadRequest(f"'generationConfig' must be an object, got {shown(config)}")
    return config


def _number(config: dict, camel: str, snake: str, most: int) -> int | None:
    """A positive int setting of generationConfig; absent or null is None."""
    if camel in config and snake in config:
        raise BadRequest(f"set 'generationConfig.{camel}' once, not also as '{snake}'")
    value = config.get(camel, config.get(snake))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise BadRequest(f"'generationConfig.{camel}' must be an integer from 1 to {most:,}, got {shown(value)}")
    return value
