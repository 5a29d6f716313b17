"""Transcripts of Anthropic's Messages API (/v1/messages): requests, responses, and SSE streams
(message_start, content_block_*, message_delta, message_stop) folded into the final message.

Tool results travel inside user messages; they are shown as their own ``tool`` sections,
the way the other providers' transcripts show them.
"""

from __future__ import annotations

from pouch.providers.sse import SSEEvent
from pouch.providers.transcript_format import (
    Stream, Turns, Unrecognised, as_count, base64_size, call_line, compact, error_line, index, media,
    parameter_line, redact, scalar, tool_lines, tool_signature, unknown, usage_line,
)
from pouch.providers.values import as_dict, as_list, as_str, loads


def request(body: dict) -> list[str]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise Unrecognised("a Messages request has a 'messages' list")
    thinking = as_dict(body.get("thinking"))
    choice = as_dict(body.get("tool_choice"))
    tools = [_tool(tool) for tool in as_list(body.get("tools"))]
    params = [
        ("model", body.get("model")),
        ("stream", body.get("stream") is True),
        ("max_tokens", body.get("max_tokens")),
        ("temperature", body.get("temperature")),
        ("top_p", body.get("top_p")),
        ("top_k", body.get("top_k")),
        ("tools", len(tools) or None),
        ("tool_choice", choice.get("name") or choice.get("type")),
        ("thinking", thinking.get("budget_tokens") or _enabled(thinking.get("type"))),
        ("effort", as_dict(body.get("output_config")).get("effort")),
    ]
    turns = Turns()
    if body.get("system") is not None:
        turns.add("system", *_lines(body["system"]))
    for message in messages:
        message = as_dict(message)
        _message(turns, as_str(message.get("role")) or "?", message.get("content"))
    return [parameter_line(params), *tool_lines(tools), *turns.lines()]


def response(body: dict) -> list[str]:
    content = body.get("content")
    if not isinstance(content, list):
        raise Unrecognised("a Messages response has a 'content' list")
    turns = Turns()
    role = as_str(body.get("role")) or "assistant"
    _message(turns, role, content)
    if body.get("stop_reason") is not None:
        stop = scalar(body["stop_reason"])
        if isinstance(body.get("stop_sequence"), str):
            stop += f" ({body['stop_sequence']!r})"
        turns.add(role, f"finish: {stop}")
    lines = [parameter_line([("model", body.get("model"))]), *turns.lines()]
    if error := error_line(body.get("error")):
        lines.append(error)
    lines.append(_usage(body.get("usage")))
    return lines


def _enabled(thinking_type: object) -> object:
    """Thinking without a budget ("adaptive") shows its type; "disabled" shows nothing."""
    return None if thinking_type == "disabled" else thinking_type


def _usage(usage: object) -> str:
    """Anthropic's input_tokens leaves out cache reads and writes; shown with them included."""
    if not isinstance(usage, dict):
        return "usage: not reported"
    read = as_count(usage.get("cache_read_input_tokens"))
    written = as_count(usage.get("cache_creation_input_tokens"))
    return usage_line(as_count(usage.get("input_tokens")) + read + written, as_count(usage.get("output_tokens")),
                      read, written)  # fmt: skip


def _tool(tool: object) -> str:
    tool = as_dict(tool)
    if "input_schema" in tool:
        return tool_signature(tool.get("name"), tool.get("input_schema"))
    if tool.get("type"):  # Anthropic-hosted tools (web_search_20250305, bash_20250124, ...)
        return f"{scalar(tool.get('name')) or '?'} [{scalar(tool.get('type'))}]"
    return unknown(tool)


_RESULTS = ("tool_result", "mcp_tool_result", "web_search_tool_result")


def _message(turns: Turns, role: str, content: object) -> None:
    """One message. Thinking and tool results get sections of their own; the role's section
    resumes after them."""
    turns.begin()
    if not isinstance(content, list):
        turns.add(role, *_lines(content))
        return
    lines: list[str] = []
    for block in content:
        kind = as_dict(block).get("type")
        if kind == "thinking":
            turns.flush(role, lines)
            turns.add(f"{role} (thinking)", as_str(block.get("thinking")))
        elif kind in _RESULTS:
            turns.flush(role, lines)
            error = ["(error)"] if block.get("is_error") is True else []
            turns.begin()
            turns.add(f"tool ({scalar(block.get('tool_use_id'))})", *error, *_lines(block.get("content")))
            turns.begin()
        else:
            lines.append(_block(block))
    if lines or not content:
        turns.add(role, *lines)


def _lines(content: object) -> list[str]:
    """Content that is a string or a list of blocks (a tool result's, a system prompt)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    return [_block(block) for block in content] if isinstance(content, list) else [compact(redact(content))]


def _block(block: object) -> str:
    if not isinstance(block, dict):
        return compact(redact(block))
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        return block["text"]
    if kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
        return call_line(block.get("name"), block.get("input"), block.get("id"))
    if kind in ("image", "document"):
        source = as_dict(block.get("source"))
        if source.get("type") == "text":  # a plain-text document: text to read, not base64
            return f"{media(kind, block.get('title'))}\n{as_str(source.get('data'))}"
        size = base64_size(source.get("data"))
        return media(kind, block.get("title"), source.get("media_type"), size, source.get("url"), source.get("file_id"))
    if kind == "redacted_thinking":
        return f"[redacted thinking, {base64_size(block.get('data')) or '?'}]"
    return unknown(block)


# --- streams -------------------------------------------------------------------------------


def stream(events: list[SSEEvent]) -> Stream:
    message: dict = {}
    blocks: dict[int, dict] = {}
    json_inputs: dict[int, str] = {}  # tool input arrives as JSON fragments
    stopped = False
    for event in events:
        data = as_dict(loads(event.data))
        kind = event.name or data.get("type")
        at = index(data.get("index"))
        if kind == "message_start":
            message = dict(as_dict(data.get("message")))
        elif kind == "content_block_start":
            blocks[at] = dict(as_dict(data.get("content_block")))
        elif kind == "content_block_delta":
            _fold_delta(blocks.setdefault(at, {}), json_inputs, at, as_dict(data.get("delta")))
        elif kind == "message_delta":
            for field, value in as_dict(data.get("delta")).items():
                message[field] = value
            # Counts here are cumulative: the final ones replace message_start's.
            usage = dict(as_dict(message.get("usage")))
            usage.update({k: v for k, v in as_dict(data.get("usage")).items() if v is not None})
            message["usage"] = usage
        elif kind == "message_stop":
            stopped = True
        elif kind == "error":
            message["error"] = data.get("error", data)
    for at, text in json_inputs.items():
        parsed = loads(text) if text else {}
        blocks[at]["input"] = parsed if isinstance(parsed, dict) else text  # cut short: the raw fragment
    message["content"] = [blocks[at] for at in sorted(blocks)]
    return Stream(message, stopped, "message_stop")


def _fold_delta(block: dict, json_inputs: dict[int, str], at: int, delta: dict) -> None:
    kind = delta.get("type")
    if kind == "text_delta":
        block["text"] = as_str(block.get("text")) + as_str(delta.get("text"))
        block.setdefault("type", "text")
    elif kind == "thinking_delta":
        block["thinking"] = as_str(block.get("thinking")) + as_str(delta.get("thinking"))
        block.setdefault("type", "thinking")
    elif kind == "input_json_delta":
        json_inputs[at] = json_inputs.get(at, "") + as_str(delta.get("partial_json"))
    elif kind == "citations_delta":
        block.setdefault("citations", []).append(delta.get("citation"))
