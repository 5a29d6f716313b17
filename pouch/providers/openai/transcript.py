"""Transcripts of OpenAI's chat completions, legacy completions and embeddings (and of the
OpenAI-compatible servers that copy them): requests, JSON responses, and SSE streams folded
back into the response the SDK would have assembled.

The Responses API's are in ``transcript_responses`` (they reuse the content parts here).
"""

from __future__ import annotations

from collections.abc import Callable

from pouch.providers.openai.usage import usage_from_dict
from pouch.providers.sse import SSEEvent
from pouch.providers.transcript_format import (
    Stream, Turns, Unrecognised, base64_size, call_line, compact, error_line, float32_count, index, media,
    parameter_line, redact, scalar, tool_lines, tool_signature, unknown, usage_line,
)
from pouch.providers.values import as_dict, as_list, as_str, loads


# --- requests ------------------------------------------------------------------------------


def chat_request(body: dict) -> list[str]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise Unrecognised("a chat request has a 'messages' list")
    tools = [_chat_tool(tool) for tool in as_list(body.get("tools"))]
    tools += [tool_signature(f.get("name"), f.get("parameters")) for f in map(as_dict, as_list(body.get("functions")))]
    params = [
        ("model", body.get("model")),
        ("stream", body.get("stream") is True),
        ("max_completion_tokens", body.get("max_completion_tokens")),
        ("max_tokens", body.get("max_tokens")),
        ("temperature", body.get("temperature")),
        ("top_p", body.get("top_p")),
        ("n", body.get("n")),
        ("tools", len(tools) or None),
        ("tool_choice", tool_choice(body.get("tool_choice"))),
        ("response_format", response_format(body.get("response_format"))),
        ("reasoning_effort", body.get("reasoning_effort")),
    ]
    turns = Turns()
    for message in messages:
        turns.begin()
        chat_message(turns, message)
    return [parameter_line(params), *tool_lines(tools), *turns.lines()]


def completions_request(body: dict) -> list[str]:
    prompt = body.get("prompt")
    if not isinstance(prompt, (str, list)):
        raise Unrecognised("a completions request has a 'prompt'")
    params = [
        ("model", body.get("model")),
        ("stream", body.get("stream") is True),
        ("max_tokens", body.get("max_tokens")),
        ("temperature", body.get("temperature")),
        ("top_p", body.get("top_p")),
        ("n", body.get("n")),
        ("best_of", body.get("best_of")),
        ("echo", body.get("echo") is True),
    ]
    # One prompt is a string or a token list; a batch is a list of either.
    prompts = [prompt] if isinstance(prompt, str) or _is_tokens(prompt) else prompt
    turns = Turns()
    for i, one in enumerate(prompts):
        turns.begin()
        turns.add("prompt" if len(prompts) == 1 else f"prompt ({i})", _prompt_text(one))
    if isinstance(body.get("suffix"), str):
        turns.add("suffix", body["suffix"])
    return [parameter_line(params), *turns.lines()]


def _chat_tool(tool: object) -> str:
    tool = as_dict(tool)
    kind = tool.get("type")
    if kind == "function":
        function = as_dict(tool.get("function"))
        return tool_signature(function.get("name"), function.get("parameters"))
    if kind == "custom":  # free-text input, no schema
        return f"{scalar(as_dict(tool.get('custom')).get('name')) or '?'} [custom]"
    return unknown(tool)


def tool_choice(choice: object) -> object:
    """``auto``/``required``/``none`` as sent; a forced tool as its name."""
    if isinstance(choice, dict):
        named = as_dict(choice.get("function")) or as_dict(choice.get("custom")) or choice
        return named.get("name") or choice.get("type") or compact(choice)
    return choice


def response_format(fmt: object) -> object:
    """``json_object``, or ``json_schema weather`` for a named structured output."""
    if not isinstance(fmt, dict):
        return fmt
    kind = as_str(fmt.get("type"))
    name = as_str(as_dict(fmt.get("json_schema")).get("name") or fmt.get("name"))
    return f"{kind} {name}" if kind and name else kind or compact(redact(fmt))


def _is_tokens(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) for t in value)


def _prompt_text(prompt: object) -> str:
    if isinstance(prompt, str):
        return prompt
    if _is_tokens(prompt):
        return f"[{len(prompt)} tokens]"
    return compact(redact(prompt))


_PREVIEW_INPUTS = 5  # a batch can hold thousands of inputs; the first few identify it
_PREVIEW_CHARS = 120


