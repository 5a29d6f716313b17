"""How every fake provider makes up its reply: "echo: " + what the user said, cut to the request's
output cap, and split into the pieces a stream sends; and its embeddings."""

from __future__ import annotations

import hashlib
import json
import random
import re

from pouch.tokens.count import count_text

from .controls import Controls


def text_of(content) -> str:
    """A message's text: a string, or the text parts (OpenAI), blocks (Anthropic) or parts
    (Gemini) of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def last_user_text(messages) -> str:
    if isinstance(messages, str):  # responses' `input` may be a bare string
        return messages
    users = [m for m in messages or () if isinstance(m, dict) and m.get("role") == "user"]
    return text_of(users[-1].get("content")) if users else ""


def reply_text(controls: Controls, model: str, said: str, max_tokens) -> tuple[str, bool]:
    """The reply and whether ``max_tokens`` cut it."""
    text = controls.reply if controls.reply is not None else f"echo: {said}"
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        return text, False
    words = text.split()
    truncated = False
    # Truncate by words, then drop words until the tokens fit too: a real model never bills
    # more output than the cap, and budget tests rely on that.
    while words and (len(words) > max_tokens or count_text(model, " ".join(words)) > max_tokens):
        words.pop()
        truncated = True
    return (" ".join(words) if truncated else text), truncated


def calls_made(controls: Controls, bound) -> int:
    """How many server tool calls the fake performs: ``tool_calls``, held to the request's
    ``bound`` (None: unbounded) as a real provider holds it, unless ``ignore_bounds``."""
    if controls.ignore_bounds or not isinstance(bound, int) or isinstance(bound, bool):
        return controls.tool_calls
    return max(0, min(controls.tool_calls, bound))


def pieces(text: str, chunks: int | None) -> list[str]:
    """``text`` split at word starts into ``chunks`` pieces (one per word by default)."""
    words = re.findall(r"\s*\S+", text)
    chunks = min(chunks or len(words), len(words))
    return ["".join(words[i * len(words) // chunks : (i + 1) * len(words) // chunks]) for i in range(chunks)]


def sse(data, event: str | None = None, end: str = "\n\n") -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data if isinstance(data, str) else json.dumps(data)}{end}".encode()


def vector(value, dimensions: int) -> list[float]:
    """A deterministic embedding: the same input always embeds the same way."""
    seed = hashlib.sha256(json.dumps(value).encode()).digest()
    rng = random.Random(seed)
    return [round(rng.uniform(-1, 1), 6) for _ in range(dimensions)]
