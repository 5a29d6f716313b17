"""Who is calling the admin API: ``Authorization: Bearer <admin token>``, checked against the
store's hashes, and a limit on wrong tokens per client address.

Only the header counts: no cookie, no query parameter, so a page on another site can make a
browser send nothing that authenticates (and the API sends no CORS headers, so it cannot read
an answer either). A token is 256 random bits, so guessing is hopeless anyway; the limit slows a
client that tries and makes it show in the log. It never stands in a valid token's way: the
token is looked up first (one indexed query), and only wrong ones count, so wrong tokens sent
from the admin's own address (a TLS proxy in front, any local process) cannot lock the admin out.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import OrderedDict

from pouch.admin import store
from pouch.domain.admin_tokens import AdminToken
from pouch.domain.keys import hash_secret
from pouch.store import admin_tokens

log = logging.getLogger(__name__)


class Refused(Exception):
    """Seen by an admin API client without a valid token (401), or after too many wrong ones (429)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class FailedAttempts:
    """Wrong tokens per client address, as a leaky bucket: ``burst`` at once, then one every
    ``every`` seconds. Bounded: the addresses heard from least recently are forgotten first."""

    def __init__(self, burst: int = 10, every: float = 6.0, max_addresses: int = 10_000, clock=time.monotonic):
        self.burst = burst
        self.every = every
        self.max_addresses = max_addresses
        self.clock = clock
        self._level: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (failures, when)

    def _current(self, address: str) -> float:
        level, when = self._level.get(address, (0.0, self.clock()))
        return max(0.0, level - (self.clock() - when) / self.every)

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try a token again; 0 when it may now."""
        level = self._current(address)
        return 0.0 if level < self.burst else (level - self.burst + 1) * self.every

    def failed(self, address: str) -> None:
        level = self._current(address) + 1
        self._level[address] = (level, self.clock())
        self._level.move_to_end(address)
        while len(self._level) > self.max_addresses:
            self._level.popitem(last=False)
        if level >= self.burst:
            log.warning("pouch admin: %d wrong admin tokens from %s; refusing it for a while", int(level), address)


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class Authenticator:
    def __init__(self, attempts: FailedAttempts | None = None):
        self.attempts = attempts or FailedAttempts()

    async def check(self, header: str | None, address: str) -> AdminToken:
        """The live token the header carries, else Refused. Raises the store's errors as they are."""
        token = bearer(header)
        if token is None:
            raise Refused(401, "send an admin token: 'Authorization: Bearer <token>' (create one with "
                               "`pouch admin-tokens create --name NAME`)")
        presented = hash_secret(token)
        found = await store.run(admin_tokens.by_hash, presented)
        # The lookup is by hash (nothing to learn from its timing); the comparison, constant-time
        # all the same, keeps a store that matched loosely from letting another token in.
        if found is not None and hmac.compare_digest(found.secret_hash, presented) and not found.revoked:
            return found
        wait = self.attempts.retry_after(address)
        if wait:
            raise Refused(429, f"too many wrong admin tokens from {address}: try again in {int(wait) + 1} s",
                          retry_after=int(wait) + 1)
        self.attempts.failed(address)
        raise Refused(401, "this admin token is not valid (unknown or revoked)")
