"""Key lookups for the hot path: by secret hash, cached briefly, bounded in size.

Misses are cached too, so a client hammering the gateway with made-up keys costs one
store query per key per TTL, and the cache never grows past ``max_entries``.
"""

from __future__ import annotations

import collections
import time

from pouch.domain.keys import Key
from pouch.store import keys as key_store


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
