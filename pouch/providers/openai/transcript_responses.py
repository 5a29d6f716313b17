"""Transcripts of OpenAI's Responses API: the request's instructions and input items, the
response's output items, and SSE streams (named events) folded into the final response.

Input and output are lists of the same item kinds (messages, function calls and their outputs,
reasoning), so one function renders both.
"""

from __future__ import annotations

from pouch.providers.openai.transcript import content_lines, response_format, tool_choice, usage_of
from pouch.providers.sse import SSEEvent
from pouch.providers.transcript_format import (
    Stream, Turns, Unrecognised, base64_size, call_line, compact, error_line, index, parameter_line, redact,
    scalar, tool_lines, tool_signature, unknown,
)
from pouch.providers.values import as_dict, as_list, as_str, loads


def request(body: dict) -> list[str]:
    items = body.get("input")
    if items is not None and not isinstance(items, (str, list)):
        raise Unrecognised("a Responses request's 'input' is a string or a list of items")
    reasoning = as_dict(body.get("reasoning"))
    tools = [_tool(tool) for tool in as_list(body.get("tools"))]
    params = [
        ("model", body.get("model")),
        ("stream", body.get("stream") is True),
        ("max_output_tokens", body.get("max_output_tokens")),
        ("temperature", body.get("temperature")),
        ("top_p", body.get("top_p")),
        ("tools", len(tools) or None),
        ("tool_choice", tool_choice(body.get("tool_choice"))),
        ("format", response_format(as_dict(body.get("text")).get("format"))),
        ("reasoning_effort", reasoning.get("effort")),
        ("reasoning_summary", reasoning.get("summary")),
        ("previous_response_id", body.get("previous_response_id")),
        ("prompt", as_dict(body.get("prompt")).get("id")),
    ]
    turns = Turns()
    if isinstance(body.get("instructions"), str):
        turns.add("instructions", body["instructions"])
    if isinstance(items, str):
        turns.begin()
        turns.add("user", items)
    for item in as_list(items):
        _item(turns, item)
    return [parameter_line(params), *tool_lines(tools), *turns.lines()]


def response(body: dict) -> list[str]:
    output = body.get("output")
    if not isinstance(output, list):
        raise Unrecognised("a Responses response has an 'output' list")
    status = as_str(body.get("status"))
    reason = as_str(as_dict(body.get("incomplete_details")).get("reason"))
    params = [("model", body.get("model")), ("status", f"{status} ({reason})" if reason else status)]
    turns = Turns()
    for item in output:
        _item(turns, item)
    lines = [parameter_line(params), *turns.lines()]
    if error := error_line(body.get("error")):
        lines.append(error)
    lines.append(usage_of("responses", body.get("usage")))
    return lines


def _tool(tool: object) -> str:
    tool = as_dict(tool)
    kind = tool.get("type")
    if kind == "function":
        return tool_signature(tool.get("name"), tool.get("parameters"))
    if kind == "custom":
        return f"{scalar(tool.get('name')) or '?'} [custom]"
    if kind == "mcp":
        return f"mcp {scalar(tool.get('server_label'))}"
    return scalar(kind) if kind else unknown(tool)  # hosted tools: web_search, file_search, ...


