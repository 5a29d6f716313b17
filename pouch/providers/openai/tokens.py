"""Counting OpenAI-shaped prompts (chat, Responses, completions, embeddings), and which
tiktoken encoding is each OpenAI model's own.

Chat is counted the way OpenAI's cookbook formats it; the other shapes reuse its pieces. Any
model may be sent in these shapes (compatible vendors serve Llama, Claude, Gemini): estimates
that only hold for OpenAI's models are used only for them (``prompt.exact``).
"""

from __future__ import annotations

import functools
import re

from pouch.providers.base import Tokenizer
from pouch.tokens.encodings import canonical_model
from pouch.tokens.estimates import (
    ANY_IMAGE_TOKENS,
    AUDIO_BYTES_PER_TOKEN,
    DOCUMENT_BYTES_PER_TOKEN,
    TOOL_TOKENS,
    media_tokens,
)
from pouch.tokens.pieces import MESSAGE_TOKENS, NAME_TOKENS, REPLY_TOKENS, Prompt, need_dict, need_list

# OpenAI's models, counted exactly with their own encodings. The boundary after "gpt-4" keeps
# gpt-4o / gpt-4.1 (and an unknown gpt-4.2) out of cl100k.
TOKENIZERS = (
    Tokenizer(re.compile(r"(?:gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-6|o1|o3|o4)(?:$|[-.:])").match,
              "o200k_base"),
    Tokenizer(re.compile(r"(?:gpt-4|gpt-3\.5|gpt-35)(?:$|[-:])|text-embedding-3-|text-embedding-ada-002(?:$|:)").match,
              "cl100k_base"),
)  # fmt: skip

# One OpenAI image of unknown size: (detail "low", detail "high"/"auto"). Tile models cost
# base + tiles x per-tile; after fitting in 2048x2048 and scaling the short side to 768, the
# most tiles is 2 x 4 (a 768x2048 image): gpt-4o 85 + 8 x 170 = 1445 (a square is only 765).
# gpt-5 (70/140) and o1/o3 (75/150) stay under gpt-4o's default. Patch models ignore detail and
# cost up to 1536 patches x a per-model multiplier.
IMAGE_TOKENS = (85, 85 + 8 * 170)
_IMAGE_TOKENS_BY_PREFIX = (
    ("gpt-4o-mini", (2_833, 2_833 + 8 * 5_667)),
    (("gpt-4.1-mini", "gpt-5-mini"), (2_489, 2_489)),  # x1.62
    (("gpt-4.1-nano", "gpt-5-nano"), (3_779, 3_779)),  # x2.46
    ("o4-mini", (2_642, 2_642)),  # x1.72
)
ORIGINAL_IMAGE_TOKENS = 12_000  # detail "original" (gpt-5.4 on): ~10k patches; undocumented


def image_tokens(prompt: Prompt, detail) -> int:
    """One image of unknown size in an OpenAI-shaped request for ``prompt.model``."""
    if not prompt.exact:  # another vendor behind an OpenAI-compatible API: its worst case
        return ANY_IMAGE_TOKENS
    if detail == "original":
        return ORIGINAL_IMAGE_TOKENS
    name = canonical_model(prompt.model)
    costs = (tokens for prefix, tokens in _IMAGE_TOKENS_BY_PREFIX if name.startswith(prefix))
    low, high = next(costs, IMAGE_TOKENS)
    return low if detail == "low" else high


def part(prompt: Prompt, part) -> int:
    """One content part of a chat message or a Responses item."""
    part = need_dict(part, "each content part")
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text", "summary_text", "reasoning_text"):
        return prompt.text(part.get("text"), f"a {kind} part's text")
    if kind == "refusal":
        return prompt.text(part.get("refusal"), "a refusal part's refusal")
    if kind in ("image_url", "input_image"):
        image = part.get("image_url")  # chat: {"url", "detail"}; responses: the URL
        detail = image.get("detail") if isinstance(image, dict) else part.get("detail")
        return image_tokens(prompt, detail)
    if kind == "input_audio":
        audio = need_dict(part.get("input_audio"), "an input_audio part's input_audio")
        return media_tokens(audio.get("data"), AUDIO_BYTES_PER_TOKEN)
    if kind in ("file", "input_file"):
        file = need_dict(part.get("file"), "a file part's file") if kind == "file" else part
        return media_tokens(file.get("file_data"), DOCUMENT_BYTES_PER_TOKEN)
    return prompt.json(part)


def chat(prompt: Prompt, body: dict) -> int:
    count_part = functools.partial(part, prompt)
    total = REPLY_TOKENS + prompt.tools(body.get("tools"), "tools") + prompt.tools(body.get("functions"), "functions")
    for message in need_list(body.get("messages"), "messages"):
        total += MESSAGE_TOKENS
        for key, value in need_dict(message, "each message").items():
            if value is None:
                continue
            if key == "content":
                total += prompt.content(value, count_part)
            elif key == "tool_calls":
                for call in need_list(value, "tool_calls"):
                    call = need_dict(call, "each tool call")
                    function = call.get("function")  # a custom tool call has none
                    total += prompt.call(function, "a tool call") if function else prompt.json(call)
            elif key == "function_call":
                total += prompt.call(value, "function_call")
            elif key == "name":
                total += NAME_TOKENS + prompt.text(value, "a message's name")
            else:  # role, tool_call_id, refusal, ...: the cookbook counts every value
                total += prompt.json(value)
    response_format = body.get("response_format")  # a json_schema is part of the prompt
    return total + (prompt.json(response_format) if isinstance(response_format, dict) else 0)


def _item(prompt: Prompt, item) -> int:
    """One item of a Responses request's ``input``."""
    item = need_dict(item, "each input item")
    kind = item.get("type", "message")
    count_part = functools.partial(part, prompt)
    if kind == "message":
        return MESSAGE_TOKENS + prompt.json(item.get("role")) + prompt.content(item.get("content"), count_part)
    if kind == "function_call":
        return prompt.call(item, "a function_call item")
    if kind == "function_call_output" and isinstance(item.get("output"), list):
        return TOOL_TOKENS + prompt.content(item["output"], count_part)
    return TOOL_TOKENS + prompt.json(item)  # text outputs, reasoning, built-in tool calls, ...


def responses(prompt: Prompt, body: dict) -> int:
    tokens = REPLY_TOKENS + prompt.tools(body.get("tools"), "tools")
    if body.get("instructions") is not None:
        tokens += MESSAGE_TOKENS + prompt.text(body["instructions"], "instructions")
    items = body.get("input")
    if isinstance(items, str):
        tokens += MESSAGE_TOKENS + prompt.text(items, "input")
    elif items is not None:
        tokens += sum(_item(prompt, item) for item in need_list(items, "input"))
    text = body.get("text")  # text.format may hold a json_schema
    return tokens + (prompt.json(text.get("format")) if isinstance(text, dict) else 0)


def _token_inputs(prompt: Prompt, value, what: str) -> int:
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


def completions(prompt: Prompt, body: dict) -> int:
    return _token_inputs(prompt, body.get("prompt"), "prompt") + prompt.json(body.get("suffix"))


def embeddings(prompt: Prompt, body: dict) -> int:
    return _token_inputs(prompt, body.get("input"), "input")
