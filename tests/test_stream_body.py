"""pouch/services/stream_body.py: the first bytes of a stream kept, the rest counted and marked."""

import pytest

from pouch.services.stream_body import KeptStream, marker, truncation


@pytest.mark.parametrize("chunks, limit, kept, dropped", [
    ([b"abc", b"def"], 10, b"abcdef", 0),
    ([b"abc", b"def"], 6, b"abcdef", 0),  # exactly the limit: whole
    ([b"abc", b"def"], 4, b"abcd", 2),  # cut inside a chunk
    ([b"abc", b"def", b"gh"], 3, b"abc", 5),  # a chunk after the cut is not kept either
    ([b"abc"], 0, b"", 3),
    ([b"", b"abc", b""], 3, b"abc", 0),
])
def test_keeps_the_first_bytes_and_counts_the_rest(chunks, limit, kept, dropped):
    stream = KeptStream(limit)
    for chunk in chunks:
        stream.add(chunk)
    body = stream.body()
    if dropped:
        assert body == kept + marker(len(kept), dropped)
        assert truncation(body) == (kept, len(kept), dropped)
    else:
        assert body == kept and truncation(body) is None


def test_the_marker_is_an_sse_comment_naming_the_option():
    text = marker(4194304, 17).decode()
    assert text == ("\n\n: pouch kept the first 4194304 bytes of this stream and dropped the other 17 "
                    "(pouch_stream_bodies)\n\n")


def test_a_marker_counts_only_at_the_very_end():
    assert truncation(marker(3, 4) + b"data: more\n\n") is None
    assert truncation(b"data: x\n\n") is None


def test_the_buffer_is_released_once_the_body_is_taken():
    """The stream callable (and so this object) lives as long as the flow: the body is kept
    once, on the flow, not twice."""
    stream = KeptStream(100)
    stream.add(b"x" * 50)
    assert stream.body() == b"x" * 50
    assert stream.body() == b""
