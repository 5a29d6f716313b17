"""Anthropic (api.anthropic.com, the Messages API) as a pouch provider."""

from __future__ import annotations

import json

from pouch.domain.errors import BadRequest, ModelNotFound, PouchError
from pouch.domain.usage import Usage
from pouch.providers import json_body
from pouch.providers.anthropic import answers, mock
from pouch.providers.anthropic.apis import APIS
from pouch.providers.anthropic.side_paths import SIDE_PATHS
from pouch.providers.anthropic.tokens import TOKENIZERS
from pouch.providers.anthropic.usage import MessagesStreamTracker, usage_from_dict
from pouch.providers.base import FREE, METERED, UNMETERED, Call, Endpoint, Reply, StreamTracker, ToolBound
from pouch.providers.local import Local
from pouch.providers.values import bearer_tokens, shown

MESSAGES = Endpoint("messages", METERED, "anthropic_messages")
# Counting tokens is free at Anthropic: it passes with the real key, unmetered.
COUNT_TOKENS = Endpoint("messages.count_tokens", FREE)
MODELS_LIST, MODEL = Endpoint("models.list", FREE), Endpoint("models.retrieve", FREE)
_EXACT_ROUTES = {
    ("POST", "/v1/messages"): MESSAGES,
    ("POST", "/v1/messages/count_tokens"): COUNT_TOKENS,
    ("GET", "/v1/models"): MODELS_LIST,
}
_MODEL_PREFIX = "/v1/models/"
# Paid APIs pouch cannot price yet (batches are billed later, at a discount), whatever the method.
_UNMETERED = (
    ("/v1/messages/batches", Endpoint("messages.batches", UNMETERED)),
    ("/v1/files", Endpoint("files", UNMETERED)),
    ("/v1/skills", Endpoint("skills", UNMETERED)),
)

_MAX_CAP = 10_000_000
_MAX_USES = 1_000
# Server tools Anthropic runs and bills per use, by type prefix -> price-table name; each has its
# own ``max_uses``. Tools of other types run on the client (custom tools have no type).
_SERVER_TOOLS = (("web_search_", "web_search"), ("web_fetch_", "web_fetch"))
_CLIENT_TOOLS = ("custom", "bash_", "text_editor_", "computer_", "memory_")
_API_VERSION = "2023-06-01"  # the API refuses a request without anthropic-version
# Anthropic's error type for each status pouch answers with; other 4xx are request errors.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",  # a key's budget, too: the SDK raises RateLimitError for both
}


class Anthropic:
    name = "anthropic"
    hosts: tuple[str, ...] = ("api.anthropic.com",)
    credential_env: tuple[str, ...] = ("ANTHROPIC_API_KEY",)
    apis = APIS
    tokenizers = TOKENIZERS
    side_paths = SIDE_PATHS  # what Claude Code calls besides the Messages API, and what pouch does with it

    def endpoint(self, method: str, path: str) -> Endpoint | None:
        path = path.split("?", 1)[0]
        method = method.upper()
        if found := _EXACT_ROUTES.get((method, path)):
            return found
        if method == "GET" and path.startswith(_MODEL_PREFIX):
            model_id = path[len(_MODEL_PREFIX) :]
            return MODEL if model_id and "/" not in model_id else None
        for prefix, endpoint in _UNMETERED:
            if path == prefix or path.startswith(prefix + "/"):
                return endpoint
        return None

    def credential(self, headers, query) -> list[str]:
        """``x-api-key`` (an API key) and ``Authorization: Bearer`` (``auth_token``, and the
        API key in newer SDKs), each distinct value once."""
        found = [value.strip() for value in headers.get_all("x-api-key") if value.strip()]
        return list(dict.fromkeys(found + bearer_tokens(headers)))

    def read_call(self, endpoint: Endpoint, path: str, body: dict) -> Call:
        if endpoint.api != MESSAGES.api:
            raise ValueError(f"{endpoint.name} is not a metered {self.name} endpoint")
        model, stream = json_body.model_of(body), json_body.stream_of(body)
        cap = body.get("max_tokens")
        if cap is None:
            raise BadRequest("max_tokens is required by the Messages API")
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= _MAX_CAP:
            raise BadRequest(f"'max_tokens' must be a positive integer (at most {_MAX_CAP:,}), got {shown(cap)}")
        server, unmetered = _tools(body)
        end_user, session = _user_id(body.get("metadata"))
        return Call(model, stream, cap, server_tools=server, unmetered_tools=unmetered + _unpriced_fields(body),
                    end_user=end_user, client_session=session)

    def cap_output(self, endpoint: Endpoint, body: dict, max_tokens: int) -> None:
        body["max_tokens"] = max_tokens

    def bound_tools(self, endpoint: Endpoint, body: dict, max_calls: int) -> None:
        for tool in body.get("tools") or ():
            if _server_tool(tool) and tool.get("max_uses") is None:
                tool["max_uses"] = max_calls

    def prepare_stream(self, endpoint: Endpoint, body: dict) -> bool:
        return False  # a Messages stream always reports usage

    def usage_from_body(self, endpoint: Endpoint, body: dict) -> tuple[Usage | None, str | None]:
        if not isinstance(body, dict):
            return None, None
        model = body.get("model")
        return usage_from_dict(body.get("usage")), model if isinstance(model, str) and model else None

    def stream_tracker(self, endpoint: Endpoint, injected_usage: bool) -> StreamTracker:
        if endpoint.api != MESSAGES.api:
            raise ValueError(f"{endpoint.name} does not stream")
        return MessagesStreamTracker()

    def error(self, error: PouchError) -> Reply:
        """Anthropic's error shape, with no ``details``: the SDK types those by their
        ``error_code``, and would mistype pouch's codes as one of Anthropic's."""
        kind = "api_error" if error.status >= 500 else _ERROR_TYPES.get(error.status, "invalid_request_error")
        request_id = mock.request_id()
        headers = {"content-type": "application/json", "request-id": request_id}
        if error.code == "insufficient_quota":
            headers["x-should-retry"] = "false"  # the SDK would otherwise retry a 429
        body = {
            "type": "error",
            "error": {"type": kind, "message": error.message},
            "request_id": request_id,
        }
        return Reply(error.status, json.dumps(body).encode(), {**headers, **error.headers})

    def authorize(self, headers, query, secret: str) -> None:
        headers.pop("authorization", None)
        headers.pop("x-api-key", None)
        if secret:
            headers["x-api-key"] = secret
        if "anthropic-version" not in headers:
            headers["anthropic-version"] = _API_VERSION

    def mock(self, endpoint: Endpoint, call: Call, body: dict, usage: Usage, text: str) -> Reply:
        if endpoint.api != MESSAGES.api:
            raise ValueError(f"no Anthropic mock for {endpoint.name}")
        return mock.mock(call, usage, text)

    def answer(self, endpoint: Endpoint, local: Local) -> Reply | None:
        if endpoint is COUNT_TOKENS:
            return answers.count_tokens(local)
        if endpoint is MODELS_LIST:
            return answers.models_list(local)
        if endpoint is MODEL:
            return answers.model(local, lambda message: self.error(ModelNotFound(message)))
        return None


