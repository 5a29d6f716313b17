"""The names one model goes by: what a client may send for a model the table prices.

A name resolves to an entry by exact match first, then with what sellers and SDKs add around
a model's name taken away — never by prefix, so ``gpt-4`` is not ``gpt-4o``:

- provider prefixes: ``openai/``, ``models/`` (Gemini), ``publishers/google/models/`` (Vertex);
  on OpenRouter, ``anthropic/``, ``openai/``, ``google/``, ``x-ai/`` name the vendor's own entry
  (``OPENROUTER_VENDORS``).
  Not ``openrouter/``: that names a seller, priced on its own;
- OpenRouter's dotted Claude versions: ``claude-sonnet-4.5`` is ``claude-sonnet-4-5``;
- snapshot suffixes, which name a dated copy of the same model at the same price:
  ``-2024-08-06`` (OpenAI), ``-20250929`` and ``@20250929`` (Anthropic, Vertex), ``@001``
  (Vertex versions), ``-05-06`` (Gemini previews), ``-0309`` (xAI, also before
  ``-reasoning`` / ``-non-reasoning``: ``grok-4.20-0309-reasoning``; old OpenAI snapshots such
  as ``gpt-4-0613``), and ``-latest``. Not ``-preview`` (previews are priced apart from GA
  models) and not Mistral's ``-2512`` (a version priced on its own, listed by name).
"""

from __future__ import annotations

import re

PREFIXES = frozenset({"openai", "anthropic", "gemini", "google", "vertex_ai", "models", "publishers"})
# OpenRouter's slugs for the vendors that serve their own closed models there, at their own
# prices ("OpenRouter passes through the pricing of the underlying providers"). Not open-weight
# models, which OpenRouter routes to other hosts priced apart: neither their vendors (deepseek/,
# meta-llama/, qwen/, mistralai/) nor the open models of these (openai/gpt-oss-*, google/gemma-*).
OPENROUTER_VENDORS = {"anthropic": "anthropic", "openai": "openai", "google": "gemini", "x-ai": "xai"}
OPEN_WEIGHTS = re.compile(r"^(gpt-oss|gemma)\b")
OPENROUTER_PASSES_THROUGH = ("OpenRouter passes the vendor's own price through "
                             "(https://openrouter.ai/docs/faq, read 2026-11-27)")
_SNAPSHOT = re.compile(
    r"(-20\d\d-\d\d-\d\d|[-@]20\d{6}|@\d{3}|-(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])|-latest)"
    r"(?=(-reasoning|-non-reasoning)?$)")
_CLAUDE_DOT = re.compile(r"(?<=\d)\.(?=\d)")


def candidate_names(model: str) -> list[str]:
    """The names to look ``model`` up by, in order: exact, then unwrapped, then its family."""
    name = model.strip().lower()
    names = [name]
    head, _, rest = name.partition("/")
    while rest and head in PREFIXES:
        name = rest
        head, _, rest = name.partition("/")
    names.append(name)
    if name.startswith("claude-"):
        name = _CLAUDE_DOT.sub("-", name)
        names.append(name)
    names.append(_SNAPSHOT.sub("", name, count=1))
    return list(dict.fromkeys(names))
