"""OpenAI's free endpoints answered by pouch itself (a mock key's requests never leave): the
model list and a model from the price table, ``responses/input_tokens`` from pouch's own
count, in the shapes the openai SDKs parse. Served wherever OpenAI's API is (Azure, the
compatible vendors, Gemini's OpenAI-compatible API: ``id_prefix`` "models/")."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote

from pouch.providers import json_body
from pouch.providers.base import Endpoint, Reply
from pouch.providers.local import Local, ModelCard, json_reply


def answer(endpoint: Endpoint, local: Local, owner: str, not_found: Callable[[str], Reply],
           id_prefix: str = "") -> Reply | None:
    """The endpoint's answer; None for one pouch cannot answer (stored responses and chat
    completions, moderations: a mock key has none)."""
    if endpoint.name == "models.list":
        cards = sorted(local.models(), key=lambda card: card.id)
        return json_reply({"object": "list", "data": [_model(card, owner, id_prefix) for card in cards]})
    if endpoint.name == "models.retrieve":
        name = unquote(local.path.rpartition("/")[2])
        card = local.lookup(name.removeprefix(id_prefix))
        if card is None:
            return not_found(f"The model '{name}' does not exist (pouch answers a mock key from its price table)")
        return json_reply(_model(card, owner, id_prefix))
    if endpoint.name == "responses.input_tokens":
        model = json_body.model_of(local.body)
        return json_reply({"object": "response.input_tokens",
                           "input_tokens": local.count(model, local.body, "responses")})
    return None


def _model(card: ModelCard, owner: str, id_prefix: str) -> dict:
    return {"id": id_prefix + card.id, "object": "model", "created": int(card.created.timestamp()),
            "owned_by": owner}
