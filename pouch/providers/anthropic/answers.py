"""Anthropic's free endpoints answered by pouch itself (a mock key's requests never leave):
``count_tokens`` from pouch's own count, the model list and a model from the price table,
in the shapes the anthropic SDK parses."""

from __future__ import annotations

import re
from urllib.parse import unquote

from pouch.providers import json_body
from pouch.providers.base import Reply
from pouch.providers.local import Local, ModelCard, json_reply, rfc3339

_DATE = re.compile(r"-\d{8}$")  # a snapshot's: claude-sonnet-4-5-20250929


def count_tokens(local: Local) -> Reply:
    """``{"input_tokens": n}``: the count a mock's Messages answer would report as its input."""
    model = json_body.model_of(local.body)
    return json_reply({"input_tokens": local.count(model, local.body, "anthropic_messages")})


def models_list(local: Local) -> Reply:
    """Every Claude model the price table knows, newest first, as one page."""
    cards = sorted(local.models(), key=lambda card: (card.created, card.id), reverse=True)
    data = [_model(card) for card in cards]
    return json_reply({"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                       "last_id": data[-1]["id"] if data else None})


def model(local: Local, not_found) -> Reply:
    """The model the path names, or ``not_found(message)``: Anthropic's 404."""
    name = unquote(local.path.rpartition("/")[2])
    card = local.lookup(name)
    return json_reply(_model(card)) if card else not_found(f"model: {name}")


def display_name(model_id: str) -> str:
    """``claude-sonnet-4-6`` -> ``Claude Sonnet 4.6``, as Anthropic names its models (a
    snapshot's date left out)."""
    words: list[str] = []
    for part in _DATE.sub("", model_id).split("-"):
        if part.isdigit() and words and words[-1][-1].isdigit():
            words[-1] += "." + part  # 4-6 is version 4.6
        elif part:
            words.append(part.capitalize())
    return " ".join(words)


def _model(card: ModelCard) -> dict:
    return {"type": "model", "id": card.id, "display_name": display_name(card.id),
            "created_at": rfc3339(card.created)}
