"""Gemini's own free endpoints answered by pouch itself (a mock key's requests never leave):
``countTokens`` from pouch's own count, the model list and a model from the price table, in
the shapes the google-genai SDK parses."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote

from pouch.domain.errors import BadRequest
from pouch.providers.base import Endpoint, Reply
from pouch.providers.local import Local, ModelCard, json_reply

_MODEL = re.compile(r"/v1(?:beta|alpha)?/models/([^/:]+)")
_GENERATE = ("generateContent", "countTokens")
_EMBED = ("embedContent", "batchEmbedContents", "countTokens")


def answer(endpoint: Endpoint, local: Local, not_found: Callable[[str], Reply]) -> Reply | None:
    if endpoint.name == "countTokens":
        return _count_tokens(local)
    if endpoint.name == "models.list":
        return json_reply({"models": [_model(card) for card in sorted(local.models(), key=lambda c: c.id)]})
    if endpoint.name == "models.get":
        name = _model_name(local)
        card = local.lookup(name)
        return json_reply(_model(card)) if card else not_found(f"models/{name} is not found (pouch answers a "
                                                                "mock key from its price table)")
    return None


def _count_tokens(local: Local) -> Reply:
    """``{"totalTokens": n}``: what a mock's answer to the same contents would report as input.
    The body holds ``contents``, or a whole ``generateContentRequest``."""
    body = local.body
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    request = body.get("generateContentRequest", body.get("generate_content_request"))
    if request is not None and not isinstance(request, dict):
        raise BadRequest("'generateContentRequest' must be an object")
    total = local.count(_model_name(local), request if request is not None else body, "gemini")
    return json_reply({"totalTokens": total})


def _model_name(local: Local) -> str:
    match = _MODEL.match(local.path)
    if match is None:
        raise BadRequest(f"{local.path} names no model")
    return unquote(match.group(1))


def _model(card: ModelCard) -> dict:
    model = {"name": f"models/{card.id}", "displayName": card.id,
             "supportedGenerationMethods": list(_EMBED if card.mode == "embedding" else _GENERATE)}
    if card.max_input_tokens:
        model["inputTokenLimit"] = card.max_input_tokens
    if card.max_output_tokens:
        model["outputTokenLimit"] = card.max_output_tokens
    return model
