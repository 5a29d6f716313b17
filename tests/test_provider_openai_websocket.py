"""The Responses API over WebSocket as pouch reads it (pouch/providers/openai/websocket.py): the
client's messages, the server's events, the error event a refusal becomes, and mock events."""

import json

import pytest

from pouch.domain import errors
from pouch.domain.usage import Usage
from pouch.providers.base import WEBSOCKET, Call
from pouch.providers.openai import OpenAI
from pouch.providers.openai import mock as openai_mock
from pouch.providers.openai import websocket
from pouch.providers.openai.streams import ResponsesStreamTracker

PROVIDER = OpenAI()


def test_the_handshake_is_a_websocket_endpoint_of_the_responses_api():
    endpoint = PROVIDER.endpoint("GET", "/v1/responses")
    assert (endpoint.name, endpoint.metering, endpoint.api) == ("responses.websocket", WEBSOCKET, "responses")
    assert PROVIDER.endpoint("POST", "/v1/responses").name == "responses"  # the HTTP form is unchanged


# --- client messages ------------------------------------------------------------------------


def test_a_create_is_the_body_of_post_responses_without_its_type():
    text = json.dumps({"type": "response.create", "model": "gpt-5", "input": "hi", "stream_id": "lane-1"})
    kind, body = websocket.read_client_message(text)
    assert kind == websocket.CREATE
    assert body == {"model": "gpt-5", "input": "hi", "stream_id": "lane-1"}
    assert websocket.lane_of(body) == "lane-1"
    assert json.loads(websocket.create_message(body)) == json.loads(text)
    assert list(json.loads(websocket.create_message(body)))[0] == "type"  # the type first, as clients send it


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '"response.create"', "{}", '{"type": 3}', '{"type": ""}'])
def test_a_message_the_server_would_not_read_is_a_bad_request(text):
    with pytest.raises(errors.BadRequest):
        websocket.read_client_message(text)


@pytest.mark.parametrize("data, said", [
    # a second type: a first-wins server reads a create pouch would have passed as an acknowledgement
    ('{"type":"response.create","model":"m","input":"hi","type":"response.processed"}', "'type' twice"),
    # Go's encoding/json matches names ignoring case: "Type" is the type it reads
    ('{"type":"response.processed","Type":"response.create","model":"m"}', "'type' and 'Type'"),
    ('{"type":"response.create","model":"m","max_output_tokens":9999,"max_output_tokens":16}',
     "'max_output_tokens' twice"),
    ('{"type":"response.create","model":"m","temperature":NaN}', "NaN"),
    ('{"type":"response.create","model":"m","input":"\\ud800"}', "lone UTF-16 surrogate"),
    ('\ufeff{"type":"response.create","model":"m"}', "byte order mark"),
    ('{"type":"response.create","Model":"m"}', "'Model' is not one of this API's fields"),
])
def test_every_message_is_read_by_the_strict_rules_of_a_request_body(data, said):
    with pytest.raises(errors.BadRequest) as refused:
        websocket.read_client_message(data.encode())
    assert said in refused.value.message and refused.value.message.startswith("a Responses WebSocket message")


def test_an_acknowledgement_names_its_response():
    assert websocket.acknowledged({"response_id": "resp_1"}) == "resp_1"
    for body in ({}, {"response_id": 7}, {"response_id": ""}):
        with pytest.raises(errors.BadRequest):
            websocket.acknowledged(body)


def test_acknowledgements_are_free_and_steering_is_not():
    assert "response.processed" in websocket.FREE
    assert not {"response.create", "response.steer", "response.inject", "response.append"} & websocket.FREE


@pytest.mark.parametrize("body, lane", [({}, None), ({"stream_id": "a"}, "a"), ({"stream_id": 7}, None)])
def test_the_lane_is_the_stream_id(body, lane):
    assert websocket.lane_of(body) == lane


# --- server events --------------------------------------------------------------------------


def test_deltas_are_typed_without_being_parsed():
    delta = '{"type":"response.output_text.delta","item_id":"m","delta":"hi"}'
    assert websocket.read_server_event(delta) == ("response.output_text.delta", None, None)
    laned = '{"type":"response.output_text.delta","delta":"hi","stream_id":"b"}'
    assert websocket.read_server_event(laned) == ("response.output_text.delta", "b", None)


@pytest.mark.parametrize("kind", ["response.created", "response.completed", "response.incomplete",
                                  "response.failed", "error"])
def test_starts_ends_and_errors_are_parsed(kind):
    text = json.dumps({"type": kind, "response": {"id": "resp_1"}, "stream_id": "c"})
    event = websocket.read_server_event(text)
    assert (event.kind, event.lane, event.event["response"]["id"]) == (kind, "c", "resp_1")


@pytest.mark.parametrize("event, status", [({"status": 429}, 429), ({"status_code": 400}, 400), ({}, None),
                                           ({"status": "429"}, None), ({"status": True}, None)])
def test_an_error_ends_a_request_only_with_a_status(event, status):
    assert websocket.error_status(event) == status


# --- refusals ---------------------------------------------------------------------------------


def test_a_refusal_is_the_error_event_codex_reads_as_its_http_status():
    # codex-rs/codex-api/src/endpoint/responses_websocket.rs: {"type": "error", "status", "error": {...}, "headers"}
    refusal = errors.BudgetExhausted("budget of key 'alice' exhausted", {"x-should-retry": "false"})
    event = json.loads(websocket.error_event(PROVIDER.error(refusal)))
    assert event == {
        "type": "error", "status": 429,
        "error": {"message": "budget of key 'alice' exhausted", "type": "insufficient_quota", "param": None,
                  "code": "insufficient_quota"},
        "headers": {"x-should-retry": "false"},
    }


def test_a_refusal_on_a_lane_says_which():
    event = json.loads(websocket.error_event(PROVIDER.error(errors.ModelNotAllowed("no")), lane="b"))
    assert (event["status"], event["error"]["code"], event["stream_id"]) == (403, "model_not_allowed", "b")
    assert "headers" not in event  # none to tell


# --- mock events ------------------------------------------------------------------------------


def test_mock_events_are_a_whole_response_with_its_usage():
    call, usage = Call("gpt-4o-mini", True, None), Usage(input_tokens=9, output_tokens=3)
    events = openai_mock.response_events(call, {"model": "gpt-4o-mini", "input": "hi"}, usage, "echo: hi")
    kinds = [event["type"] for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    tracker = ResponsesStreamTracker()
    for event in events:
        tracker.event(websocket.event_message(event, "lane").decode())
    assert tracker.usage() == usage and tracker.output_text() == "echo: hi"
    assert json.loads(websocket.event_message(events[0], "lane"))["stream_id"] == "lane"
    assert "stream_id" not in json.loads(websocket.event_message(events[0], None))


def test_a_mock_cut_at_its_cap_is_incomplete():
    events = openai_mock.response_events(Call("gpt-4o-mini", True, 3), {}, Usage(input_tokens=1, output_tokens=3),
                                         "one two three")
    assert events[-1]["type"] == "response.incomplete"
