"""Transcripts of Google's Gemini API (generateContent / streamGenerateContent): requests,
responses, and streams, each chunk a partial response whose parts are appended.

Gemini names the model's turns ``model``; they are shown as ``assistant`` so every
provider's transcript reads the same. The model itself is in the URL, not the body.
"""

from __future__ import annotations

from pouch.providers.sse import SSEEvent
from pouch.providers.transcript_format import (
    Stream, Turns, Unrecognised, as_count, base64_size, call_line, compact, error_line, index, media,
    parameter_line, redact, scalar, tool_lines, tool_signature, unknown, usage_line,
)
from pouch.providers.values import as_dict, as_list, as_str, loads


def request(body: dict) -> list[str]:
    contents = body.get("contents")
    if not isinstance(contents, list):
        raise Unrecognised("a Gemini request has a 'contents' list")
    config = as_dict(body.get("generationConfig"))
    thinking = as_dict(config.get("thinkingConfig"))
    tools = [signature for tool in as_list(body.get("tools")) for signature in _tools(tool)]
    params = [
        ("model", body.get("model")),  # only OpenAI-style clients put it here
        ("max_output_tokens", config.get("maxOutputTokens")),
        ("temperature", config.get("temperature")),
        ("top_p", config.get("topP")),
        ("n", config.get("candidateCount")),
        ("tools", len(tools) or None),
        ("response_mime_type", config.get("responseMimeType")),
        ("thinking_budget", thinking.get("thinkingBudget")),
        ("thinking_level", thinking.get("thinkingLevel")),
    ]
    turns = Turns()
    instruction = body.get("systemInstruction", body.get("system_instruction"))
    if instruction is not None:
        _content(turns, instruction, "system")
    for content in contents:
        _content(turns, content)
    return [parameter_line(params), *tool_lines(tools), *turns.lines()]


def response(body: dict | list) -> list[str]:
    if isinstance(body, list):  # streamGenerateContent without alt=sse: a JSON array of chunks
        body = _fold(body).body
    candidates = body.get("candidates")
    feedback = as_dict(body.get("promptFeedback"))
    if not isinstance(candidates, list) and not feedback:
        raise Unrecognised("a Gemini response has 'candidates'")
    turns = Turns()
    candidates = as_list(candidates)
    for candidate in candidates:
        candidate = as_dict(candidate)
        label = f" (choice {index(candidate.get('index'))})" if len(candidates) > 1 else ""
        title = _content(turns, candidate.get("content", {}), None, label)
        if candidate.get("finishReason") is not None:
            turns.add(title, f"finish: {scalar(candidate['finishReason'])}")
    lines = [parameter_line([("model", body.get("modelVersion"))]), *turns.lines()]
    if feedback.get("blockReason"):
        lines.append(f"blocked: {scalar(feedback['blockReason'])}")
    if error := error_line(body.get("error")):
        lines.append(error)
    lines.append(_usage(body.get("usageMetadata")))
    return lines


def _usage(usage: object) -> str:
    """promptTokenCount includes the cached tokens; thoughts are billed as output but
    reported apart, so output here is candidates + thoughts."""
    if not isinstance(usage, dict):
        return "usage: not reported"
    thoughts = as_count(usage.get("thoughtsTokenCount"))
    return usage_line(
        as_count(usage.get("promptTokenCount")) + as_count(usage.get("toolUsePromptTokenCount")),
        as_count(usage.get("candidatesTokenCount")) + thoughts,
        cached=as_count(usage.get("cachedContentTokenCount")),
        reasoning=thoughts,
    )


def _tools(tool: object) -> list[str]:
    tool = as_dict(tool)
    declarations = tool.get("functionDeclarations", tool.get("function_declarations"))
    if isinstance(declarations, list):
        return [
            tool_signature(d.get("name"), d.get("parameters", d.get("parametersJsonSchema")))
            for d in map(as_dict, declarations)
        ]
    return list(tool) or [unknown(tool)]  # built-ins: {"googleSearch": {}}, {"codeExecution": {}}


