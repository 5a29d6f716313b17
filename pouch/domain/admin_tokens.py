"""Admin tokens: who may read (viewer) or change (admin) keys through the admin API.

Like a pouch key, a token is 256 random bits shown once and stored only as its SHA-256 hash
(``pouch.domain.keys.hash_secret``). Its prefix, ``pouch-admin-``, starts like a pouch key's on
purpose: a token pasted where a client's key belongs is then refused by the gateway as an
unknown pouch key, and never forwarded to a provider (``pouch_unknown_keys=observe`` forwards
credentials it does not recognise), and it is redacted wherever pouch keys are.
"""

from __future__ import annotations

import dataclasses
import secrets
from datetime import datetime

from pouch.domain import keys
from pouch.domain.errors import InvalidInput

TOKEN_PREFIX = "pouch-admin-"
PREFIX_LENGTH = len(TOKEN_PREFIX) + 4  # what lists show: "pouch-admin-Ab3d"
ROLES = ("admin", "viewer")  # viewer: GET only; admin: everything


@dataclasses.dataclass(frozen=True, slots=True)
class AdminToken:
    id: int
    name: str
    role: str
    prefix: str
    secret_hash: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def may_write(self) -> bool:
        return self.role == "admin"

    def json(self) -> dict:
        """As ``pouch admin-tokens list --json`` shows it: never the secret, nor its hash."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "prefix": self.prefix,
            "created_at": self.created_at.isoformat(),
            "revoked": self.revoked,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> str:
    return keys.check_name(name, "token")


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"bad role {role!r}: admin (reads and changes) or viewer (reads only)")
    return role
