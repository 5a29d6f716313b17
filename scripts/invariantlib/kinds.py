"""What a run can send: the kinds of request (API, streamed or not, model, paid server tools),
the models and prices they use, and ``Planned``, one request as the plan fixed it."""

from __future__ import annotations

import dataclasses
from urllib.parse import quote

from tests import pinned_prices

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}
REASONING_MODEL = "o3"  # a priced reasoning model: hidden reasoning tokens are billed as output
HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com", "gemini": "generativelanguage.googleapis.com"}
MAX_TOKENS = 40  # output cap of every request that sets one: a known, small worst case
REASONING_MAX_TOKENS = 200  # a reasoning request's cap: room for its reasoning within the cap
PRICES = pinned_prices.table()  # the prices the gateway runs at (tests/pinned_prices.py writes them to its home)

# Paid server tools a tool request may enable, per provider: the type (Gemini: the field) in the
# body -> the price table's name.
TOOLS = {
    "openai": {"web_search": "web_search", "web_search_preview": "web_search_preview"},
    "anthropic": {"web_search_20250305": "web_search", "web_fetch_20250910": "web_fetch"},
    "gemini": {"urlContext": "url_context", "codeExecution": "code_execution"},
}
DEFAULT_TOOL_CALLS = 3  # the gateway's pouch_tool_calls: the bound it injects where a request sets none
CLIENT_TOOL_BOUNDS = (1, 2, 4)  # bounds clients set themselves (one above pouch's default)
GEMINI_TOOL_BOUNDS = {"urlContext": 1, "codeExecution": 5}  # Google's own, which pouch reserves for


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    provider: str
    api: str  # pouch.tokens.count API name
    stream: bool
    model: str
    tools: bool = False  # enables one of its provider's paid server tools

    @property
    def cap(self) -> int:
        return REASONING_MAX_TOKENS if self.model == REASONING_MODEL else MAX_TOKENS

    @property
    def json_array(self) -> bool:
        """Gemini streamed as one JSON array (no ?alt=sse)."""
        return self.name.endswith("_array")


def _kinds(*specs) -> dict[str, Kind]:
    kinds = [Kind(name, provider, api, stream, model or MODELS[provider], tools)
             for name, provider, api, stream, model, tools in specs]
    return {k.name: k for k in kinds}


KINDS = _kinds(
    ("chat", "openai", "chat", False, None, False),
    ("chat_stream", "openai", "chat", True, None, False),
    ("responses", "openai", "responses", False, None, False),
    ("responses_stream", "openai", "responses", True, None, False),
    ("messages", "anthropic", "anthropic_messages", False, None, False),
    ("messages_stream", "anthropic", "anthropic_messages", True, None, False),
    ("gemini", "gemini", "gemini", False, None, False),
    ("gemini_stream", "gemini", "gemini", True, None, False),  # SSE (?alt=sse)
    ("gemini_stream_array", "gemini", "gemini", True, None, False),  # a streamed JSON array
    ("responses_tools", "openai", "responses", False, None, True),
    ("responses_tools_stream", "openai", "responses", True, None, True),
    ("messages_tools", "anthropic", "anthropic_messages", False, None, True),
    ("messages_tools_stream", "anthropic", "anthropic_messages", True, None, True),
    ("gemini_tools", "gemini", "gemini", False, None, True),
    ("gemini_tools_stream", "gemini", "gemini", True, None, True),
    ("chat_reasoning", "openai", "chat", False, REASONING_MODEL, False),
    ("chat_reasoning_stream", "openai", "chat", True, REASONING_MODEL, False),
    ("responses_reasoning", "openai", "responses", False, REASONING_MODEL, False),
    ("responses_reasoning_stream", "openai", "responses", True, REASONING_MODEL, False),
)
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "anthropic_messages": "/v1/messages"}


@dataclasses.dataclass(frozen=True)
class Planned:
    id: str  # sent as x-invariant-id, which the fakes record
    role: str
    kind: str
    fault: str
    reverse: bool  # OpenAI through the gateway's reverse mode instead of HTTPS_PROXY
    http2: bool  # HTTP/2 to the gateway (several requests share a connection)
    url: str
    headers: dict
    body: bytes
    prompt: str
    expected_text: str  # what a complete reply's text starts with
    fake_delay: float  # seconds the fake waits before the headers (0: none)
    cancel_after: float | None  # client_cancel: when the client gives up
    close_after: int | None  # client_close: chunks read before hanging up
    model: str = ""
    max_tokens: int | None = None  # the output cap the request sets
    tool: str | None = None  # the server tool it enables (a TOOLS key)
    tool_bound: int | None = None  # the bound on its calls the client set (None: pouch injects one)
    tool_calls: int = 0  # calls the fake is asked to perform (x-fake-tool-calls)
    tool_input: int = 1000  # input tokens each call bills (x-fake-tool-input)
    ignore_bounds: bool = False  # the fake performs every call whatever the bound (x-fake-ignore-bounds)
    usage: dict = dataclasses.field(default_factory=dict)  # x-fake-usage: what the fake reports instead
    overrun: bool = False  # the upstream was made to bill more than the worst case: an injected overrun
    end_user: str | None = None  # the end user the gateway must read from the request
    # how it was sent (plan.USER_WAYS); "none" where its key has end users but this request names
    # none, "missing" where its key requires one (then it must be refused)
    user_via: str = ""
    via: str = "main"  # the gateway it goes through: "main", or "ceiling" (pouch_budget_total set)

    @property
    def provider(self) -> str:
        return KINDS[self.kind].provider


def request_body(kind: Kind, model: str, text: str, max_tokens: int | None, tool: str | None = None,
                 tool_bound: int | None = None) -> dict:
    """A minimal body of ``kind``'s API asking ``model`` to answer ``text``, enabling ``tool``
    (with the client's ``tool_bound``, if any)."""
    if kind.provider == "gemini":
        body = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        if max_tokens is not None:
            body["generationConfig"] = {"maxOutputTokens": max_tokens}
        if tool:
            body["tools"] = [{tool: {}}]
        return body
    if kind.api == "responses":
        body = {"model": model, "input": text}
        cap = "max_output_tokens"
    else:
        body = {"model": model, "messages": [{"role": "user", "content": text}]}
        cap = "max_completion_tokens" if model == REASONING_MODEL else "max_tokens"
    if max_tokens is not None:
        body[cap] = max_tokens
    if tool and kind.provider == "openai":
        body["tools"] = [{"type": tool}]
        if tool_bound is not None:
            body["max_tool_calls"] = tool_bound
    elif tool:
        body["tools"] = [{"type": tool, "name": tool.rsplit("_", 1)[0]}]
        if tool_bound is not None:
            body["tools"][0]["max_uses"] = tool_bound
    if kind.stream:
        body["stream"] = True
    return body


def path_of(kind: Kind, model: str) -> str:
    if kind.provider != "gemini":
        return PATHS[kind.api]
    if not kind.stream:
        return f"/v1beta/models/{quote(model)}:generateContent"
    return f"/v1beta/models/{quote(model)}:streamGenerateContent" + ("" if kind.json_array else "?alt=sse")
