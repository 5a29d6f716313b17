"""OpenAI (api.openai.com) as a pouch provider.

OpenAI-compatible hosts (Groq, Together, a local vLLM, ...) reuse this class with their own
name, hosts, credential variables and base path, as constructor arguments or class
attributes of a subclass.
"""

from __future__ import annotations

import json
import re

from pouch.domain.errors import ModelNotFound, PouchError
from pouch.domain.usage import Usage
from pouch.providers import json_body
from pouch.providers.base import FREE, METERED, UNMETERED, WEBSOCKET, Call, Endpoint, Reply, StreamTracker
from pouch.providers.local import Local
from pouch.providers.openai import answers, mock, request
from pouch.providers.openai.apis import APIS
from pouch.providers.openai.streams import ChatStreamTracker, ResponsesStreamTracker
from pouch.providers.openai.tokens import TOKENIZERS
from pouch.providers.openai.usage import usage_field
from pouch.providers.values import bearer_tokens, shown

# Paths below the base path ("/v1"); "{id}" stands for one path segment.
_ROUTES = (
    ("POST", "/chat/completions", Endpoint("chat.completions", METERED, "chat")),
    ("POST", "/responses", Endpoint("responses", METERED, "responses")),
    # The Responses API over WebSocket (a GET with Upgrade: websocket): each response.create
    # message is a Responses request (pouch.providers.openai.websocket).
    ("GET", "/responses", Endpoint("responses.websocket", WEBSOCKET, "responses")),
    ("POST", "/completions", Endpoint("completions", METERED, "completions")),
    ("POST", "/embeddings", Endpoint("embeddings", METERED, "embeddings")),
    ("POST", "/moderations", Endpoint("moderations", FREE)),
    ("GET", "/models", Endpoint("models.list", FREE)),
    ("GET", "/models/{id}", Endpoint("models.retrieve", FREE)),
    ("POST", "/responses/input_tokens", Endpoint("responses.input_tokens", FREE)),
    ("GET", "/responses/{id}", Endpoint("responses.retrieve", FREE)),
    ("DELETE", "/responses/{id}", Endpoint("responses.delete", FREE)),
    ("GET", "/responses/{id}/input_items", Endpoint("responses.input_items", FREE)),
    # Cancelling a background response stops generation; what was generated is billed on the
    # original request, not on the cancel.
    ("POST", "/responses/{id}/cancel", Endpoint("responses.cancel", FREE)),
    ("GET", "/chat/completions", Endpoint("chat.completions.list", FREE)),
    ("GET", "/chat/completions/{id}", Endpoint("chat.completions.retrieve", FREE)),
    ("DELETE", "/chat/completions/{id}", Endpoint("chat.completions.delete", FREE)),
    ("GET", "/chat/completions/{id}/messages", Endpoint("chat.completions.messages", FREE)),
)
_EXACT_ROUTES = {(method, path): endpoint for method, path, endpoint in _ROUTES if "{id}" not in path}
_ID_ROUTES = tuple(
    (method, re.compile(re.escape(path).replace(r"\{id\}", "[^/]+") + "$"), endpoint)
    for method, path, endpoint in _ROUTES
    if "{id}" in path
)
# Paid APIs pouch cannot price, by first path segment, whatever the method.
_UNMETERED = {
    family: Endpoint(family, UNMETERED)
    for family in (
        "images", "audio", "batches", "fine_tuning", "realtime", "files", "uploads",
        "vector_stores", "assistants", "threads", "videos", "containers", "evals",
    )
}  # fmt: skip

_CAP_FIELDS = {"chat": "max_completion_tokens", "responses": "max_output_tokens", "completions": "max_tokens"}
_COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # what OpenAI generates when a completions request sets none
_CREDENTIAL_HEADERS = ("authorization", "api-key", "x-api-key")
# Service tiers billed at the price table's (standard) prices or below; "auto" is the project's
# default tier, which the operator sets.
_PRICED_TIERS = (None, "auto", "default", "flex")


