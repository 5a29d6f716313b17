"""Count a request's prompt tokens before it leaves the gateway, for the budget reservation.

OpenAI models are counted with their own tiktoken encoding and the chat formatting of OpenAI's
cookbook. Other models are counted with o200k_base and are approximate: scale their count with
``input_upper_bound``. What tiktoken cannot see is estimated on the high side (``estimates``).

A malformed body raises ``ValueError`` (the gateway answers 400); nothing else is raised for
anything a client can send.
"""

from __future__ import annotations

import json

from pouch.tokens.encodings import canonical_model, encoding_for, is_exact
from pouch.tokens.estimates import (
    ANTHROPIC_BUILTIN_TOOL_TOKENS,
    ANTHROPIC_IMAGE_TOKENS,
    ANTHROPIC_TOOLS_TOKENS,
    AUDIO_BYTES_PER_TOKEN,
    DOCUMENT_BYTES_PER_TOKEN,
    GEMINI_IMAGE_TOKENS,
    TOOL_TOKENS,
    TOOLS_TOKENS,
    input_upper_bound,
    media_tokens,
    openai_image_tokens,
)

__all__ = ["APIS", "count_chat", "count_prompt", "count_text", "input_upper_bound", "is_exact"]

MESSAGE_TOKENS = 3  # per message: <|start|>{role}<|message|>{content}<|end|> (OpenAI cookbook)
NAME_TOKENS = 1  # per message "name"
REPLY_TOKENS = 3  # every reply is primed with <|start|>assistant<|message|>


def count_text(model: str, text: str) -> int:
    """Tokens in ``text``; special-token text such as "<|endoftext|>" counts as plain text."""
    return _Prompt(model).text(text, "text")


def count_chat(
    model: str, messages: list, tools: list | None = None, functions: list | None = None
) -> int:
    """Prompt tokens of a chat-completions request (OpenAI's formatting)."""
    return _Prompt(model).chat(messages, tools, functions)


def count_prompt(model: str, body: dict, api: str) -> int:
    """Raw prompt tokens of request ``body`` for ``api`` (a key of ``APIS``), before any factor."""
    if api not in APIS:
        raise ValueError(f"cannot count prompts of api {api!r}; known: {', '.join(APIS)}")
    try:
        return APIS[api](_Prompt(model), _dict(body, "the request body"))
    except RecursionError:
        raise ValueError("the request body is nested too deeply") from None