def _content(turns: Turns, content: object, role: str | None = None, label: str = "") -> str:
    """One ``{role, parts}``; thought parts and function responses get sections of their own."""
    content = as_dict(content)
    role = role or {"model": "assistant"}.get(as_str(content.get("role")), as_str(content.get("role")) or "assistant")
    title = role + label
    turns.begin()
    lines: list[str] = []
    for part in as_list(content.get("parts")):
        part = as_dict(part)
        if part.get("thought") is True and isinstance(part.get("text"), str):
            turns.flush(title, lines)
            turns.add(f"{role} (thinking){label}", part["text"])
        elif isinstance(part.get("functionResponse"), dict):
            turns.flush(title, lines)
            result = part["functionResponse"]
            turns.begin()
            # Gemini matches a response to its call by name (ids only with some tools)
            turns.add(f"tool ({scalar(result.get('id') or result.get('name'))})",
                      compact(redact(result.get("response"))))  # fmt: skip
            turns.begin()
        else:
            lines.append(_part(part))
    if lines or not content.get("parts"):
        turns.add(title, *lines)
    return title


def _part(part: dict) -> str:
    if isinstance(part.get("text"), str):
        return part["text"]
    if isinstance(part.get("functionCall"), dict):
        call = part["functionCall"]
        return call_line(call.get("name"), call.get("args", {}), call.get("id"))
    if isinstance(part.get("inlineData"), dict):
        blob = part["inlineData"]
        return media(_kind(blob.get("mimeType")), blob.get("mimeType"), base64_size(blob.get("data")))
    if isinstance(part.get("fileData"), dict):
        file = part["fileData"]
        return media(_kind(file.get("mimeType")), file.get("mimeType"), file.get("fileUri"))
    if isinstance(part.get("executableCode"), dict):
        return f"[code {scalar(part['executableCode'].get('language'))}]\n{as_str(part['executableCode'].get('code'))}"
    if isinstance(part.get("codeExecutionResult"), dict):
        result = part["codeExecutionResult"]
        return f"[code result {scalar(result.get('outcome'))}]\n{as_str(result.get('output'))}"
    return compact(redact(part))


def _kind(mime_type: object) -> str:
    """``image``, ``audio``, ``video`` from the MIME type; anything else is a file."""
    major = as_str(mime_type).split("/", 1)[0]
    return major if major in ("image", "audio", "video") else "file"


# --- streams -------------------------------------------------------------------------------


def stream(events: list[SSEEvent]) -> Stream:
    return _fold([loads(event.data) for event in events])


def _fold(chunks: list) -> Stream:
    """Each chunk is a partial response: parts append per candidate (adjacent text parts of
    the same kind join), the last usage and finish reason win. Gemini sends no end marker:
    a finish reason is what a complete stream has."""
    body: dict = {}
    candidates: dict[int, dict] = {}
    for chunk in map(as_dict, chunks):
        for field in ("modelVersion", "responseId", "usageMetadata", "promptFeedback", "error"):
            if chunk.get(field) is not None:
                body[field] = chunk[field]
        for candidate in as_list(chunk.get("candidates")):
            candidate = as_dict(candidate)
            folded = candidates.setdefault(index(candidate.get("index")), {"content": {"role": "model", "parts": []}})
            parts = folded["content"]["parts"]
            for part in as_list(as_dict(candidate.get("content")).get("parts")):
                part = dict(as_dict(part))
                last = parts[-1] if parts else {}
                if isinstance(part.get("text"), str) and isinstance(last.get("text"), str) and (
                    part.get("thought") is True) == (last.get("thought") is True):  # fmt: skip
                    last["text"] += part["text"]
                else:
                    parts.append(part)
            if candidate.get("finishReason") is not None:
                folded["finishReason"] = candidate["finishReason"]
    body["candidates"] = [{"index": n, **candidates[n]} for n in sorted(candidates)]
    complete = bool(candidates) and all("finishReason" in c for c in candidates.values())
    complete = complete or bool(as_dict(body.get("promptFeedback")).get("blockReason"))
    return Stream(body, complete, "a finishReason")
