"""Keys in the store: create, find by hash, change, revoke, rotate, auto-renew."""

from __future__ import annotations

from datetime import datetime

import peewee as pw

from pouch.domain.errors import InvalidInput
from pouch.domain.keys import Key, display_prefix, hash_secret, new_secret
from pouch.domain.money import Money
from pouch.domain.periods import Period
from pouch.store.database import KeyRow, TeamRow, database, naive
from pouch.store.teams import to_team

# Key attributes an operator may change with `keys update` (name included).
MUTABLE = {
    "name", "budget", "period", "rpm", "tpm", "max_concurrent", "models",
    "expires_at", "auto_renew", "mock", "alert_at", "webhook",
    "team", "user_budget", "user_period", "user_rpm", "require_user",
}


class UnknownKey(InvalidInput):
    """Seen by an operator naming a key that does not exist."""


class KeyNameTaken(InvalidInput):
    """Seen by an operator giving a key the name another key has."""


def to_key(row: KeyRow) -> Key:
    return Key(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        secret_hash=row.secret_hash,
        created_at=row.created_at,
        anchor=row.anchor,
        budget=None if row.budget_pico is None else Money(row.budget_pico),
        period=Period.parse(row.period),
        rpm=row.rpm,
        tpm=row.tpm,
        max_concurrent=row.max_concurrent,
        models=tuple(m for m in row.models.split(",") if m),
        expires_at=row.expires_at,
        auto_renew=row.auto_renew,
        mock=row.mock,
        revoked=row.revoked,
        alert_at=tuple(int(p) for p in (row.alert_at or "").split(",") if p),
        webhook=row.webhook,
        team=to_team(row.team) if row.team_id is not None else None,
        user_budget=None if row.user_budget_pico is None else Money(row.user_budget_pico),
        user_period=Period.parse(row.user_period),
        user_rpm=row.user_rpm,
        require_user=row.require_user,
    )


def _columns(changes: dict) -> dict:
    columns = {}
    for field, value in changes.items():
        if field not in MUTABLE:
            raise InvalidInput(f"{field} cannot be changed")
        if field in ("budget", "user_budget"):
            columns[f"{field}_pico"] = None if value is None else value.pico
        elif field == "user_period":
            columns["user_period"] = str(value)
        elif field == "team":  # a Team, or None: no team
            columns["team"] = None if value is None else value.id
        elif field == "period":
            columns["period"] = str(value)
        elif field == "models":
            columns["models"] = ",".join(value)
        elif field == "alert_at":
            columns["alert_at"] = ",".join(map(str, value)) or None
        else:
            columns[field] = value
    return columns


def create(name: str, now: datetime, **attributes) -> tuple[Key, str]:
    """A new key and its secret. The secret is returned once and stored only as a hash."""
    secret = new_secret()
    try:
        row = KeyRow.create(
            name=name,
            prefix=display_prefix(secret),
            secret_hash=hash_secret(secret),
            created_at=now,
            anchor=now,
            updated_at=now,
            **_columns(attributes),
        )
    except pw.IntegrityError:
        raise KeyNameTaken(f"a key named {name!r} already exists") from None
    return to_key(row), secret


def _select():
    """Keys with their teams, in one query."""
    return KeyRow.select(KeyRow, TeamRow).join(TeamRow, pw.JOIN.LEFT_OUTER)


def get(name_or_id: str | int) -> Key:
    """A key by name, or by id when given digits."""
    text = str(name_or_id).strip()
    where = KeyRow.id == int(text) if text.isdigit() else KeyRow.name == text
    row = _select().where(where).first()
    if row is None:
        raise UnknownKey(f"no key named {text!r} (see `pouch keys list`)")
    return to_key(row)


def by_hash(secret_hash: str) -> Key | None:
    row = _select().where(KeyRow.secret_hash == secret_hash).first()
    return to_key(row) if row else None


def all_keys(team_id: int | None = None) -> list[Key]:
    """Every key, or the keys of one team."""
    query = _select().order_by(KeyRow.id)
    if team_id is not None:
        query = query.where(KeyRow.team == team_id)
    return [to_key(row) for row in query]


def update(key: Key, now: datetime, **changes) -> Key:
    try:
        KeyRow.update(**_columns(changes), updated_at=now).where(KeyRow.id == key.id).execute()
    except pw.IntegrityError:
        raise KeyNameTaken(f"a key named {changes.get('name')!r} already exists") from None
    return get(key.id)


def revoke(key: Key, now: datetime) -> Key:
    KeyRow.update(revoked=True, updated_at=now).where(KeyRow.id == key.id).execute()
    return get(key.id)


def rotate(key: Key, now: datetime) -> tuple[Key, str]:
    """A new secret for the same key (budget and history kept); the old secret stops working."""
    secret = new_secret()
    KeyRow.update(
        prefix=display_prefix(secret), secret_hash=hash_secret(secret), updated_at=now
    ).where(KeyRow.id == key.id).execute()
    return get(key.id), secret


def renew_if_expired(key: Key, now: datetime) -> Key:
    """Auto-renewal: an expired auto-renew key is extended by whole periods and its spend
    restarts (the anchor moves to the renewal instant, so a fresh budget window begins).

    The periods missed are counted in one step, however many. The update is conditional on
    the expiry it read, so concurrent renewals (threads or gateways) extend it once.
    """
    if not (key.auto_renew and key.expired(now)) or key.revoked:
        return key
    renewed_at, expires = key.period.catch_up(key.expires_at, now)
    with database.atomic():
        KeyRow.update(expires_at=expires, anchor=renewed_at, updated_at=now).where(
            KeyRow.id == key.id, KeyRow.expires_at == naive(key.expires_at)
        ).execute()
    return get(key.id)