def _item(turns: Turns, item: object) -> None:
    """One input or output item. Calls join the assistant section before them (parallel calls
    read as one turn); a message or a call's output starts a new section."""
    if not isinstance(item, dict):
        turns.begin()
        turns.add("?", compact(redact(item)))
        return
    kind = item.get("type")
    if kind == "message" or (kind is None and "role" in item):
        turns.begin()
        turns.add(as_str(item.get("role")) or "?", *content_lines(item.get("content")))
    elif kind == "function_call":
        turns.add("assistant", call_line(item.get("name"), item.get("arguments"), item.get("call_id")))
    elif kind == "custom_tool_call":
        turns.add("assistant", call_line(item.get("name"), item.get("input"), item.get("call_id")))
    elif kind in ("function_call_output", "custom_tool_call_output"):
        turns.begin()
        output = item.get("output")
        turns.add(f"tool ({scalar(item.get('call_id'))})", *content_lines(output if output is not None else ""))
        turns.begin()
    elif kind == "reasoning":
        texts = [as_str(as_dict(part).get("text")) for part in as_list(item.get("summary"))]
        texts += [as_str(as_dict(part).get("text")) for part in as_list(item.get("content"))]
        encrypted = item.get("encrypted_content")
        if isinstance(encrypted, str) and encrypted:
            texts.append(f"[encrypted reasoning, {base64_size(encrypted)}]")
        turns.add("assistant (reasoning)", *[text for text in texts if text] or ["[reasoning]"])
    elif kind == "item_reference":
        turns.begin()
        turns.add("item_reference", scalar(item.get("id")))
    else:  # hosted tool calls (web_search_call, image_generation_call, ...) and newer kinds
        turns.add("assistant", unknown({key: value for key, value in item.items() if key != "id"}))


# --- streams -------------------------------------------------------------------------------

_FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")


def stream(events: list[SSEEvent]) -> Stream:
    """The final event carries the whole response; a stream cut short is rebuilt from the
    items, parts and deltas that did arrive."""
    final: dict | None = None
    started: dict = {}
    error = None
    items: dict[int, dict] = {}
    finished: set[int] = set()  # items whose output_item.done arrived: complete as they are
    parts: dict[tuple[int, int], dict] = {}  # (output_index, content_index) -> content part
    summaries: dict[tuple[int, int], dict] = {}  # (output_index, summary_index) -> summary part
    for event in events:
        data = as_dict(loads(event.data))
        kind = event.name or data.get("type")
        at = index(data.get("output_index"))
        if kind in _FINAL_EVENTS:
            final = as_dict(data.get("response"))
        elif kind in ("response.created", "response.in_progress"):
            started = as_dict(data.get("response")) or started
        elif kind == "error":
            error = data.get("error") if isinstance(data.get("error"), dict) else data
        elif kind in ("response.output_item.added", "response.output_item.done"):
            items[at] = dict(as_dict(data.get("item")))
            if kind.endswith(".done"):
                finished.add(at)
        elif kind == "response.content_part.added":
            parts[at, index(data.get("content_index"))] = dict(as_dict(data.get("part")))
        elif kind in ("response.output_text.delta", "response.reasoning_text.delta", "response.refusal.delta"):
            field = "refusal" if kind == "response.refusal.delta" else "text"
            default = "refusal" if field == "refusal" else kind.split(".")[1]
            part = parts.setdefault((at, index(data.get("content_index"))), {"type": default})
            part[field] = as_str(part.get(field)) + as_str(data.get("delta"))
        elif kind == "response.reasoning_summary_text.delta":
            part = summaries.setdefault((at, index(data.get("summary_index"))), {"type": "summary_text"})
            part["text"] = as_str(part.get("text")) + as_str(data.get("delta"))
        elif kind in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta"):
            field = "arguments" if "function_call" in kind else "input"
            item = items.setdefault(at, {"type": "function_call" if field == "arguments" else "custom_tool_call"})
            item[field] = as_str(item.get(field)) + as_str(data.get("delta"))
    if final is not None and (final.get("output") or not items):
        body = final
    else:
        for at, item in items.items():
            if at not in finished:
                _attach(item, "content", parts, at)
                _attach(item, "summary", summaries, at)
        body = {**(final or started), "output": [items[at] for at in sorted(items)]}
    if error is not None:
        body["error"] = error
    return Stream(body, final is not None, "response.completed")


def _attach(item: dict, field: str, pieces: dict[tuple[int, int], dict], at: int) -> None:
    mine = sorted(key for key in pieces if key[0] == at)
    if mine:
        item[field] = [pieces[key] for key in mine]
