"""A free endpoint answered by pouch itself, for a request that must not leave the gateway (a
mock key's, or every request under pouch_mock=all): the provider folder writes the answer in
its shape (``Provider.answer``) from what is gathered here, its models in the price table and
pouch's own token count (``pouch.providers.local``)."""

from __future__ import annotations

import asyncio
import datetime

from pouch.domain.errors import BadRequest
from pouch.pricing.price import Price
from pouch.providers.base import Endpoint, Provider, Reply
from pouch.providers.local import Local, ModelCard
from pouch.services.prices import price_table
from pouch.services.prompt import OFF_LOOP_BYTES
from pouch.tokens.count import count_prompt, input_upper_bound, is_exact


async def answer(provider: Provider, endpoint: Endpoint, path: str, body: dict | None, at: datetime.datetime,
                 size: int = 0) -> Reply | None:
    """The provider's own answer to the request, or None when pouch cannot answer it. ``at``:
    when the request was made (the prices in effect then); ``size``: the body's bytes (a big
    prompt is counted off the event loop, as every prompt is)."""
    local = Local(path.split("?", 1)[0], body, lambda: models(provider.name),
                  lambda name: lookup(name, provider.name, at), count)
    if size > OFF_LOOP_BYTES:
        return await asyncio.to_thread(provider.answer, endpoint, local)
    return provider.answer(endpoint, local)


def models(provider: str) -> tuple[ModelCard, ...]:
    """The provider's models in the price table (retired ones left out)."""
    return tuple(card(price, price.model) for price in price_table() if price.provider == provider)


def lookup(name: str, provider: str, at: datetime.datetime) -> ModelCard | None:
    """``name`` if a request for it would be priced (as ``provider``'s model, or a snapshot or
    alias of one), else None: a mock key can call exactly the models it can look up."""
    price = price_table().resolve(name, provider, at)
    return card(price, name) if price is not None else None


def card(price: Price, name: str) -> ModelCard:
    created = price.effective or datetime.datetime.combine(price.as_of, datetime.time(), datetime.UTC)
    return ModelCard(name, created, price.mode, price.max_input_tokens, price.max_output_tokens)


def count(model: str, body: dict, api: str) -> int:
    """Input tokens as a mock's usage reports them (``pouch.services.prompt`` counts a metered
    request so): exact for OpenAI models, the documented upper bound for the others."""
    try:
        counted = count_prompt(model, body, api)
    except ValueError as e:
        raise BadRequest(f"cannot read the prompt: {e}") from None
    return counted if is_exact(model) else input_upper_bound(model, counted)
