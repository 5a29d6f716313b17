"""What a provider folder is given to answer a free endpoint itself (``Provider.answer``): a
mock key's request never leaves the gateway, so its token counts, model lists and model
lookups are answered from pouch's own count and price table, in the provider's shape.

The folders never reach for the price table or the tokenizer themselves: the chain gathers
them here (``pouch.services.local_answers``), so a folder's answers are pure functions of a
``Local``.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable

from pouch.providers.base import Reply
from pouch.providers.mocking import dumps

LOCAL_HEADERS = {"content-type": "application/json", "x-pouch-local": "true"}


@dataclasses.dataclass(frozen=True, slots=True)
class ModelCard:
    """A model as a local model list shows it, from its price-table entry."""

    id: str
    created: datetime.datetime  # the entry's date (when pouch learnt the price): providers list a creation date
    mode: str  # chat, embedding, ...
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Local:
    """The request and what pouch knows to answer it.

    ``path``: without its query. ``body``: the parsed JSON body, None when it has none.
    ``models()``: the provider's models in the price table. ``lookup(name)``: the model a
    request for ``name`` would be priced as (a card named ``name``), None when pouch has no
    price for it. ``count(model, body, api)``: the body's input tokens as a mock's usage counts
    them (exact for OpenAI models, pouch's upper bound for the others); BadRequest when the
    body cannot be read.
    """

    path: str
    body: dict | None
    models: Callable[[], tuple[ModelCard, ...]]
    lookup: Callable[[str], ModelCard | None]
    count: Callable[[str, dict, str], int]


def json_reply(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    """A JSON answer pouch wrote itself (``x-pouch-local: true`` says so)."""
    return Reply(status, dumps(body), LOCAL_HEADERS | (headers or {}))


def rfc3339(moment: datetime.datetime) -> str:
    """``2025-09-29T00:00:00Z``, as the providers write times."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
