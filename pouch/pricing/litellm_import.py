"""Import LiteLLM's public price map into an operator override file (``$POUCH_HOME/prices.json``).

LiteLLM's ``model_prices_and_context_window.json`` gives per-token USD prices as JSON floats
(``2.5e-06``). Each float is read through its shortest repr, ``Decimal(str(x))``, which is the
decimal its authors wrote, and written as an exact per-1M string ("2.50"). A zero price is read
as missing (the map's aliases fall back to $0): a chat model without a non-zero input and output
price is skipped and reported, never imported as free.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import tempfile
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

from pouch.domain.errors import InvalidInput
from pouch.pricing.price_file import parse_prices, read_prices

logger = logging.getLogger(__name__)

# LiteLLM field -> ours. Both extended cache-write lifetimes (OpenAI's 12h, Anthropic's 1h) map to
# cache_write_1h; the 1h field comes last so it wins where both are given.
_FIELDS = {
    "input_cost_per_token": "input",
    "cache_read_input_token_cost": "cached_input",
    "cache_creation_input_token_cost": "cache_write_5m",
    "cache_creation_input_token_cost_above_12hr": "cache_write_1h",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h",
    "output_cost_per_token": "output",
    "output_cost_per_reasoning_token": "reasoning",
}
MODES = {"chat": "chat", "responses": "chat", "embedding": "embedding"}
_PROVIDERS = {"text-completion-openai": "openai", "bedrock_converse": "bedrock", "fireworks_ai": "fireworks",
              "together_ai": "together"}


TODAY = "today"


def import_litellm(source: Path, dest: Path, providers: set[str] | None = None, effective: str | None = TODAY) -> int:
    """Merge the priced chat and embedding models of ``source`` into ``dest``; return how many.

    ``providers`` limits the import to those providers (our names: "openai", "gemini", "groq", ...).
    The imported prices apply from ``effective`` (an ISO date or date-time; default: today, UTC),
    so requests made before stay priced as they were: a model whose price changed gets a new
    dated entry beside its earlier ones, a model whose price did not keeps its entries as they
    are. ``effective=None`` imports prices that apply at every time, replacing the model's
    earlier entries. Entries for other models are kept; ``dest`` is replaced atomically.
    """
    if effective == TODAY:
        effective = datetime.datetime.now(datetime.UTC).date().isoformat()
    try:
        litellm = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidInput(f"cannot read LiteLLM price map {source}: {e}") from None
    if not isinstance(litellm, dict):
        raise InvalidInput(f"{source} is not a LiteLLM price map (expected an object of models)")
    today = datetime.date.today().isoformat()
    imported, unpriced = {}, []
    for key, entry in litellm.items():
        if key == "sample_spec" or not isinstance(entry, dict) or entry.get("mode") not in MODES:
            continue
        provider = provider_name(str(entry.get("litellm_provider", "")))
        if not provider or (providers is not None and provider not in providers):
            continue
        converted = convert_entry(key, entry, provider)
        if converted is None:
            unpriced.append(key)
            continue
        source_note = f"; {entry['source']}" if isinstance(entry.get("source"), str) else ""
        converted |= {"source": f"imported from {source.name}{source_note}", "as_of": today}
        imported[(provider, converted["model"].lower())] = converted
    if unpriced:
        logger.warning("%s: skipped %d models without a price: %s", source, len(unpriced), ", ".join(unpriced))

    merged = {_version(e): e for e in (_entries(dest) if dest.exists() else [])}
    for name, entry in imported.items():
        versions = sorted((e for e in merged.values() if _version(e)[:2] == name), key=_from)
        if versions and _prices_of(versions[-1]) == _prices_of(entry):
            continue  # unchanged: its entries keep their dates
        if effective is None:
            merged = {v: e for v, e in merged.items() if v[:2] != name}
        else:
            entry["from"] = effective
        merged[_version(entry)] = entry
    document = {"models": sorted(merged.values(), key=lambda e: (e["provider"], e["model"], _from(e)))}
    parse_prices(document, str(dest))  # never write a file the gateway would refuse to load
    _write_atomically(dest, json.dumps(document, indent=2, default=str) + "\n")
    return len(imported)


def provider_name(litellm_provider: str) -> str:
    """Our name for a LiteLLM provider: vertex_ai-* -> vertex_ai, text-completion-openai -> openai."""
    if litellm_provider.startswith("vertex_ai"):
        return "vertex_ai"  # Vertex prices differ from the Gemini API's at times: kept apart
    return _PROVIDERS.get(litellm_provider, litellm_provider)


def convert_entry(key: str, entry: dict, provider: str) -> dict | None:
    """One LiteLLM entry in our format (without source and as_of), or None if it has no price."""
    mode = MODES[entry["mode"]]
    prices, tiers = {}, {}
    for theirs, ours in _FIELDS.items():
        above = re.compile(re.escape(theirs) + r"_above_(\d+)k_tokens")
        for field, value in entry.items():
            level = prices if field == theirs else None
            if match := above.fullmatch(field):
                level = tiers.setdefault(int(match[1]) * 1000, {})
            if level is not None and (text := per_million(value)):
                level[ours] = text
    if "input" not in prices or (mode == "chat" and "output" not in prices):
        return None
    if mode == "embedding":
        prices.pop("output", None)
    for level in [prices, *tiers.values()]:
        if level.get("reasoning") == level.get("output", prices.get("output")):
            level.pop("reasoning", None)  # reasoning defaults to the output price
    converted = {"model": _model_name(key, entry, provider), "provider": provider, "mode": mode} | prices
    if tiers := [{"above_input_tokens": n} | level for n, level in sorted(tiers.items()) if level]:
        converted["tiers"] = tiers
    for field in ("max_input_tokens", "max_output_tokens"):
        if isinstance(entry.get(field), int) and not isinstance(entry[field], bool) and entry[field] > 0:
            converted[field] = entry[field]
    return converted


def per_million(per_token: object) -> str | None:
    """2.5e-06 (USD per token) -> "2.50" (USD per 1M tokens); None for zero, negative or junk."""
    if isinstance(per_token, bool) or not isinstance(per_token, int | float):
        return None
    # Whole pico-dollars per token, as Money holds them; only float noise is finer than that.
    pico = (Decimal(str(per_token)) * 10**12).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    if not pico.is_finite() or pico <= 0:
        return None
    value = (pico / 10**6).normalize()
    if value.as_tuple().exponent > -2:
        value = value.quantize(Decimal("0.01"))  # "2.50", "10.00": read like a price list
    return format(value, "f")


def _model_name(key: str, entry: dict, provider: str) -> str:
    head, _, rest = key.partition("/")  # "gemini/gemini-2.5-pro" -> "gemini-2.5-pro"
    return rest if rest and head in {entry.get("litellm_provider"), provider} else key


def _version(entry: dict) -> tuple[str, str, str]:
    return entry["provider"].lower(), entry["model"].lower(), str(entry.get("from", ""))


def _from(entry: dict) -> str:
    return str(entry.get("from", ""))


def _prices_of(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k not in ("source", "as_of", "from", "differs_from_map")}


def _entries(path: Path) -> list[dict]:
    read_prices(path)  # refuses (InvalidInput) a malformed file rather than overwrite it
    return json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)["models"]


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