def embeddings_request(body: dict) -> list[str]:
    value = body.get("input")
    # One text or token list, or a batch of either.
    inputs = [value] if isinstance(value, str) or _is_tokens(value) else value
    if not isinstance(inputs, list):
        raise Unrecognised("an embeddings request has an 'input'")
    params = [
        ("model", body.get("model")),
        ("dimensions", body.get("dimensions")),
        ("encoding_format", body.get("encoding_format")),
    ]
    preview = [f"[{i}] {_preview(_prompt_text(one))}" for i, one in enumerate(inputs[:_PREVIEW_INPUTS])]
    if len(inputs) > _PREVIEW_INPUTS:
        preview.append(f"… {len(inputs) - _PREVIEW_INPUTS} more")
    turns = Turns()
    turns.add(f"inputs ({len(inputs)})", *preview)
    return [parameter_line(params), *turns.lines()]


def embeddings_response(body: dict) -> list[str]:
    data = body.get("data")
    if not isinstance(data, list):
        raise Unrecognised("an embeddings response has a 'data' list")
    vectors = [as_dict(item).get("embedding") for item in data]
    dims = sorted({float32_count(v) if isinstance(v, str) else len(v) for v in vectors if isinstance(v, (str, list))})
    shown = "?" if not dims else str(dims[0]) if len(dims) == 1 else f"{dims[0]}–{dims[-1]}"
    encoded = " (base64 float32)" if any(isinstance(v, str) for v in vectors) else ""
    lines = [
        parameter_line([("model", body.get("model"))]),
        f"{len(data)} vector{'s' if len(data) != 1 else ''} × {shown} dims{encoded}",
    ]
    usage = usage_from_dict("embeddings", body.get("usage"))
    lines.append("usage: not reported" if usage is None else usage_line(usage.input_tokens, None))
    return lines


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 1] + "…"


# --- messages and content parts ------------------------------------------------------------


def chat_message(turns: Turns, message: object, label: str = "") -> str:
    """Add one chat message (a request's or a response's); returns its section title."""
    if not isinstance(message, dict):
        turns.add("?", compact(redact(message)))
        return "?"
    role = as_str(message.get("role")) or "?"
    if role == "tool":
        title = f"tool ({scalar(message.get('tool_call_id'))})"
    elif isinstance(message.get("name"), str):
        title = f"{role} ({message['name']})"
    else:
        title = role
    title += label
    # Compatible servers (vLLM, DeepSeek, OpenRouter) return the model's reasoning as text.
    for field in ("reasoning_content", "reasoning"):
        if isinstance(message.get(field), str) and message[field]:
            turns.add(f"{role} (reasoning){label}", message[field])
    lines = content_lines(message.get("content"))
    if isinstance(message.get("refusal"), str):
        lines.append(f"refusal: {message['refusal']}")
    audio = message.get("audio")
    if isinstance(audio, dict):
        lines.append(media("audio", audio.get("transcript"), base64_size(audio.get("data")), audio.get("id")))
    for call in as_list(message.get("tool_calls")):
        call = as_dict(call)
        function = as_dict(call.get("function")) or as_dict(call.get("custom"))
        lines.append(call_line(function.get("name"), function.get("arguments", function.get("input")), call.get("id")))
    if isinstance(message.get("function_call"), dict):  # the pre-tools API
        lines.append(call_line(message["function_call"].get("name"), message["function_call"].get("arguments")))
    turns.add(title, *lines)
    return title


