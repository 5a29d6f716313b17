"""What is kept of a streamed LLM response for mitmweb's LLM view and saved flows.

mitmproxy keeps no body of a streamed response unless ``store_streamed_bodies`` is on, and
then keeps all of it: a long generation, times every stream in flight, is unbounded memory.
Pouch keeps the first ``limit`` bytes of each LLM stream, as the client received them, and
drops the rest; a kept body that lost bytes ends with a marker saying how many (an SSE
comment line, which SSE readers ignore). Metering never reads this copy: the usage link
follows the whole stream as it passes.
"""

from __future__ import annotations

import re

# A marker is matched only at the very end of a body, where pouch puts it.
_MARKER = re.compile(rb"\n\n: pouch kept the first (\d+) bytes of this stream and dropped the other (\d+) "
                     rb"\(pouch_stream_bodies\)\n\n\Z")


def marker(kept: int, dropped: int) -> bytes:
    return b"\n\n: pouch kept the first %d bytes of this stream and dropped the other %d (pouch_stream_bodies)\n\n" % (
        kept, dropped)


def truncation(body: bytes) -> tuple[bytes, int, int] | None:
    """(the kept bytes without the marker, bytes kept, bytes dropped) when ``body`` ends with
    pouch's marker; None for a whole body."""
    found = _MARKER.search(body, max(0, len(body) - 200))
    if found is None:
        return None
    return body[: found.start()], int(found[1]), int(found[2])


class KeptStream:
    """The first ``limit`` bytes of one stream; the rest is counted, not kept."""

    __slots__ = ("limit", "_kept", "dropped")

    def __init__(self, limit: int):
        self.limit = limit
        self._kept = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self._kept)
        if room >= len(chunk):
            self._kept += chunk
        else:
            if room > 0:
                self._kept += chunk[:room]
            self.dropped += len(chunk) - max(room, 0)

    def body(self) -> bytes:
        """The kept body (with the marker if bytes were dropped); the buffer is released, since
        the stream callable holding this object lives as long as the flow."""
        kept = bytes(self._kept)
        self._kept = bytearray()
        return kept + marker(len(kept), self.dropped) if self.dropped else kept
