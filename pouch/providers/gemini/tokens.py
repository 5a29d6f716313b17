"""Counting Gemini API prompts (generateContent, and the embeddings that borrow its ``contents``).

Gemini's tokenizer is not public, and no rule here says how its models compare with tiktoken:
they get ``pouch.tokens``'s default estimate. Gemini's REST API accepts both spellings of every
field (``systemInstruction`` and ``system_instruction``), so both are read.
"""

from __future__ import annotations

from pouch.tokens.estimates import AUDIO_BYTES_PER_TOKEN, DOCUMENT_BYTES_PER_TOKEN, media_tokens
from pouch.tokens.pieces import MESSAGE_TOKENS, REPLY_TOKENS, Prompt, need_dict, need_list

IMAGE_TOKENS = 2_240  # Gemini 3 "ultra high" (default "high" is 1,120; 2.x: 258 a tile)


def _either(obj: dict, camel: str, snake: str):
    return obj.get(camel, obj.get(snake))


def _content(prompt: Prompt, content) -> int:
    content = need_dict(content, "each content")
    parts = need_list(content.get("parts", []), "a content's parts")
    return MESSAGE_TOKENS + prompt.json(content.get("role")) + sum(_part(prompt, part) for part in parts)


def _part(prompt: Prompt, part) -> int:
    part = need_dict(part, "each part")
    if "text" in part:
        return prompt.text(part["text"], "a part's text")
    media = _either(part, "inlineData", "inline_data") or _either(part, "fileData", "file_data")
    if media is None:
        return prompt.json(part)  # function calls and responses, code, ...
    mime = _either(need_dict(media, "a part's inlineData or fileData"), "mimeType", "mime_type")
    mime = mime if isinstance(mime, str) else ""
    if mime.startswith("image/"):
        return IMAGE_TOKENS
    audio = mime.startswith(("audio/", "video/"))
    per_token = AUDIO_BYTES_PER_TOKEN if audio else DOCUMENT_BYTES_PER_TOKEN
    return media_tokens(media.get("data"), per_token)  # fileData has no data: the cap


def generate_content(prompt: Prompt, body: dict) -> int:
    tokens = REPLY_TOKENS + prompt.tools(body.get("tools"), "tools")
    system = _either(body, "systemInstruction", "system_instruction")
    if isinstance(system, str):
        tokens += MESSAGE_TOKENS + prompt.text(system, "systemInstruction")
    elif system is not None:
        tokens += _content(prompt, system)
    tokens += sum(_content(prompt, content) for content in need_list(body.get("contents"), "contents"))
    config = _either(body, "generationConfig", "generation_config")
    if isinstance(config, dict):  # a response schema is part of the prompt
        for key in ("responseSchema", "response_schema", "responseJsonSchema", "response_json_schema"):
            tokens += prompt.json(config.get(key))
    return tokens