def _server_tool(tool: dict) -> str | None:
    kind = tool.get("type")
    return next((name for prefix, name in _SERVER_TOOLS if kind.startswith(prefix)), None) if kind else None


def _tools(body: dict) -> tuple[tuple[ToolBound, ...], tuple[str, ...]]:
    """(server tools, each with its max_uses, tools and features pouch cannot bound or price)."""
    tools = body.get("tools")
    if tools is None:
        tools = []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise BadRequest("'tools' must be an array of objects")
    server, unmetered = [], []
    for tool in tools:
        kind = tool.get("type")
        if kind is not None and not isinstance(kind, str):
            raise BadRequest("a tool's 'type' must be a string")
        if name := _server_tool(tool):
            uses = tool.get("max_uses")
            if uses is not None and (isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= _MAX_USES):
                raise BadRequest(f"'max_uses' must be an integer from 1 to {_MAX_USES:,} (to allow no use, send no "
                                 f"such tool), got {shown(uses)}")
            server.append(ToolBound((name,), uses))
        elif kind is not None and not kind.startswith(_CLIENT_TOOLS):
            unmetered.append(kind)  # code execution (billed by container time), tool search, ...
    # The MCP connector and containers (skills, code execution) run work Anthropic bills that
    # no field of the request bounds.
    unmetered += [field for field in ("mcp_servers", "container") if body.get(field)]
    return tuple(server), tuple(dict.fromkeys(unmetered))


def _unpriced_fields(body: dict) -> tuple[str, ...]:
    """Settings Anthropic bills above the price table: fast mode (6x on the models that have
    it), data residency (1.1x). pouch cannot price them: refused unless allowed."""
    found = []
    if body.get("speed") not in (None, "standard"):
        found.append(f"speed {shown(body['speed'])}")
    if body.get("inference_geo") not in (None, "global"):
        found.append(f"inference_geo {shown(body['inference_geo'])}")
    return tuple(found)


def long_context_beta(headers) -> bool:
    """Whether the request opens Claude's 1M-token context (``anthropic-beta: context-1m-…``),
    which the provider bills above 200K input tokens at its long-context rate."""
    return any("context-1m" in value.lower() for value in headers.get_all("anthropic-beta"))


def _user_id(metadata) -> tuple[object, object]:
    """``metadata.user_id`` as (end user, session). Claude Code sends a JSON object there
    (``device_id``, ``account_uuid``, ``session_id``): its user is the account (else the
    device) and its session is its own, so each run is not taken for another end user."""
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user_id, str) and user_id.startswith("{"):
        try:
            fields = json.loads(user_id)
        except ValueError:
            fields = None
        if isinstance(fields, dict):
            return fields.get("account_uuid") or fields.get("device_id") or user_id, fields.get("session_id")
    return user_id, None