class OpenAI:
    name = "openai"
    hosts: tuple[str, ...] = ("api.openai.com",)
    credential_env: tuple[str, ...] = ("OPENAI_API_KEY",)
    base_path = "/v1"
    apis = APIS
    tokenizers = TOKENIZERS

    def __init__(
        self,
        name: str | None = None,
        hosts: tuple[str, ...] | None = None,
        credential_env: tuple[str, ...] | None = None,
        base_path: str | None = None,
    ):
        if name is not None:
            self.name = name
        if hosts is not None:
            self.hosts = tuple(hosts)
        if credential_env is not None:
            self.credential_env = tuple(credential_env)
        if base_path is not None:
            self.base_path = base_path.rstrip("/")

    def endpoint(self, method: str, path: str) -> Endpoint | None:
        path = path.split("?", 1)[0]
        if not path.startswith(self.base_path + "/"):
            return None
        path = path[len(self.base_path) :]
        method = method.upper()
        if found := _EXACT_ROUTES.get((method, path)):
            return found
        for route_method, pattern, endpoint in _ID_ROUTES:
            if route_method == method and pattern.match(path):
                return endpoint
        return _UNMETERED.get(path[1:].split("/", 1)[0])

    def credential(self, headers, query) -> list[str]:
        """Bearer tokens, Azure-style ``api-key`` and ``x-api-key``, each distinct value once."""
        found = bearer_tokens(headers)
        for header in _CREDENTIAL_HEADERS[1:]:
            found.extend(value.strip() for value in headers.get_all(header) if value.strip())
        return list(dict.fromkeys(found))

    def read_call(self, endpoint: Endpoint, path: str, body: dict) -> Call:
        call = self._read_call(endpoint, body)
        call.end_user = body.get("safety_identifier") or body.get("user")
        return call

    def _read_call(self, endpoint: Endpoint, body: dict) -> Call:
        model = json_body.model_of(body)
        api = endpoint.api
        if api == "embeddings":
            return Call(model=model, stream=False, max_output=0)
        stream = json_body.stream_of(body)
        if api == "chat":
            caps = [c for c in (request.cap(body, field) for field in ("max_completion_tokens", "max_tokens")) if c]
            # Both set: OpenAI refuses the request, but compatible servers honour one or the
            # other, so the larger bounds what may be generated.
            return Call(model, stream, max(caps) if caps else None, request.choices(body, "n"),
                        unmetered_tools=request.chat_unmetered_tools(body) + self.unpriced_fields(body))
        if api == "responses":
            stored = any(body.get(field) for field in ("previous_response_id", "conversation", "prompt"))
            server, unmetered = request.responses_tools(body)
            return Call(model, stream, request.cap(body, "max_output_tokens"), hidden_input=stored,
                        server_tools=server, unmetered_tools=unmetered + self.unpriced_fields(body))
        if api == "completions":
            cap = request.cap(body, "max_tokens")
            # Every best_of candidate is generated and billed, not only the n returned.
            choices = max(request.choices(body, "n"), request.choices(body, "best_of"))
            return Call(model, stream, _COMPLETIONS_DEFAULT_MAX_TOKENS if cap is None else cap, choices)
        raise ValueError(f"{endpoint.name} is not a metered {self.name} endpoint")

    def unpriced_fields(self, body: dict) -> tuple[str, ...]:
        """Request settings that make the provider bill above the price table (a priority
        service tier): pouch cannot price them, so they are refused unless allowed."""
        tier = body.get("service_tier")
        return () if tier in _PRICED_TIERS else (f"service_tier {shown(tier)}",)

    def cap_output(self, endpoint: Endpoint, body: dict, max_tokens: int) -> None:
        if field := _CAP_FIELDS.get(endpoint.api):
            if endpoint.api == "chat" and "max_tokens" in body:
                field = "max_tokens"  # the one the client uses: OpenAI refuses both at once
            body[field] = max_tokens

    def bound_tools(self, endpoint: Endpoint, body: dict, max_calls: int) -> None:
        if endpoint.api == "responses" and body.get("max_tool_calls") is None:
            body["max_tool_calls"] = max_calls

    def prepare_stream(self, endpoint: Endpoint, body: dict) -> bool:
        """Chat and completions streams carry usage only when asked; a Responses stream always
        ends with it."""
        if endpoint.api not in ("chat", "completions") or body.get("stream") is not True:
            return False
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return False
        # Anything but an object here would be refused upstream; an object with usage is better.
        options = options if isinstance(options, dict) else {}
        body["stream_options"] = {**options, "include_usage": True}
        return True

    def usage_from_body(self, endpoint: Endpoint, body: dict) -> tuple[Usage | None, str | None]:
        if not isinstance(body, dict):
            return None, None
        model = body.get("model")
        if not isinstance(model, str) or not model:
            model = None
        return self.read_usage(endpoint.api, body), model

    def read_usage(self, api: str, message: dict) -> Usage | None:
        """Usage from a response body, a stream chunk or a Responses object; compatible vendors
        that report usage elsewhere or count differently override this one method."""
        return usage_field(api, message)

    def stream_tracker(self, endpoint: Endpoint, injected_usage: bool) -> StreamTracker:
        if endpoint.api == "responses":
            return ResponsesStreamTracker(self.read_usage)
        if endpoint.api in ("chat", "completions"):
            return ChatStreamTracker(endpoint.api, injected_usage, self.read_usage)
        raise ValueError(f"{endpoint.name} does not stream")

    def error(self, error: PouchError) -> Reply:
        """OpenAI's error shape; ``type`` is what OpenAI itself sends for the same status."""
        headers = {"content-type": "application/json"}
        if error.code == "insufficient_quota":
            kind = "insufficient_quota"
            headers["x-should-retry"] = "false"  # the official SDKs would otherwise retry a 429
        elif error.status == 429:
            kind = "requests"
        elif error.status >= 500:
            kind = "server_error"
        else:
            kind = "invalid_request_error"
        body = {"error": {"message": error.message, "type": kind, "param": None, "code": error.code}}
        return Reply(error.status, json.dumps(body).encode(), {**headers, **error.headers})

    def authorize(self, headers, query, secret: str) -> None:
        """An empty ``secret`` only removes the client's credentials: for a self-hosted server
        that needs no key (the pouch key must still not reach it)."""
        for header in _CREDENTIAL_HEADERS:
            headers.pop(header, None)
        if secret:
            headers["authorization"] = f"Bearer {secret}"

    def mock(self, endpoint: Endpoint, call: Call, body: dict, usage: Usage, text: str) -> Reply:
        return mock.mock(endpoint.api, call, body, usage, text)

    def answer(self, endpoint: Endpoint, local: Local) -> Reply | None:
        return answers.answer(endpoint, local, self.name, lambda message: self.error(ModelNotFound(message)))
