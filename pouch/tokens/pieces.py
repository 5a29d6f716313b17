"""The pieces every request shape's prompt is counted from: text, free-form JSON, tool
definitions and calls, message content. Each provider folder's ``tokens`` module counts its
own shapes with these (``Api.count_prompt``).

A body that is not the shape it claims raises ``ValueError`` (the gateway answers 400); the
strict accessors here say where.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import tiktoken

from pouch.tokens.estimates import TOOL_TOKENS, TOOLS_TOKENS

# The chat formatting of OpenAI's cookbook; other vendors' is similar, and their counts are
# scaled up anyway.
MESSAGE_TOKENS = 3  # per message: <|start|>{role}<|message|>{content}<|end|>
NAME_TOKENS = 1  # per message "name"
REPLY_TOKENS = 3  # every reply is primed with <|start|>assistant<|message|>


def need_dict(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object, not {type(value).__name__}")
    return value


def need_list(value, what: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be an array, not {type(value).__name__}")
    return value


class Prompt:
    """Counts the pieces of one prompt with one model's encoding.

    ``model`` is the canonical name; ``exact`` says whether the encoding is the model's own
    (an estimate for what tiktoken cannot see may depend on it).
    """

    def __init__(self, model: str, encoding: tiktoken.Encoding, exact: bool):
        self.model = model
        self.exact = exact
        self.encode = encoding.encode_ordinary  # = encode(disallowed_special=())

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
        definitions = (need_dict(tool, f"each of {what}") for tool in need_list(tools, what))
        return TOOLS_TOKENS + sum(TOOL_TOKENS + self.json(tool) for tool in definitions)

    def call(self, call, what: str) -> int:
        call = need_dict(call, what)
        name = self.text(call.get("name", ""), f"{what}'s name")
        return TOOL_TOKENS + name + self.json(call.get("arguments"))

    def content(self, content, count_part: Callable[[object], int]) -> int:
        """A string, or a list of parts (blocks), each counted by ``count_part``."""
        if content is None or isinstance(content, str):
            return self.json(content)
        if not isinstance(content, list):
            raise ValueError(f"content must be a string or an array, not {type(content).__name__}")
        return sum(map(count_part, content))
