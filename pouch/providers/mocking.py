"""What every provider folder's mock is made of: the text an echo mock answers with, that
text cut into stream deltas, compact JSON, and embedding vectors."""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct


def last_user_text(turns: object) -> str:
    """The last thing the user said in ``turns``: a list of messages (chat, Anthropic), items
    (Responses) or contents (Gemini), a list of prompts, or one prompt."""
    if isinstance(turns, list) and turns and all(isinstance(t, dict) for t in turns):
        users = [t for t in turns if t.get("role", "user") == "user"]
        turns = (users or turns)[-1].get("content", users[-1].get("parts") if users else "")
    elif isinstance(turns, list) and turns and isinstance(turns[0], str):
        turns = turns[-1]
    return _text_of(turns)


def _text_of(content: object) -> str:
    """Text of a message's content: a string, or a list of parts with text in them."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (part.get("text") for part in content if isinstance(part, dict))
        return " ".join(part for part in parts if isinstance(part, str))
    if isinstance(content, dict):
        return _text_of(content.get("parts") or content.get("text") or "")
    return ""


def pieces(text: str) -> list[str]:
    """Word-sized deltas, each with its leading whitespace, as tokens usually come."""
    return re.findall(r"\s*\S+|\s+", text)


def dumps(value: object) -> bytes:
    """JSON as providers send it: compact, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def unit_vector(seed: bytes, dimensions: int) -> list[float]:
    """A unit vector (as providers' embeddings are) that depends only on ``seed``."""
    raw = struct.unpack(f"<{dimensions}H", hashlib.shake_256(seed).digest(2 * dimensions))
    values = [v / 32767.5 - 1.0 for v in raw]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]
