"""One Responses WebSocket as pouch follows it (pouch/services/response_socket.py): responses
queued per lane in the order of their creates, each ended once, the way settlement reads it."""

import datetime
import json

from pouch.domain.usage import Usage
from pouch.providers.base import Call
from pouch.providers.openai import OpenAI
from pouch.rules import settlement
from pouch.services import response_socket
from pouch.services.response_socket import Response, Socket
from tests.fakes.controls import Controls
from tests.fakes.openai_shapes import response_events

PROVIDER = OpenAI()
ENDPOINT = PROVIDER.endpoint("GET", "/v1/responses")
AT = datetime.datetime(2026, 11, 27, 12, tzinfo=datetime.UTC)


def socket() -> Socket:
    return Socket(PROVIDER, ENDPOINT, None, observed="abc")


def response(index: int, lane: str | None = None, input_tokens: int = 8) -> Response:
    return Response(index, lane, Call("gpt-4o-mini", True, None), AT, 1000.0, input_tokens=input_tokens)


def events(said: str = "hello there", lane: str | None = None, **controls) -> list[str]:
    body = {"model": "gpt-4o-mini", "input": said}
    return [json.dumps(event if lane is None else {**event, "stream_id": lane})
            for event, _ in response_events(body, Controls(**controls))]


def follow(sock: Socket, texts: list[str]) -> list:
    return [ended for text in texts for ended in sock.follow(text, 1001.0)]


def test_a_response_ends_with_its_completed_usage():
    sock, first = socket(), response(1)
    sock.admitted(first)
    stream = events()
    assert follow(sock, stream[:-1]) == []  # nothing ends before response.completed
    assert first.response_id.startswith("resp_") and first.first_event == 1001.0
    [(ended, ending)] = sock.follow(stream[-1], 1002.0)
    assert ended is first and sock.open() == []
    assert ending.usage == Usage(input_tokens=8, output_tokens=4) and ending.status == 200 and ending.followed
    assert settlement.measure(ending).outcome == "ok"


def test_responses_of_a_lane_end_in_the_order_of_their_creates():
    sock, first, second = socket(), response(1), response(2)
    sock.admitted(first)
    sock.admitted(second)
    ended = follow(sock, events("one") + events("two three"))
    assert [(r.index, e.usage.output_tokens) for r, e in ended] == [(1, 3), (2, 4)]


def test_lanes_interleave_each_in_its_own_order():
    sock, a, b = socket(), response(1, "a"), response(2, "b")
    sock.admitted(a)
    sock.admitted(b)
    mixed = [text for pair in zip(events("aaa", "a"), events("b", "b")) for text in pair]
    ended = follow(sock, mixed)
    assert {r.lane: e.usage.output_tokens for r, e in ended} == {"a": 3, "b": 3}
    assert sock.open() == []


def test_an_error_before_the_response_started_is_a_refusal_of_the_provider():
    sock, first = socket(), response(1)
    sock.admitted(first)
    [(ended, ending)] = sock.follow(json.dumps({"type": "error", "status": 429, "error": {"code": "x"}}), 1001.0)
    assert ended is first and settlement.measure(ending).outcome == "upstream_error"  # not billed


def test_an_error_pouch_cannot_tie_to_one_create_ends_none():
    sock, first, second = socket(), response(1), response(2, input_tokens=9)
    sock.admitted(first)
    sock.admitted(second)
    refused = json.dumps({"type": "error", "status": 400, "error": {"code": "x"}})
    assert sock.follow(refused, 1001.0) == [] and sock.open() == [first, second]  # whose? two are open
    # the provider ran both after all: each ends with its own usage, none unsolicited
    ended = follow(sock, events("one") + events("two three"))
    assert [(r.index, e.usage.output_tokens) for r, e in ended] == [(1, 3), (2, 4)]


def test_an_error_after_an_acknowledgement_went_on_may_be_its_and_ends_nothing():
    sock, first = socket(), response(1)
    sock.admitted(first)
    sock.forwarded_other()  # a response.processed went on after the create
    assert sock.follow(json.dumps({"type": "error", "status": 400, "error": {}}), 1001.0) == []
    assert sock.open() == [first]
    [(_, ending)] = sock.close("gone")
    assert settlement.measure(ending).billed  # the server had it: the cut-short rules charge it


def test_an_error_naming_another_lane_is_not_the_open_creates():
    sock, first = socket(), response(1, "a")
    sock.admitted(first)
    assert sock.follow(json.dumps({"type": "error", "status": 400, "stream_id": "b", "error": {}}), 1001.0) == []
    assert sock.open() == [first]


