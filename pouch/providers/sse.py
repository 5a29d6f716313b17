"""An incremental Server-Sent-Events splitter shared by every provider's stream tracker.

Chunks arrive cut at arbitrary bytes (inside a UTF-8 character, between "\\r" and "\\n"), so
bytes are buffered until a blank line closes an event, and only whole events are decoded.
This runs for every chunk of every stream, so it splits with ``bytes.split`` / one regex
search per event rather than walking bytes in Python.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class SSEEvent(NamedTuple):
    name: str | None  # the last ``event:`` field, None when absent
    data: str  # the ``data:`` lines joined with "\n" ("" when the event has none)
    raw: bytes  # the event's bytes exactly as received, terminating blank line included


# A line ending followed by an empty line's ending. "\r" alone ends a line only when no "\n"
# follows, so "\r\n" is never read as two endings.
_EVENT_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")


class SSESplitter:
    """Feed raw body bytes, get whole events; the joined ``raw`` of every event returned,
    followed by ``tail``, is always exactly the bytes fed (comment-only and empty events are
    returned too, so a caller forwarding raw bytes loses nothing)."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    @property
    def tail(self) -> bytes:
        """Bytes received that do not yet form a whole event."""
        return self._pending

    def feed(self, data: bytes) -> list[SSEEvent]:
        buffer = self._pending + data if self._pending else data
        if b"\r" not in buffer:
            # Nearly every server ends lines with "\n" only: one C-level split does it all.
            blocks = buffer.split(b"\n\n")
            self._pending = blocks.pop()
            return [_parse(block, block + b"\n\n") for block in blocks]
        events = []
        start = 0
        while match := _EVENT_END.search(buffer, start):
            end = match.end()
            if end == len(buffer) and buffer[-1] == 13:
                break  # a final "\r" may be the first half of "\r\n": wait for the next byte
            events.append(_parse(buffer[start : match.start()], buffer[start:end]))
            start = end
        self._pending = buffer[start:]
        return events

    def end(self) -> list[SSEEvent]:
        """The stream is over: the tail as a last event (if any bytes remain), and reset.

        The SSE spec drops an unterminated last event; a gateway that bills from it is more
        useful lenient, since some servers omit the final blank line.
        """
        tail = self._pending
        if not tail:
            return []
        event = _parse(tail.rstrip(b"\r\n"), tail)
        self._pending = b""
        return [event]


def _parse(block: bytes, raw: bytes) -> SSEEvent:
    """Fields of one event (``block`` is the event without its terminating line endings)."""
    if block.startswith(b"data: ") and b"\n" not in block and b"\r" not in block:
        return SSEEvent(None, block[6:].decode("utf-8", "replace"), raw)  # the usual event
    if b"\r" in block:
        block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    name = None
    data = []
    for line in block.split(b"\n"):
        field, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    return SSEEvent(name, b"\n".join(data).decode("utf-8", "replace"), raw)
