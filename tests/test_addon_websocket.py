"""The websocket link (addons/websocket.py), hook by hook with the chain's other links and a real
store: each response.create admitted before it goes on, refusals dropped and answered with the
error event, each response settled once from the server's events."""

import json

import pytest
from mitmproxy import http
from mitmproxy.websocket import WebSocketData, WebSocketMessage
from wsproto.frame_protocol import Opcode

from addons.websocket import METADATA, ResponsesWebSocket
from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.services import socket_admission
from pouch.services.store_thread import store_thread
from pouch.store import keys as key_store
from pouch.store import ledger, refusals
from pouch.store.database import ReservationRow, UsageRow
from tests.addon_helpers import MODEL, create_key, gateway, openai_flow
from tests.fakes.controls import Controls
from tests.fakes.openai_shapes import response_events

UPGRADE = {"upgrade": "websocket", "connection": "Upgrade", "sec-websocket-version": "13",
           "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="}


class Link:
    """The chain with the websocket link, and what the link injected to the client."""

    def __init__(self, gw):
        self.gw, self.injected = gw, []
        self.link = ResponsesWebSocket(inject=lambda flow, data: self.injected.append(json.loads(data)))
        gw.tctx.master.addons.add(self.link)

    def open(self, secret: str) -> http.HTTPFlow:
        flow = self.gw.request(openai_flow("/v1/responses", method="GET", secret=secret, headers=UPGRADE))
        assert flow.response is None, flow.response and flow.response.content
        self.gw.respond(flow, http.Response.make(101, b"", {"upgrade": "websocket", "connection": "Upgrade"}))
        flow.websocket = WebSocketData()
        self.gw.hook("websocket_start", flow)
        return flow

    def client(self, flow, message: dict | bytes) -> WebSocketMessage:
        content = message if isinstance(message, bytes) else json.dumps(message).encode()
        sent = WebSocketMessage(Opcode.BINARY if isinstance(message, bytes) else Opcode.TEXT, True, content)
        flow.websocket.messages.append(sent)
        self.gw.hook("websocket_message", flow)
        return sent

    def server(self, flow, events) -> None:
        for event in events:
            flow.websocket.messages.append(WebSocketMessage(Opcode.TEXT, False, json.dumps(event).encode()))
            self.gw.hook("websocket_message", flow)

    def close(self, flow, by_client: bool = True) -> None:
        flow.websocket.closed_by_client, flow.websocket.close_code = by_client, 1000
        self.gw.hook("websocket_end", flow)


