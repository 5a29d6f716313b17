"""Admin tokens in the store (migration 7): create, find by hash, list, revoke.

A name belongs to one live token at a time (a partial unique index); a revoked token keeps its
row, so ``pouch admin-tokens list`` shows who had access, and its name may be given again."""

from __future__ import annotations

from datetime import datetime

import peewee as pw

from pouch.domain.admin_tokens import PREFIX_LENGTH, AdminToken, check_name, check_role, new_token
from pouch.domain.errors import InvalidInput
from pouch.domain.keys import hash_secret
from pouch.store.database import Table, UTCDateTimeField


class AdminTokenRow(Table):
    name = pw.TextField()
    role = pw.TextField()
    prefix = pw.TextField()
    secret_hash = pw.TextField(unique=True)
    created_at = UTCDateTimeField()
    revoked_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "pouch_admin_tokens"


class UnknownToken(InvalidInput):
    """Seen by an operator naming an admin token that does not exist (or is already revoked)."""


class TokenNameTaken(InvalidInput):
    """Seen by an operator giving a new admin token the name of a live one."""


def _token(row: AdminTokenRow) -> AdminToken:
    return AdminToken(id=row.id, name=row.name, role=row.role, prefix=row.prefix, secret_hash=row.secret_hash,
                      created_at=row.created_at, revoked_at=row.revoked_at)


def create(name: str, role: str, now: datetime) -> tuple[AdminToken, str]:
    """A new token and its secret, returned once and stored only as a hash."""
    check_name(name)
    check_role(role)
    secret = new_token()
    try:
        row = AdminTokenRow.create(name=name, role=role, prefix=secret[:PREFIX_LENGTH],
                                   secret_hash=hash_secret(secret), created_at=now)
    except pw.IntegrityError:
        raise TokenNameTaken(f"an admin token named {name!r} already exists (revoke it first, or pick "
                             "another name)") from None
    return _token(row), secret


def get(name_or_id: str) -> AdminToken:
    """The live token of that name, or any token by its id (digits)."""
    text = str(name_or_id).strip()
    if text.isdigit():
        row = AdminTokenRow.get_or_none(AdminTokenRow.id == int(text))
    else:
        row = AdminTokenRow.get_or_none(AdminTokenRow.name == text, AdminTokenRow.revoked_at.is_null())
    if row is None:
        raise UnknownToken(f"no admin token named {text!r} (see `pouch admin-tokens list`)")
    return _token(row)


def by_hash(secret_hash: str) -> AdminToken | None:
    row = AdminTokenRow.get_or_none(AdminTokenRow.secret_hash == secret_hash)
    return _token(row) if row else None


def all_tokens() -> list[AdminToken]:
    return [_token(row) for row in AdminTokenRow.select().order_by(AdminTokenRow.id)]


def revoke(token: AdminToken, now: datetime) -> AdminToken:
    """From now on the token is refused (401); revoking it again changes nothing."""
    AdminTokenRow.update(revoked_at=now).where(AdminTokenRow.id == token.id,
                                               AdminTokenRow.revoked_at.is_null()).execute()
    return _token(AdminTokenRow.get_by_id(token.id))
