"""``pouch prices check``: where pouch's table and a public price map disagree, and why.

Every entry of the table (each dated version, each alias, each retirement) is compared field
by field with the map's entry for the same provider and model name: the token prices, the
long-context tiers, the context limits, and the retirement date (the map's
``deprecation_date``). A difference the entry explains in ``differs_from_map`` is documented;
any other is drift — a price that changed upstream, or a mistake — and makes the check fail.
Models the map does not have are listed apart: they are priced from their own sources.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import importlib.resources
import json
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

from pouch.domain.errors import InvalidInput
from pouch.pricing.litellm_import import MODES, convert_entry, provider_name
from pouch.pricing.price import PRICE_FIELDS, Price, Retirement, per_million_text, tier_json
from pouch.pricing.price_file import Entry
from pouch.pricing.table import effective_from

REFERENCE = "litellm-model-prices-1.110.2.json.gz"


@dataclasses.dataclass(frozen=True, slots=True)
class Difference:
    provider: str
    model: str  # the name compared: the entry's model or one of its aliases
    effective: datetime.datetime | None
    field: str
    ours: object
    theirs: object
    why: str | None  # the entry's reason, None: undocumented

    def json(self) -> dict:
        return {"provider": self.provider, "model": self.model,
                "from": self.effective.isoformat() if self.effective else None, "field": self.field,
                "ours": self.ours, "map": self.theirs, "documented": self.why}


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    differences: list[Difference]
    not_in_map: list[tuple[str, str]]  # (provider, model) priced from their own sources
    compared: int  # entries (and aliases) found in the map

    @property
    def undocumented(self) -> list[Difference]:
        return [d for d in self.differences if d.why is None]


def reference_map() -> dict:
    """The shipped copy of the public map (LiteLLM's, see reference/README.md)."""
    data = importlib.resources.files(__package__).joinpath("reference", REFERENCE).read_bytes()
    return json.loads(gzip.decompress(data))


def read_map(path: Path) -> dict:
    try:
        data = path.read_bytes()
        document = json.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read price map {path}: {e}") from None
    if not isinstance(document, dict):
        raise InvalidInput(f"{path} is not a LiteLLM-format price map (expected an object of models)")
    return document


def index_map(litellm: dict) -> dict[tuple[str, str], dict]:
    """The map's entries by (our provider name, lower-case model): converted prices, plus the
    retirement date. An entry keyed without its provider prefix wins over a prefixed copy."""
    index: dict[tuple[str, str], dict] = {}
    for key, entry in litellm.items():
        if not isinstance(entry, dict) or entry.get("mode") not in MODES:
            continue
        provider = provider_name(str(entry.get("litellm_provider", "")))
        if not provider:
            continue
        converted = convert_entry(key, entry, provider) or {"model": key.partition("/")[2] or key}
        converted["retired"] = entry.get("deprecation_date")
        name = (provider, converted["model"].lower())
        if name not in index or "/" not in key:
            index[name] = converted
    return index


def compare(entries: Iterable[Entry], litellm: dict) -> Report:
    index = index_map(litellm)
    entries = list(entries)
    retired = {}  # (provider, name) -> our retirement date
    for entry in entries:
        if isinstance(entry, Retirement):
            for name in (entry.model, *entry.aliases):
                retired[(entry.provider, name.lower())] = entry.effective.date().isoformat()
    reasons: dict[tuple[str, str], dict[str, str]] = {}  # a "retired" reason may sit on any entry of the model
    for entry in entries:
        for name in (entry.model, *entry.aliases):
            reasons.setdefault((entry.provider, name.lower()), {}).update(entry.differs_from_map)
    latest: dict[tuple[str, str], Entry] = {}  # each model's last dated entry: its retirement date is compared there
    for entry in entries:
        name = (entry.provider, entry.model.lower())
        if name not in latest or effective_from(entry) >= effective_from(latest[name]):
            latest[name] = entry
    differences, missing, compared = [], [], 0
    for entry in entries:
        for name in (entry.model, *entry.aliases):
            theirs = index.get((entry.provider, name.lower()))
            if theirs is None:
                if isinstance(entry, Price):
                    missing.append((entry.provider, name))
                continue
            compared += 1
            why = dict(entry.differs_from_map)
            fields = _fields(entry, theirs) if isinstance(entry, Price) else []
            if entry is latest[(entry.provider, entry.model.lower())]:  # once per model
                ours_retired = retired.get((entry.provider, name.lower()))
                fields.append(("retired", ours_retired, theirs.get("retired")))
            for field, ours, their_value in fields:
                if ours != their_value:
                    reason = why.get(field) or (reasons[(entry.provider, name.lower())].get(field)
                                                if field == "retired" else None)
                    differences.append(Difference(entry.provider, name, entry.effective, field, ours,
                                                  their_value, reason))
    return Report(differences, sorted(set(missing)), compared)


def _fields(price: Price, theirs: dict) -> list[tuple[str, object, object]]:
    rows = [(f, per_million_text(getattr(price, f)), _decimal(theirs.get(f))) for f in PRICE_FIELDS]
    rows.append(("tiers", [tier_json(t) for t in price.tiers], [_their_tier(t) for t in theirs.get("tiers", [])]))
    rows += [(f, getattr(price, f), theirs.get(f)) for f in ("max_input_tokens", "max_output_tokens")]
    if price.mode == "embedding":
        rows = [r for r in rows if r[0] != "output"]
    return rows


def _decimal(text: object) -> str | None:
    """The map's per-1M string ("2.50") as ``per_million_text`` writes ours ("2.5")."""
    return None if text is None else format(Decimal(str(text)).normalize(), "f")


def _their_tier(tier: dict) -> dict:
    return {k: (v if k == "above_input_tokens" else _decimal(v)) for k, v in tier.items()}
