"""Count a request's prompt tokens before it leaves the gateway, for the budget reservation.

A model is counted with the tiktoken encoding its provider folder's ``Tokenizer`` names:
OpenAI models exactly, with OpenAI's own encodings and the chat formatting of OpenAI's
cookbook; other models approximately, so scale their count with ``input_upper_bound``. A
request body is counted by its shape's ``Api`` (``Endpoint.api``), which the provider folders
define; what tiktoken cannot see is estimated on the high side (``estimates``).

A malformed body raises ``ValueError`` (the gateway answers 400); nothing else is raised for
anything a client can send.
"""

from __future__ import annotations

import math

from pouch.providers import registry
from pouch.providers.base import Tokenizer
from pouch.tokens.encodings import canonical_model, get_encoding
from pouch.tokens.estimates import OTHER_MODELS
from pouch.tokens.pieces import Prompt

__all__ = ["count_prompt", "count_text", "encoding_name", "input_upper_bound", "is_exact", "tokenizer"]


def tokenizer(model: str) -> Tokenizer:
    """How ``model`` is counted: its provider folder's tokenizer, else the default."""
    return registry.tokenizer(canonical_model(model)) or OTHER_MODELS


def encoding_name(model: str) -> str:
    """The tiktoken encoding that counts ``model``'s tokens (exactly or approximately)."""
    return tokenizer(model).encoding


def is_exact(model: str) -> bool:
    """True only for models whose tokenizer tiktoken reproduces exactly (OpenAI's)."""
    return tokenizer(model).exact


def input_upper_bound(model: str, count: int) -> int:
    """The most input tokens ``model`` can bill for a prompt that pouch counted as ``count``."""
    return math.ceil(count * tokenizer(model).factor)


def count_text(model: str, text: str) -> int:
    """Tokens in ``text``; special-token text such as "<|endoftext|>" counts as plain text."""
    return _prompt(model).text(text, "text")


def count_prompt(model: str, body: dict, api: str) -> int:
    """Raw prompt tokens of request ``body`` of shape ``api`` (an ``Endpoint.api``), before any factor."""
    shape = registry.api(api)
    if shape is None:
        raise ValueError(f"cannot count prompts of api {api!r}; known: {', '.join(registry.APIS)}")
    prompt = _prompt(model)
    if not isinstance(body, dict):
        raise ValueError(f"the request body must be an object, not {type(body).__name__}")
    try:
        return shape.count_prompt(prompt, body)
    except RecursionError:
        raise ValueError("the request body is nested too deeply") from None


def _prompt(model: str) -> Prompt:
    name = canonical_model(model)
    found = tokenizer(name)
    return Prompt(name, get_encoding(found.encoding), found.exact)
