"""Key lookups for the hot path: by secret hash, cached briefly, bounded in size.

Misses are cached too, so a client hammering the gateway with made-up keys costs one
store query per key per TTL, and the cache never grows past ``max_entries``.
"""

from __future__ import annotations

import collections
import logging
import time

from pouch.domain import errors
from pouch.domain.keys import Key
from pouch.domain.periods import utcnow
from pouch.services.store_thread import store_thread
from pouch.store import keys as key_store

log = logging.getLogger(__name__)


class KeyCache:
    def __init__(self, ttl: float = 5.0, max_entries: int = 10_000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[str, tuple[float, Key | None]] = collections.OrderedDict()

    def get(self, secret_hash: str) -> tuple[bool, Key | None]:
        """(found, key): found is False when the store must be asked."""
        entry = self._entries.get(secret_hash)
        if entry is None or time.monotonic() - entry[0] > self.ttl:
            return False, None
        self._entries.move_to_end(secret_hash)
        return True, entry[1]

    def put(self, secret_hash: str, key: Key | None) -> None:
        self._entries[secret_hash] = (time.monotonic(), key)
        self._entries.move_to_end(secret_hash)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    @staticmethod
    def load(secret_hash: str) -> Key | None:
        """The store query behind a miss (run it off the event loop)."""
        return key_store.by_hash(secret_hash)


class KeyResolver:
    """Secret hash -> a usable key, the one way both the keys link and proxy authentication
    find a key: cached lookups off the event loop, then revoked / expired / auto-renew."""

    def __init__(self):
        self.cache = KeyCache()

    def reset(self) -> KeyCache:
        """A fresh cache (a gateway starting in this process): nothing carried over."""
        self.cache = KeyCache()
        return self.cache

    async def lookup(self, secret_hash: str) -> Key | None:
        found, key = self.cache.get(secret_hash)
        if not found:
            try:
                key = await store_thread.run(KeyCache.load, secret_hash)
            except Exception as e:
                log.error("pouch: key lookup failed: %s", e)
                raise errors.StoreUnavailable("the gateway cannot reach its key store; try again shortly") from e
            self.cache.put(secret_hash, key)
        return key

    async def check(self, key: Key) -> Key:
        """The key if it may be used now (renewed first when it expired and auto-renews), else InvalidKey."""
        if key.revoked:
            raise errors.InvalidKey(f"key '{key.name}' has been revoked")
        now = utcnow()
        if key.expired(now) and key.auto_renew:
            try:
                key = await store_thread.run(key_store.renew_if_expired, key, now)
            except Exception as e:
                log.error("pouch: renewing key %s failed: %s", key.name, e)
                raise errors.StoreUnavailable("the gateway cannot reach its key store; try again shortly") from e
            self.cache.put(key.secret_hash, key)
        if key.expired(now):
            raise errors.InvalidKey(f"key '{key.name}' expired at {key.expires_at:%Y-%m-%d %H:%M} UTC")
        return key


keys = KeyResolver()  # one per gateway process: the keys link and the perimeter share its cache