def _dict(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object, not {type(value).__name__}")
    return value


def _list(value, what: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be an array, not {type(value).__name__}")
    return value


def _either(obj: dict, camel: str, snake: str):
    """Gemini's REST API accepts both spellings of every field."""
    return obj.get(camel, obj.get(snake))


class _Prompt:
    """Counts the pieces of one prompt with one model's encoding."""

    def __init__(self, model: str):
        self.model = canonical_model(model)
        self.encode = encoding_for(self.model).encode_ordinary  # = encode(disallowed_special=())

    def text(self, value, what: str) -> int:
        if not isinstance(value, str):
            raise ValueError(f"{what} must be a string, not {type(value).__name__}")
        return len(self.encode(value)) if value else 0

    def json(self, value) -> int:
        """Free-form values (arguments, schemas, parts pouch does not know) count as their JSON."""
        if value is None:
            return 0
        return self.text(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False), "")

    def tools(self, tools, what: str) -> int:
        if not tools:
            return 0
        definitions = (_dict(tool, f"each of {what}") for tool in _list(tools, what))
        return TOOLS_TOKENS + sum(TOOL_TOKENS + self.json(tool) for tool in definitions)

    def call(self, call, what: str) -> int:
        call = _dict(call, what)
        name = self.text(call.get("name", ""), f"{what}'s name")
        return TOOL_TOKENS + name + self.json(call.get("arguments"))

    def content(self, content, count_part=None) -> int:
        """A string, or a list of parts (OpenAI; the default) or of blocks (Anthropic)."""
        if content is None or isinstance(content, str):
            return self.json(content)
        if not isinstance(content, list):
            raise ValueError(f"content must be a string or an array, not {type(content).__name__}")
        return sum(map(count_part or self.part, content))

    # OpenAI chat completions and responses

    def chat(self, messages, tools, functions) -> int:
        total = REPLY_TOKENS + self.tools(tools, "tools") + self.tools(functions, "functions")
        for message in _list(messages, "messages"):
            total += MESSAGE_TOKENS
            for key, value in _dict(message, "each message").items():
                if value is None:
                    continue
                if key == "content":
                    total += self.content(value)
                elif key == "tool_calls":
                    for call in _list(value, "tool_calls"):
                        call = _dict(call, "each tool call")
                        function = call.get("function")  # a custom tool call has none
                        total += self.call(function, "a tool call") if function else self.json(call)
                elif key == "function_call":
                    total += self.call(value, "function_call")
                elif key == "name":
                    total += NAME_TOKENS + self.text(value, "a message's name")
                else:  # role, tool_call_id, refusal, ...: the cookbook counts every value
                    total += self.json(value)
        return total

    def part(self, part) -> int:
        part = _dict(part, "each content part")
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text", "summary_text", "reasoning_text"):
            return self.text(part.get("text"), f"a {kind} part's text")
        if kind == "refusal":
            return self.text(part.get("refusal"), "a refusal part's refusal")
        if kind in ("image_url", "input_image"):
            image = part.get("image_url")  # chat: {"url", "detail"}; responses: the URL
            detail = image.get("detail") if isinstance(image, dict) else part.get("detail")
            return openai_image_tokens(self.model, detail)
        if kind == "input_audio":
            audio = _dict(part.get("input_audio"), "an input_audio part's input_audio")
            return media_tokens(audio.get("data"), AUDIO_BYTES_PER_TOKEN)
        if kind in ("file", "input_file"):
            file = _dict(part.get("file"), "a file part's file") if kind == "file" else part
            return media_tokens(file.get("file_data"), DOCUMENT_BYTES_PER_TOKEN)
        return self.json(part)

    def item(self, item) -> int:
        """One item of a responses request's ``input``."""
        item = _dict(item, "each input item")
        kind = item.get("type", "message")
        if kind == "message":
            return MESSAGE_TOKENS + self.json(item.get("role")) + self.content(item.get("content"))
        if kind == "function_call":
            return self.call(item, "a function_call item")
        if kind == "function_call_output" and isinstance(item.get("output"), list):
            return TOOL_TOKENS + self.content(item["output"])
        return TOOL_TOKENS + self.json(item)  # text outputs, reasoning, built-in tool calls, ...

    # Anthropic messages

    def block(self, block) -> int:
        block = _dict(block, "each content block")
        kind = block.get("type")
        if kind == "text":
            return self.text(block.get("text"), "a text block's text")
        if kind == "image":
            return ANTHROPIC_IMAGE_TOKENS
        if kind == "document":
            source = _dict(block.get("source"), "a document's source")
            if source.get("type") == "text":
                tokens = self.text(source.get("data"), "a text document's data")
            elif source.get("type") == "content":
                tokens = self.content(source.get("content"), self.block)
            else:  # base64 (a PDF), url, file
                tokens = media_tokens(source.get("data"), DOCUMENT_BYTES_PER_TOKEN)
            return tokens + self.json(block.get("title")) + self.json(block.get("context"))
        if kind in ("tool_use", "server_tool_use"):
            return TOOL_TOKENS + self.json(block.get("name")) + self.json(block.get("input"))
        if kind == "tool_result":
            return TOOL_TOKENS + self.content(block.get("content"), self.block)
        if kind == "thinking":
            return self.text(block.get("thinking"), "a thinking block's thinking")
        return self.json(block)

    def anthropic_tool(self, tool) -> int:
        tool = _dict(tool, "each tool")
        # A tool without input_schema is Anthropic-defined (bash, computer, ...): a hidden prompt.
        hidden = TOOL_TOKENS if "input_schema" in tool else ANTHROPIC_BUILTIN_TOOL_TOKENS
        return hidden + self.json(tool)

    # Gemini generateContent

    def gemini_content(self, content) -> int:
        content = _dict(content, "each content")
        parts = _list(content.get("parts", []), "a content's parts")
        return MESSAGE_TOKENS + self.json(content.get("role")) + sum(map(self.gemini_part, parts))

    def gemini_part(self, part) -> int:
        part = _dict(part, "each part")
        if "text" in part:
            return self.text(part["text"], "a part's text")
        media = _either(part, "inlineData", "inline_data") or _either(part, "fileData", "file_data")
        if media is None:
            return self.json(part)  # function calls and responses, code, ...
        mime = _either(_dict(media, "a part's inlineData or fileData"), "mimeType", "mime_type")
        mime = mime if isinstance(mime, str) else ""
        if mime.startswith("image/"):
            return GEMINI_IMAGE_TOKENS
        audio = mime.startswith(("audio/", "video/"))
        per_token = AUDIO_BYTES_PER_TOKEN if audio else DOCUMENT_BYTES_PER_TOKEN
        return media_tokens(media.get("data"), per_token)  # fileData has no data: the cap


def _chat(prompt: _Prompt, body: dict) -> int:
    tokens = prompt.chat(body.get("messages"), body.get("tools"), body.get("functions"))
    response_format = body.get("response_format")  # a json_schema is part of the prompt
    return tokens + (prompt.json(response_format) if isinstance(response_format, dict) else 0)


def _responses(prompt: _Prompt, body: dict) -> int:
    tokens = REPLY_TOKENS + prompt.tools(body.get("tools"), "tools")
    if body.get("instructions") is not None:
        tokens += MESSAGE_TOKENS + prompt.text(body["instructions"], "instructions")
    items = body.get("input")
    if isinstance(items, str):
        tokens += MESSAGE_TOKENS + prompt.text(items, "input")
    elif items is not None:
        tokens += sum(map(prompt.item, _list(items, "input")))
    text = body.get("text")  # text.format may hold a json_schema
    return tokens + (prompt.json(text.get("format")) if isinstance(text, dict) else 0)


def _token_inputs(prompt: _Prompt, value, what: str) -> int:
    """A completions prompt or an embeddings input: text, texts, token ids, or lists of ids."""
    if value is None:
        return 0
    if isinstance(value, str):
        return prompt.text(value, what)
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return sum(prompt.text(v, what) for v in value)
        if all(_is_token_ids(v) for v in value):
            return sum(map(len, value))
        if _is_token_ids(value):
            return len(value)
    raise ValueError(f"{what} must be a string, or an array of strings, token ids or token id arrays")


def _is_token_ids(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _completions(prompt: _Prompt, body: dict) -> int:
    return _token_inputs(prompt, body.get("prompt"), "prompt") + prompt.json(body.get("suffix"))


def _embeddings(prompt: _Prompt, body: dict) -> int:
    return _token_inputs(prompt, body.get("input"), "input")


def _anthropic_messages(prompt: _Prompt, body: dict) -> int:
    tokens = REPLY_TOKENS
    if body.get("system") is not None:
        tokens += MESSAGE_TOKENS + prompt.content(body["system"], prompt.block)
    for message in _list(body.get("messages"), "messages"):
        message = _dict(message, "each message")
        tokens += MESSAGE_TOKENS + prompt.json(message.get("role"))
        tokens += prompt.content(message.get("content"), prompt.block)
    if body.get("tools"):
        tokens += ANTHROPIC_TOOLS_TOKENS + sum(map(prompt.anthropic_tool, _list(body["tools"], "tools")))
    return tokens


def _gemini(prompt: _Prompt, body: dict) -> int:
    tokens = REPLY_TOKENS + prompt.tools(body.get("tools"), "tools")
    system = _either(body, "systemInstruction", "system_instruction")
    if isinstance(system, str):
        tokens += MESSAGE_TOKENS + prompt.text(system, "systemInstruction")
    elif system is not None:
        tokens += prompt.gemini_content(system)
    tokens += sum(map(prompt.gemini_content, _list(body.get("contents"), "contents")))
    config = _either(body, "generationConfig", "generation_config")
    if isinstance(config, dict):  # a response schema is part of the prompt
        for key in ("responseSchema", "response_schema", "responseJsonSchema", "response_json_schema"):
            tokens += prompt.json(config.get(key))
    return tokens


APIS = {
    "chat": _chat,
    "responses": _responses,
    "completions": _completions,
    "embeddings": _embeddings,
    "anthropic_messages": _anthropic_messages,
    "gemini": _gemini,
}
