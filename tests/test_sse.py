import pytest

from pouch.providers.sse import SSEEvent, SSESplitter

# Every line-ending style, a comment, a named event, multi-line data, a multi-byte character
# right where a chunk boundary can cut it, and an unterminated last event.
SAMPLE = (
    b'data: {"text":"h\xc3\xa9llo \xe2\x82\xac"}\n\n'
    b": keep-alive comment\n\n"
    b"event: response.created\r\ndata: first\r\ndata:  second\r\n\r\n"
    b"data: cr only\r\r"
    b"id: 7\nretry: 100\ndata\nevent: x\n\n"
    b"\n"
    b"data: mixed\r\n\n"
    b"data: [DONE]\n\n"
    b"data: unterminated"
)
EXPECTED = [
    SSEEvent(None, '{"text":"héllo €"}', b'data: {"text":"h\xc3\xa9llo \xe2\x82\xac"}\n\n'),
    SSEEvent(None, "", b": keep-alive comment\n\n"),
    SSEEvent("response.created", "first\n second", b"event: response.created\r\ndata: first\r\ndata:  second\r\n\r\n"),
    SSEEvent(None, "cr only", b"data: cr only\r\r"),
    SSEEvent("x", "", b"id: 7\nretry: 100\ndata\nevent: x\n\n"),
    SSEEvent(None, "mixed", b"\ndata: mixed\r\n\n"),
    SSEEvent(None, "[DONE]", b"data: [DONE]\n\n"),
]


def feed_all(chunks):
    splitter = SSESplitter()
    events = [event for chunk in chunks for event in splitter.feed(chunk)]
    return events, splitter.tail


def test_whole_sample():
    events, tail = feed_all([SAMPLE])
    assert events == EXPECTED
    assert tail == b"data: unterminated"
    assert b"".join(event.raw for event in events) + tail == SAMPLE


@pytest.mark.parametrize("cut", range(1, len(SAMPLE)))
def test_split_anywhere(cut):
    assert feed_all([SAMPLE[:cut], SAMPLE[cut:]]) == (EXPECTED, b"data: unterminated")


@pytest.mark.parametrize("cut", range(1, len(SAMPLE), 7))
def test_split_three_ways(cut):
    chunks = [SAMPLE[:cut], SAMPLE[cut : cut + 5], SAMPLE[cut + 5 :]]
    assert feed_all(chunks) == (EXPECTED, b"data: unterminated")


def test_one_byte_at_a_time():
    assert feed_all([SAMPLE[i : i + 1] for i in range(len(SAMPLE))]) == (EXPECTED, b"data: unterminated")


def test_empty_feed_changes_nothing():
    splitter = SSESplitter()
    assert splitter.feed(b"data: a") == []
    assert splitter.feed(b"") == []
    assert splitter.feed(b"\n\n") == [SSEEvent(None, "a", b"data: a\n\n")]


def test_final_carriage_return_waits_for_the_next_byte():
    splitter = SSESplitter()
    # "\r\n\r" could still become "\r\n\r\n": the event is not known to be complete yet.
    assert splitter.feed(b"data: a\r\n\r") == []
    assert splitter.feed(b"\n") == [SSEEvent(None, "a", b"data: a\r\n\r\n")]
    assert splitter.tail == b""


@pytest.mark.parametrize(
    "line, data",
    [
        (b"data:no-space", "no-space"),
        (b"data:  two-spaces", " two-spaces"),
        (b"data: has: colon", "has: colon"),
        (b"data:", ""),
        (b"data: \xff", "\ufffd"),  # invalid UTF-8 is replaced, never raised
    ],
)
def test_field_values(line, data):
    assert SSESplitter().feed(line + b"\n\n")[0].data == data


def test_end_returns_the_unterminated_event_once():
    splitter = SSESplitter()
    splitter.feed(b"data: done\n\ndata: last\r\n")
    assert splitter.end() == [SSEEvent(None, "last", b"data: last\r\n")]
    assert splitter.tail == b""
    assert splitter.end() == []