def content_lines(content: object) -> list[str]:
    """A message's content: a string, or a list of parts (chat or Responses API names)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return [compact(redact(content))]
    return [content_part(part) for part in content]


def content_part(part: object) -> str:
    if not isinstance(part, dict):
        return compact(redact(part))
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text", "reasoning_text", "summary_text"):
        return part["text"] if isinstance(part.get("text"), str) else unknown(part)
    if kind in ("image_url", "input_image"):
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        detail = as_dict(image).get("detail") or part.get("detail")
        return media("image", url, part.get("file_id"), f"detail {detail}" if isinstance(detail, str) else "")
    if kind == "input_audio":
        audio = as_dict(part.get("input_audio"))
        return media("audio", audio.get("format"), base64_size(audio.get("data")))
    if kind in ("file", "input_file"):
        file = as_dict(part.get("file")) or part
        data = as_str(file.get("file_data"))
        # file_data is a data URL in chat, bare base64 in some clients
        shown = data if data.startswith("data:") else base64_size(data)
        return media("file", file.get("filename"), shown, file.get("file_url"), file.get("file_id"))
    if kind == "refusal":
        return f"refusal: {scalar(part.get('refusal'))}"
    return unknown(part)


# --- responses -----------------------------------------------------------------------------


def chat_response(body: dict) -> list[str]:
    return _choices_response(body, "chat", _chat_choice)


def completions_response(body: dict) -> list[str]:
    return _choices_response(body, "completions", _completion_choice)


def _choices_response(body: dict, api: str, add_choice: Callable[[Turns, dict, str], str]) -> list[str]:
    choices = body.get("choices")
    if not isinstance(choices, list):
        raise Unrecognised("a completion has a 'choices' list")
    turns = Turns()
    for choice in choices:
        choice = as_dict(choice)
        turns.begin()
        label = f" (choice {scalar(choice.get('index'))})" if len(choices) > 1 else ""
        title = add_choice(turns, choice, label)
        if choice.get("finish_reason") is not None:
            turns.add(title, f"finish: {scalar(choice['finish_reason'])}")
    lines = [parameter_line([("model", body.get("model"))]), *turns.lines()]
    if error := error_line(body.get("error")):
        lines.append(error)
    lines.append(usage_of(api, body.get("usage")))
    return lines


def usage_of(api: str, usage: object) -> str:
    """The usage line of an OpenAI ``usage`` object, read as pouch bills it."""
    read = usage_from_dict(api, usage)
    if read is None:
        return "usage: not reported"
    return usage_line(read.input_tokens, read.output_tokens, read.cached_tokens, read.cache_write_tokens,
                      read.reasoning_tokens)  # fmt: skip


def _chat_choice(turns: Turns, choice: dict, label: str) -> str:
    return chat_message(turns, choice.get("message", {"role": "assistant"}), label)


def _completion_choice(turns: Turns, choice: dict, label: str) -> str:
    title = "completion" + label
    turns.add(title, _prompt_text(choice.get("text", "")))
    return title


# --- streams -------------------------------------------------------------------------------


def chat_stream(events: list[SSEEvent]) -> Stream:
    return _fold_choices(events, _fold_chat_delta)


def completions_stream(events: list[SSEEvent]) -> Stream:
    return _fold_choices(events, _fold_completion_text)


def _fold_choices(events: list[SSEEvent], fold: Callable[[dict, dict], None]) -> Stream:
    """``data: {chunk}`` events until ``data: [DONE]``; each choice folds by its index."""
    body: dict = {}
    choices: dict[int, dict] = {}
    done = False
    for event in events:
        if event.data == "[DONE]":
            done = True
            continue
        chunk = as_dict(loads(event.data))
        for field in ("id", "model", "system_fingerprint", "service_tier"):
            if field not in body and isinstance(chunk.get(field), str):
                body[field] = chunk[field]
        if isinstance(chunk.get("usage"), dict):
            body["usage"] = chunk["usage"]
        if chunk.get("error") is not None:  # an error sent mid-stream
            body["error"] = chunk["error"]
        for choice in as_list(chunk.get("choices")):
            choice = as_dict(choice)
            number = index(choice.get("index"))
            folded = choices.setdefault(number, {"index": number})
            fold(folded, choice)
            if choice.get("finish_reason") is not None:
                folded["finish_reason"] = choice["finish_reason"]
    body["choices"] = [_finish_tool_calls(choices[n]) for n in sorted(choices)]
    return Stream(body, done, "[DONE]")


def _fold_chat_delta(folded: dict, choice: dict) -> None:
    """Strings concatenate, as the SDKs' stream accumulators do; tool calls fold by index."""
    delta = as_dict(choice.get("delta"))
    message = folded.setdefault("message", {"role": "assistant"})
    if isinstance(delta.get("role"), str):
        message["role"] = delta["role"]
    for field in ("content", "refusal", "reasoning_content", "reasoning"):
        if isinstance(delta.get(field), str):
            message[field] = as_str(message.get(field)) + delta[field]
    for call in as_list(delta.get("tool_calls")):
        call = as_dict(call)
        calls = message.setdefault("tool_calls", {})
        slot = calls.setdefault(index(call.get("index"), len(calls)), {"function": {"name": "", "arguments": ""}})
        if isinstance(call.get("id"), str) and call["id"]:
            slot["id"] = call["id"]
        function = as_dict(call.get("function"))
        for field in ("name", "arguments"):
            if isinstance(function.get(field), str):
                slot["function"][field] += function[field]
    if isinstance(delta.get("function_call"), dict):
        legacy = message.setdefault("function_call", {"name": "", "arguments": ""})
        for field in ("name", "arguments"):
            if isinstance(delta["function_call"].get(field), str):
                legacy[field] += delta["function_call"][field]
    if isinstance(delta.get("audio"), dict):
        audio = message.setdefault("audio", {"transcript": "", "data": ""})
        for field in ("transcript", "data"):
            if isinstance(delta["audio"].get(field), str):
                audio[field] += delta["audio"][field]


def _fold_completion_text(folded: dict, choice: dict) -> None:
    if isinstance(choice.get("text"), str):
        folded["text"] = as_str(folded.get("text")) + choice["text"]


def _finish_tool_calls(choice: dict) -> dict:
    """Tool calls were gathered by index; the response lists them in order."""
    calls = as_dict(choice.get("message")).get("tool_calls")
    if isinstance(calls, dict):
        choice["message"]["tool_calls"] = [calls[n] for n in sorted(calls)]
    return choice
