"""Reading an OpenAI-shaped request body: output caps, choices, and the tools it lets run.

Each reader refuses (``BadRequest``) a value the provider could read differently from pouch;
the provider classes (OpenAI's, and every compatible vendor's) build the ``Call`` from them.
"""

from __future__ import annotations

from pouch.domain.errors import BadRequest
from pouch.providers.base import ToolBound
from pouch.providers.values import shown

_MAX_CAP = 10_000_000
_MAX_CHOICES = 128
_MAX_TOOL_CALLS = 1_000
# Responses tools that run on the client (the next request carries their result): no fee, no round.
_CLIENT_TOOLS = frozenset({"function", "custom", "computer_use_preview", "computer_use", "computer",
                           "local_shell", "apply_patch"})
# Responses tools run by OpenAI, by price-table name; ``max_tool_calls`` bounds all of them together.
# Longest prefix first: "web_search_preview_2025_03_11" is a preview, "web_search_2025_08_26" is not.
_SERVER_TOOLS = (("web_search_preview", "web_search_preview"), ("web_search", "web_search"),
                 ("file_search", "file_search"), ("mcp", "mcp"))


def cap(body: dict, field: str) -> int | None:
    """An output cap: absent or null is None; anything but a positive int is refused."""
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_CAP:
        raise BadRequest(f"'{field}' must be a positive integer (at most {_MAX_CAP:,}), got {shown(value)}")
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


def chat_unmetered_tools(body: dict) -> tuple[str, ...]:
    """Chat tools run on the client; anything else (a search model's web search) is billed apart.
    Search models (gpt-4o-search-preview, gpt-5-search-api) bill a search on every request."""
    unmetered = [kind for kind in _tool_types(body) if kind not in ("function", "custom")]
    if body.get("web_search_options") is not None:
        unmetered.append("web_search_options")
    if "search" in body["model"].lower():
        unmetered.append(f"the web search of {body['model']}")
    return tuple(dict.fromkeys(unmetered))


def responses_tools(body: dict) -> tuple[tuple[ToolBound, ...], tuple[str, ...]]:
    """(server tools and their shared bound, tools pouch cannot bound or price)."""
    server, unmetered = [], []
    kinds = _tool_types(body)
    if "namespace" in kinds:
        # A namespace groups function/custom tools under one name (Codex's multi_agent_v1): what
        # it holds is what runs, each checked like a tool of its own.
        kinds = [kind for kind in kinds if kind != "namespace"]
        for group in body["tools"]:
            if group.get("type") == "namespace":
                kinds += _tool_types(group, "tools") or []
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
                         f"tool), got {shown(value)}")
    return value


def choices(body: dict, field: str) -> int:
    value = body.get(field)
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_CHOICES:
        raise BadRequest(f"'{field}' must be an integer from 1 to {_MAX_CHOICES}, got {shown(value)}")
    return value