def test_the_socket_knows_the_responses_it_carried():
    sock, first = socket(), response(1)
    sock.admitted(first)
    follow(sock, events())
    assert sock.knows(first.response_id) and not sock.knows("resp_bogus")
    for n in range(response_socket.MAX_SEEN):
        sock.follow(json.dumps({"type": "response.created", "response": {"id": f"resp_{n}"}}), 1001.0)
    assert not sock.knows(first.response_id) and sock.knows("resp_0") and len(sock.seen_ids) == response_socket.MAX_SEEN


def test_an_error_without_a_status_ends_nothing():
    sock, first = socket(), response(1)
    sock.admitted(first)
    assert sock.follow(json.dumps({"type": "error", "error": {"message": "hm"}}), 1001.0) == []
    assert sock.open() == [first]


def test_an_error_after_the_response_started_leaves_its_end_to_what_follows():
    sock, first = socket(), response(1)
    sock.admitted(first)
    stream = events("one two three four")
    follow(sock, stream[:6])
    assert sock.follow(json.dumps({"type": "error", "status": 500, "error": {}}), 1001.0) == []
    failed = json.loads(stream[-1]) | {"type": "response.failed"}
    [(ended, ending)] = sock.follow(json.dumps(failed), 1001.0)
    assert ended is first and settlement.measure(ending).outcome == "ok"  # what response.failed reports
    assert sock.follow(stream[-1], 1001.0) == [], "a late final event of a settled response is nobody's"


def test_an_error_then_the_close_is_a_stream_cut_short():
    sock, first = socket(), response(1)
    sock.admitted(first)
    follow(sock, events("one two three four")[:6])
    sock.follow(json.dumps({"type": "error", "status": 500, "error": {}}), 1001.0)
    [(_, ending)] = sock.close("closed by the server")
    measured = settlement.measure(ending)
    assert measured.outcome == "cut_short" and measured.billed  # the reservation is charged


def test_a_server_that_does_not_echo_the_lane_speaks_for_the_only_one_open():
    sock, first = socket(), response(1, "a")
    sock.admitted(first)
    [(ended, _)] = follow(sock, events())
    assert ended is first and sock.lanes == {}


def test_closing_mid_response_cuts_it_short_with_what_was_seen():
    sock, started, queued = socket(), response(1), response(2)
    sock.admitted(started)
    sock.admitted(queued)
    follow(sock, events("one two three four five")[:7])  # created, two text deltas
    ended = sock.close("the WebSocket closed by the client")
    assert [r.index for r, _ in ended] == [1, 2] and sock.open() == []
    cut, never_started = ended[0][1], ended[1][1]
    assert cut.followed and cut.error and cut.usage is None and cut.seen_output > 0
    assert settlement.measure(cut).outcome == "cut_short"
    # the server had it and may have started it: what the cut-short rules charge, not nothing
    assert not never_started.followed and never_started.sent and settlement.measure(never_started).billed


def test_a_close_after_the_usage_came_is_charged_the_usage():
    sock, first = socket(), response(1)
    sock.admitted(first)
    stream = events()
    follow(sock, stream[:2])
    first.tracker.event(stream[-1])  # the usage seen, then the socket closes
    [(_, ending)] = sock.close("gone")
    assert ending.usage == Usage(input_tokens=8, output_tokens=4)
    assert settlement.measure(ending).outcome == "cut_after_usage"


def test_a_new_response_on_a_lane_ends_the_one_before():
    sock, first, second = socket(), response(1), response(2)
    sock.admitted(first)
    sock.admitted(second)
    follow(sock, events()[:3])
    successor = json.dumps({"type": "response.created", "response": {"id": "resp_other"}})
    [(ended, ending)] = sock.follow(successor, 1001.0)
    assert ended is first and settlement.measure(ending).outcome == "cut_short"
    assert second.response_id == "resp_other"


def test_a_response_no_create_asked_for_is_still_measured():
    sock = socket()
    *_, completed = events()
    [(ended, ending)] = sock.follow(completed, 1001.0)
    assert ended.index == 0 and ended.reservation is None and ended.call.model == "gpt-4o-mini"
    assert ending.usage.output_tokens == 4
    assert sock.follow(events()[3], 1001.0) == []  # its deltas concern nobody


def test_the_story_says_cost_and_key_first():
    sock = socket()
    sock.stories.append({"model": "gpt-4o-mini", "input_tokens": 8, "output_tokens": 4, "reasoning_tokens": 0,
                         "latency_ms": 12, "outcome": "cut_short"})
    sock.settled, sock.charged_pico, sock.refused = 1, 3_600_000, 1
    sock.last_refusal = {"kind": "budget", "message": "exhausted"}
    story = response_socket.story(sock)
    assert story.startswith("$0.0000036 observed:abc · WebSocket · 1 response")
    assert "1 refused (last: budget: exhausted)" in story and story.endswith("12 ms · cut short")
    assert json.loads(json.dumps(response_socket.snapshot(sock)))["story"] == story
