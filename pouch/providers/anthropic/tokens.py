"""Counting Messages API prompts, and how Claude's tokens compare with tiktoken's.

Anthropic's tokenizer is not public: Claude prompts are counted with o200k_base and scaled up
(``TOKENIZERS``), with estimates for what Anthropic adds to a prompt that the body does not show.
"""

from __future__ import annotations

import functools
from fractions import Fraction

from pouch.providers.base import Tokenizer
from pouch.tokens.estimates import DOCUMENT_BYTES_PER_TOKEN, TOOL_TOKENS, media_tokens
from pouch.tokens.pieces import MESSAGE_TOKENS, REPLY_TOKENS, Prompt, need_dict, need_list

# Anthropic's tokenizer (Claude 3 to Opus 4.6) needs ~16% (English prose) to ~30% (Python) more
# tokens than o200k_base; the newer one (Opus 4.7 on, Sonnet 5) needs ~30% more than that
# (Anthropic's token-counting docs): up to ~1.69x, so 1.75. Any model named Claude, whoever
# serves it (OpenRouter, a compatible API).
CLAUDE_FACTOR = Fraction(7, 4)
TOKENIZERS = (Tokenizer(lambda name: "claude" in name, "o200k_base", CLAUDE_FACTOR),)

TOOLS_TOKENS = 530  # Anthropic's tool-use system prompt, the largest of any model
BUILTIN_TOOL_TOKENS = 1_300  # bash 245, text editor 700, computer use ~1,234
IMAGE_TOKENS = 5_000  # width x height / 750; Opus 4.7 takes 3.75 MP (older: 1,600)


def _block(prompt: Prompt, block) -> int:
    """One content block of a message, a system prompt or a tool result."""
    block = need_dict(block, "each content block")
    kind = block.get("type")
    count_block = functools.partial(_block, prompt)
    if kind == "text":
        return prompt.text(block.get("text"), "a text block's text")
    if kind == "image":
        return IMAGE_TOKENS
    if kind == "document":
        source = need_dict(block.get("source"), "a document's source")
        if source.get("type") == "text":
            tokens = prompt.text(source.get("data"), "a text document's data")
        elif source.get("type") == "content":
            tokens = prompt.content(source.get("content"), count_block)
        else:  # base64 (a PDF), url, file
            tokens = media_tokens(source.get("data"), DOCUMENT_BYTES_PER_TOKEN)
        return tokens + prompt.json(block.get("title")) + prompt.json(block.get("context"))
    if kind in ("tool_use", "server_tool_use"):
        return TOOL_TOKENS + prompt.json(block.get("name")) + prompt.json(block.get("input"))
    if kind == "tool_result":
        return TOOL_TOKENS + prompt.content(block.get("content"), count_block)
    if kind == "thinking":
        return prompt.text(block.get("thinking"), "a thinking block's thinking")
    return prompt.json(block)


def _tool(prompt: Prompt, tool) -> int:
    tool = need_dict(tool, "each tool")
    # A tool without input_schema is Anthropic-defined (bash, computer, ...): a hidden prompt.
    hidden = TOOL_TOKENS if "input_schema" in tool else BUILTIN_TOOL_TOKENS
    return hidden + prompt.json(tool)


def messages(prompt: Prompt, body: dict) -> int:
    count_block = functools.partial(_block, prompt)
    tokens = REPLY_TOKENS
    if body.get("system") is not None:
        tokens += MESSAGE_TOKENS + prompt.content(body["system"], count_block)
    for message in need_list(body.get("messages"), "messages"):
        message = need_dict(message, "each message")
        tokens += MESSAGE_TOKENS + prompt.json(message.get("role"))
        tokens += prompt.content(message.get("content"), count_block)
    if body.get("tools"):
        tokens += TOOLS_TOKENS + sum(_tool(prompt, tool) for tool in need_list(body["tools"], "tools"))
    return tokens