@pytest.fixture
def ws(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-provider-key")
    with gateway(pouch_key_cache="0") as gw:
        yield Link(gw)


def create(**fields) -> dict:
    return {"type": "response.create", "model": MODEL, "input": "hello there", **fields}


def answer(message: WebSocketMessage, **controls) -> list[dict]:
    body = {k: v for k, v in json.loads(message.content).items() if k != "type"}
    return [event for event, _ in response_events(body, Controls(**controls))]


def settled_rows(key) -> list[UsageRow]:
    store_thread.drain()
    return list(UsageRow.select().where(UsageRow.key == key.id).order_by(UsageRow.id))


def test_a_create_is_reserved_forwarded_and_settled_from_its_usage(ws):
    key, secret = create_key(budget=Money.usd("5"))
    flow = ws.open(secret)
    sent = ws.client(flow, create(max_output_tokens=30))
    assert not sent.dropped and ws.injected == []
    [held] = ReservationRow.select().where(ReservationRow.key == key.id)
    assert held.endpoint == "responses.websocket" and held.model == MODEL
    events = answer(sent)
    ws.server(flow, events)
    [row] = settled_rows(key)
    usage = events[-1]["response"]["usage"]
    assert (row.input_tokens, row.output_tokens, row.outcome, row.streamed) == (
        usage["input_tokens"], usage["output_tokens"], "ok", True)
    assert row.reserved_pico == held.amount_pico and row.cost_pico < row.reserved_pico
    assert ledger.open_reservations() == 0
    assert flow.metadata[METADATA]["settled"] == 1 and flow.comment.startswith("$0.0000")


def test_a_refused_create_is_dropped_and_answered_with_the_error_event(ws):
    key, secret = create_key(models=("gpt-4o",))
    flow = ws.open(secret)
    sent = ws.client(flow, create(stream_id="lane-7"))
    assert sent.dropped
    [event] = ws.injected
    assert (event["type"], event["status"], event["error"]["code"], event["stream_id"]) == (
        "error", 403, "model_not_allowed", "lane-7")
    assert flow.marked and "1 refused" in flow.comment
    assert ReservationRow.select().count() == 0
    store_thread.drain()
    [row] = refusals.rows()  # `pouch usage --refused` lists it, as an HTTP request's refusal
    assert (row["key"], row["model"], row["endpoint"], row["status"], row["reason"]) == (
        key.name, MODEL, "responses.websocket", 403, "model_not_allowed")


def test_a_create_without_an_output_cap_is_capped_to_what_the_budget_covers(ws):
    key, secret = create_key(budget=Money.usd("0.001"))  # 16,384 tokens of gpt-4o-mini's output would not fit
    flow = ws.open(secret)
    sent = ws.client(flow, create(stream_id="b"))
    forwarded = json.loads(sent.content)
    assert not sent.dropped and forwarded["type"] == "response.create" and forwarded["stream_id"] == "b"
    assert 0 < forwarded["max_output_tokens"] < 16_384
    [held] = ReservationRow.select()
    assert held.amount_pico <= Money.usd("0.001").pico


def test_paid_tools_get_pouchs_bound(ws):
    key, secret = create_key()
    flow = ws.open(secret)
    sent = ws.client(flow, create(tools=[{"type": "web_search"}], max_output_tokens=10))
    assert json.loads(sent.content)["max_tool_calls"] == 3


def test_a_key_revoked_while_its_socket_is_open_stops_at_its_next_create(ws):
    key, secret = create_key()
    flow = ws.open(secret)
    key_store.revoke(key, utcnow())
    assert ws.client(flow, create()).dropped
    assert ws.injected[-1]["status"] == 401


def test_the_rate_limits_slot_is_held_until_the_response_ends(ws):
    key, secret = create_key(max_concurrent=1)
    flow = ws.open(secret)  # the handshake's own slot is given back with its 101
    first = ws.client(flow, create())
    assert not first.dropped
    assert ws.client(flow, create()).dropped and ws.injected[-1]["error"]["code"] == "rate_limit_exceeded"
    ws.server(flow, answer(first))
    assert not ws.client(flow, create()).dropped


def test_messages_pouch_cannot_meter_are_refused_and_acknowledgements_pass(ws):
    key, secret = create_key()
    flow = ws.open(secret)
    assert not ws.client(flow, {"type": "response.processed", "response_id": "resp_1"}).dropped
    assert ws.client(flow, {"type": "response.steer", "input": "x"}).dropped
    assert ws.client(flow, b"\x00binary").dropped
    assert ws.client(flow, {"no": "type"}).dropped
    assert [e["error"]["code"] for e in ws.injected] == [
        "endpoint_not_metered", "invalid_request_error", "invalid_request_error"]


def test_a_failure_of_the_link_refuses_rather_than_forwards(ws, monkeypatch):
    async def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(socket_admission, "admit", broken)
    key, secret = create_key()
    flow = ws.open(secret)
    assert ws.client(flow, create()).dropped
    assert (ws.injected[-1]["status"], ws.injected[-1]["error"]["code"]) == (500, "gateway_error")


def test_closing_the_socket_settles_what_is_open_by_the_cut_short_rules(ws):
    key, secret = create_key(budget=Money.usd("5"))
    flow = ws.open(secret)
    sent = ws.client(flow, create(max_output_tokens=30))
    ws.server(flow, answer(sent)[:6])  # created, in progress, ... the first delta
    ws.close(flow)
    [row] = settled_rows(key)
    assert row.outcome == "cut_short" and row.cost_pico == row.reserved_pico
    assert flow.comment.endswith("cut short") and flow.metadata[METADATA]["open"] == 0


def test_a_mock_socket_is_answered_by_pouch(ws):
    key, secret = create_key(mock=True)
    flow = ws.open(secret)
    assert flow.request.host == "127.0.0.1" and "authorization" not in flow.request.headers
    assert ws.gw.sent(flow) is flow.request, "no credential is put in for the local answerer"
    sent = ws.client(flow, create(input="mock me"))
    assert sent.dropped
    assert ws.injected[0]["type"] == "response.created" and ws.injected[-1]["type"] == "response.completed"
    [row] = settled_rows(key)
    assert row.mock and row.outcome == "mock" and row.cost_pico > 0
    assert ws.client(flow, {"type": "response.processed", "response_id": "x"}).dropped


def test_a_mock_prewarm_writes_nothing(ws):
    key, secret = create_key(mock=True)
    flow = ws.open(secret)
    ws.client(flow, create(input="warm the cache", generate=False))
    completed = ws.injected[-1]["response"]
    assert completed["usage"]["output_tokens"] == 0 and completed["usage"]["input_tokens"] > 0
    assert not [e for e in ws.injected if e["type"] == "response.output_text.delta"]
    [row] = settled_rows(key)
    assert row.output_tokens == 0 and row.outcome == "mock"


def test_pouch_mock_all_mocks_every_socket(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-provider-key")
    with gateway(pouch_mock="all") as gw:
        ws = Link(gw)
        key, secret = create_key()
        flow = ws.open(secret)
        assert flow.request.host == "127.0.0.1"
        assert ws.client(flow, create()).dropped and ws.injected[-1]["type"] == "response.completed"
