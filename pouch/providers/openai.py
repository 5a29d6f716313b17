"""OpenAI (api.openai.com) as a pouch provider.

OpenAI-compatible hosts (Groq, Together, a local vLLM, ...) reuse this class with their own
name, hosts, credential variables and base path, as constructor arguments or class
attributes of a subclass.
"""

from __future__ import annotations

import json
import re

from pouch.domain.errors import BadRequest, PouchError
from pouch.domain.usage import Usage
from pouch.providers import json_body, openai_mock
from pouch.providers.base import FREE, METERED, UNMETERED, Call, Endpoint, Reply, StreamTracker, ToolBound
from pouch.providers.openai_usage import ChatStreamTracker, ResponsesStreamTracker, usage_field

# Paths below the base path ("/v1"); "{id}" stands for one path segment.
_ROUTES = (
    ("POST", "/chat/completions", Endpoint("chat.completions", METERED, "chat")),
    ("POST", "/responses", Endpoint("responses", METERED, "responses")),
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
_MAX_CAP = 10_000_000
_MAX_CHOICES = 128
_CREDENTIAL_HEADERS = ("authorization", "api-key", "x-api-key")
_MAX_TOOL_CALLS = 1_000
# Responses tools that run on the client (the next request carries their result): no fee, no round.
_CLIENT_TOOLS = frozenset({"function", "custom", "computer_use_preview", "computer_use", "computer",
                           "local_shell", "apply_patch"})
# Service tiers billed at the price table's (standard) prices or below; "auto" is the project's
# default tier, which the operator sets.
_PRICED_TIERS = (None, "auto", "default", "flex")
# Responses tools run by OpenAI, by price-table name; ``max_tool_calls`` bounds all of them together.
# Longest prefix first: "web_search_preview_2025_03_11" is a preview, "web_search_2025_08_26" is not.
_SERVER_TOOLS = (("web_search_preview", "web_search_preview"), ("web_search", "web_search"),
                 ("file_search", "file_search"), ("mcp", "mcp"))


class OpenAI:
    name = "openai"
    hosts: tuple[str, ...] = ("api.openai.com",)
    credential_env: tuple[str, ...] = ("OPENAI_API_KEY",)
    base_path = "/v1"

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
        found = []
        for value in headers.get_all("authorization"):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                found.append(token.strip())
        for header in _CREDENTIAL_HEADERS[1:]:
            found.extend(value.strip() for value in headers.get_all(header) if value.strip())
        return list(dict.fromkeys(found))

    def read_call(self, endpoint: Endpoint, path: str, body: dict) -> Call:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        json_body.check_lowercase_names(body)
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            raise BadRequest("'model' must be a non-empty string naming the model")
        api = endpoint.api
        if api == "embeddings":
            return Call(model=model, stream=False, max_output=0)
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise BadRequest("'stream' must be true or false")
        if api == "chat":
            caps = [c for c in (_cap(body, "max_completion_tokens"), _cap(body, "max_tokens")) if c is not None]
            # Both set: OpenAI refuses the request, but compatible servers honour one or the
            # other, so the larger bounds what may be generated.
            return Call(model, bool(stream), max(caps) if caps else None, _choices(body, "n"),
                        unmetered_tools=_chat_unmetered_tools(body) + self.unpriced_fields(body))
        if api == "responses":
            stored = any(body.get(field) for field in ("previous_response_id", "conversation", "prompt"))
            server, unmetered = _responses_tools(body)
            return Call(model, bool(stream), _cap(body, "max_output_tokens"), hidden_input=stored,
                        server_tools=server, unmetered_tools=unmetered + self.unpriced_fields(body))
        if api == "completions":
            cap = _cap(body, "max_tokens")
            # Every best_of candidate is generated and billed, not only the n returned.
            choices = max(_choices(body, "n"), _choices(body, "best_of"))
            return Call(model, bool(stream), _COMPLETIONS_DEFAULT_MAX_TOKENS if cap is None else cap, choices)
        raise ValueError(f"{endpoint.name} is not a metered {self.name} endpoint")

    def unpriced_fields(self, body: dict) -> tuple[str, ...]:
        """Request settings that make the provider bill above the price table (a priority
        service tier): pouch cannot price them, so they are refused unless allowed."""
        tier = body.get("service_tier")
        return () if tier in _PRICED_TIERS else (f"service_tier {_shown(tier)}",)

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
        return openai_mock.mock(endpoint.api, call, body, usage, text)


def _cap(body: dict, field: str) -> int | None:
    """An output cap: absent or null is None; anything but a positive int is refused."""
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_CAP:
        raise BadRequest(f"'{field}' must be a positive integer (at most {_MAX_CAP:,}), got {_shown(value)}")
    return value


def _tool_types(body: dict, field: str = "tools") -> list[str]:
    tools = body.get(field)
    if tools is None:
        return []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise BadRequest(f"'{field}' must be an array of objects")
    types = [tool.get("type", "function") for tool in tools]
    if not all(isinstance(kind, str) for kind in types):
        raise BadRequest(f"each of '{field}' must have a string 'type'")
    return types


def _chat_unmetered_tools(body: dict) -> tuple[str, ...]:
    """Chat tools run on the client; anything else (a search model's web search) is billed apart.
    Search models (gpt-4o-search-preview, gpt-5-search-api) bill a search on every request."""
    unmetered = [kind for kind in _tool_types(body) if kind not in ("function", "custom")]
    if body.get("web_search_options") is not None:
        unmetered.append("web_search_options")
    if "search" in body["model"].lower():
        unmetered.append(f"the web search of {body['model']}")
    return tuple(dict.fromkeys(unmetered))


def _responses_tools(body: dict) -> tuple[tuple[ToolBound, ...], tuple[str, ...]]:
    """(server tools and their shared bound, tools pouch cannot bound or price)."""
    server, unmetered = [], []
    kinds = _tool_types(body)
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") not in (None, "function", "custom", "allowed_tools", "mcp"):
        kinds.append(choice["type"])  # a hosted tool named only as the choice still runs
    for kind in kinds:
        if kind in _CLIENT_TOOLS or (kind == "shell" and _local_shell(body)):
            continue
        name = next((name for prefix, name in _SERVER_TOOLS if kind.startswith(prefix)), None)
        (server if name else unmetered).append(name or kind)
    if body.get("prompt"):
        # A stored prompt can carry tools pouch does not see (code interpreter containers,
        # image generation): it cannot bound what they bill.
        unmetered.append("stored prompt")
    bound = _positive(body, "max_tool_calls", _MAX_TOOL_CALLS)
    tools = (ToolBound(tuple(dict.fromkeys(server)), bound),) if server else ()
    return tools, tuple(dict.fromkeys(unmetered))


def _local_shell(body: dict) -> bool:
    """The shell tool runs on the client unless it asks OpenAI for a hosted container."""
    for tool in body.get("tools") or ():
        if tool.get("type") == "shell":
            environment = tool.get("environment")
            if environment is not None and not (isinstance(environment, dict) and environment.get("type") == "local"):
                return False
    return True


def _positive(body: dict, field: str, most: int) -> int | None:
    """A bound on calls: 1 or more (0 is not sent on: a server might read it as no bound)."""
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise BadRequest(f"'{field}' must be an integer from 1 to {most:,} (to allow no call, send no such "
                         f"tool), got {_shown(value)}")
    return value


def _choices(body: dict, field: str) -> int:
    value = body.get(field)
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_CHOICES:
        raise BadRequest(f"'{field}' must be an integer from 1 to {_MAX_CHOICES}, got {_shown(value)}")
    return value


def _shown(value: object) -> str:
    """A client's value, short enough to quote back in an error message."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
