"""The websocket link (addons/websocket.py), hook by hook with the chain's other links and a real
store: each response.create admitted before it goes on, refusals dropped and answered with the
error event, each response settled once from the server's events."""

import json
import threading

import pytest
from mitmproxy import http
from mitmproxy.websocket import WebSocketData, WebSocketMessage
from wsproto.frame_protocol import Opcode

from addons.websocket import KEEP_MESSAGES, METADATA, ResponsesWebSocket
from addons.websocket import protocol
from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.providers import json_body
from pouch.services import prompt, socket_admission, socket_upgrade
from pouch.services.store_thread import store_thread
from pouch.store import keys as key_store
from pouch.store import ledger, refusals
from pouch.store.database import ReservationRow, UsageRow
from tests.addon_helpers import MODEL, create_key, error_of, gateway, openai_flow
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
        chain = gw.tctx.master.addons.chain  # in the chain's order (addons/pouch.py): before upstream
        chain.insert(chain.index(gw.upstream), chain.pop(chain.index(self.link)))

    def open(self, secret: str, path: str = "/v1/responses", headers: dict | None = None) -> http.HTTPFlow:
        flow = self.gw.request(openai_flow(path, method="GET", secret=secret, headers=headers or UPGRADE))
        assert flow.response is None, flow.response and flow.response.content
        self.upgrade(flow)
        assert flow.error is None, "the 101 was killed"
        self.gw.hook("websocket_start", flow)
        return flow

    def upgrade(self, flow, upgrade: str = "websocket") -> None:
        """The server's 101, as mitmproxy hands it over: ``flow.websocket`` is set just before the
        response hook when mitmproxy relays it as a WebSocket (``send_response``)."""
        flow.response = http.Response.make(101, b"", {"upgrade": upgrade, "connection": "Upgrade"})
        self.gw.hook("responseheaders", flow)
        if flow.error is None and socket_upgrade.follows(flow):
            flow.websocket = WebSocketData()
        self.gw.hook("response", flow)

    def client(self, flow, message: dict | str | bytes) -> WebSocketMessage:
        """``message`` sent as a text message (a dict as JSON, a str as it is), bytes as binary."""
        content = message if isinstance(message, bytes) else (
            message if isinstance(message, str) else json.dumps(message)).encode()
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
    sent = ws.client(flow, create())
    events = answer(sent)
    ws.server(flow, events)
    assert not ws.client(flow, {"type": "response.processed", "response_id": events[0]["response"]["id"]}).dropped
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


# --- what mitmproxy would relay unseen: upgrades pouch does not follow ---


@pytest.mark.parametrize("headers, status, code", [
    # mitmproxy joins two versions ("13, 13") and then relays the 101 as raw TCP: nothing metered
    ({**UPGRADE, "sec-websocket-version": "13"}, None, None),
    ({"upgrade": "websocket", "connection": "Upgrade"}, 400, "invalid_request_error"),  # no version
    ({**UPGRADE, "sec-websocket-version": "8"}, 400, "invalid_request_error"),
    ({**UPGRADE, "upgrade": "tcp"}, 400, "invalid_request_error"),
])
def test_a_handshake_mitmproxy_would_not_follow_is_refused_before_it_leaves(ws, headers, status, code):
    key, secret = create_key()
    flow = openai_flow("/v1/responses", method="GET", secret=secret, headers=headers)
    if status is None:  # the same header twice
        flow.request.headers.add("sec-websocket-version", "13")
        status, code = 400, "invalid_request_error"
    ws.gw.request(flow)
    assert flow.response.status_code == status and error_of(flow)["code"] == code
    assert ws.gw.sent(flow) is flow.request and flow.request.host == "api.openai.com"  # nothing went upstream


def test_with_mitmproxys_websocket_option_off_no_socket_is_opened(ws):
    ws.gw.tctx.configure(ws.link, websocket=False)
    key, secret = create_key()
    flow = ws.gw.request(openai_flow("/v1/responses", method="GET", secret=secret, headers=UPGRADE))
    assert flow.response.status_code == 403 and "websocket option" in error_of(flow)["message"]


def test_an_upgrade_on_another_endpoint_is_refused(ws):
    key, secret = create_key()
    flow = ws.gw.request(openai_flow("/v1/responses/resp_abc", method="GET", secret=secret, headers=UPGRADE))
    assert flow.response.status_code == 400 and "not a WebSocket endpoint" in error_of(flow)["message"]


def test_a_101_mitmproxy_would_relay_as_raw_tcp_is_killed(ws):
    key, secret = create_key()
    flow = ws.gw.request(openai_flow("/v1/responses", method="GET", secret=secret, headers=UPGRADE))
    ws.upgrade(flow, upgrade="tcp")  # the server upgrades to something else
    assert flow.error and flow.error.msg == flow.error.KILLED_MESSAGE and flow.websocket is None


def test_a_101_on_an_endpoint_pouch_does_not_meter_by_message_is_killed(ws):
    key, secret = create_key()
    flow = ws.gw.request(openai_flow("/v1/responses/resp_abc", method="GET", secret=secret))
    assert flow.response is None  # responses.retrieve: free, forwarded
    flow.request.headers.update(UPGRADE)  # say it upgraded all the same, and mitmproxy followed it
    flow.response = http.Response.make(101, b"", {"upgrade": "websocket", "connection": "Upgrade"})
    flow.websocket = WebSocketData()
    ws.gw.hook("response", flow)
    assert flow.error and flow.error.msg == flow.error.KILLED_MESSAGE
    ws.gw.hook("websocket_start", flow)
    sent = ws.client(flow, create(max_output_tokens=5000))  # and were it relayed, nothing would go on
    assert sent.dropped and ReservationRow.select().count() == 0


# --- what a message says is what pouch read ---


@pytest.mark.parametrize("text", [
    '{"type":"response.create","model":"%s","input":"hi","max_output_tokens":5000,"type":"response.processed"}',
    '{"type":"response.processed","Type":"response.create","model":"%s","input":"hi"}',
    '{"type":"response.create","model":"%s","input":"hi","max_output_tokens":100000,"max_output_tokens":16}',
])
def test_a_message_a_server_could_read_otherwise_is_refused(ws, text):
    key, secret = create_key(budget=Money.usd("5"))
    flow = ws.open(secret)
    sent = ws.client(flow, (text % MODEL).encode().decode())  # sent as text, not re-encoded
    assert sent.dropped and ws.injected[-1]["status"] == 400
    assert ReservationRow.select().count() == 0


def test_a_create_pouch_did_not_change_goes_on_as_the_bytes_it_read(ws):
    key, secret = create_key(budget=Money.usd("5"))
    flow = ws.open(secret)
    text = '{ "type" : "response.create", "model":"%s", "input":"caf\\u00e9", "max_output_tokens": 20 }' % MODEL
    sent = ws.client(flow, text)
    assert not sent.dropped and sent.content == text.encode()


def test_an_acknowledgement_of_a_response_the_socket_never_carried_is_refused(ws):
    key, secret = create_key()
    flow = ws.open(secret)
    assert ws.client(flow, {"type": "response.processed", "response_id": "resp_bogus"}).dropped
    assert ws.injected[-1]["status"] == 400 and "never carried" in ws.injected[-1]["error"]["message"]


# --- an error pouch cannot tie to a create, and a response nothing was reserved for ---


def test_an_error_that_may_answer_an_acknowledgement_leaves_the_create_to_its_own_end(ws):
    key, secret = create_key(budget=Money.usd("5"))
    flow = ws.open(secret)
    first = ws.client(flow, create(max_output_tokens=30))
    events = answer(first)
    ws.server(flow, events)
    second = ws.client(flow, create(max_output_tokens=30, input="again"))
    assert not ws.client(flow, {"type": "response.processed", "response_id": events[0]["response"]["id"]}).dropped
    ws.server(flow, [{"type": "error", "status": 400, "error": {"code": "x", "message": "about the ack"}}])
    assert ReservationRow.select().count() == 1, "the second create is still held"
    ws.server(flow, answer(second))  # it ran after all: charged its usage
    rows = settled_rows(key)
    assert [r.outcome for r in rows] == ["ok", "ok"] and all(r.cost_pico > 0 for r in rows)


def test_a_response_nothing_was_reserved_for_is_charged_also_over_budget(ws):
    key, secret = create_key(budget=Money.usd("0.001"))
    flow = ws.open(secret)
    sent = ws.client(flow, create(max_output_tokens=5))
    big = {"input_tokens": 100000, "output_tokens": 100000, "total_tokens": 200000}  # $0.075 each
    events = answer(sent)
    events[-1]["response"]["usage"] = big
    ws.server(flow, events)  # an overrun: the key is now over its budget
    unsolicited = answer(sent)
    unsolicited[-1]["response"] |= {"id": "resp_nobody_asked", "usage": big}
    ws.server(flow, unsolicited[-1:])
    rows = settled_rows(key)
    spent, held = ledger.window_totals(key_store.get(key.id), utcnow())
    assert [r.outcome for r in rows] == ["overrun", "overrun"] and held == Money(0)
    assert spent == Money(sum(r.cost_pico for r in rows)) > Money.usd("0.14")


# --- sockets pouch no longer follows, or may no longer let go to the provider ---


def test_a_key_made_mock_while_its_socket_is_open_is_closed_at_its_next_create(ws):
    key, secret = create_key(budget=Money.usd("5"))
    flow = ws.open(secret)
    key_store.update(key, utcnow(), mock=True)
    sent = ws.client(flow, create(max_output_tokens=20))
    assert sent.dropped and ws.injected[-1]["error"]["code"] == "reconnect_required"
    assert flow.error and flow.error.msg == flow.error.KILLED_MESSAGE
    assert ReservationRow.select().count() == 0
    assert ws.client(flow, create(max_output_tokens=20)).dropped, "nothing more goes on while it closes"


def test_pouch_mock_all_turned_on_closes_a_socket_to_the_provider(ws):
    key, secret = create_key(budget=Money.usd("5"))
    flow = ws.open(secret)
    ws.gw.configure(pouch_mock="all")
    assert ws.client(flow, create()).dropped and ws.injected[-1]["error"]["code"] == "reconnect_required"
    assert flow.error is not None and ReservationRow.select().count() == 0


def test_a_socket_opened_before_a_reload_is_dropped_and_closed(ws):
    key, secret = create_key(budget=Money.usd("5"))
    flow = ws.open(secret)
    master = ws.gw.tctx.master
    master.addons.remove(ws.link)  # a script reload replaces the link
    ws.link = ResponsesWebSocket(inject=lambda f, d: ws.injected.append(json.loads(d)))
    master.addons.add(ws.link)
    sent = ws.client(flow, create(max_output_tokens=20))
    assert sent.dropped and ws.injected[-1]["error"]["code"] == "reconnect_required"
    assert flow.error is not None and ReservationRow.select().count() == 0


def test_a_message_above_the_cap_is_refused_unread(ws, monkeypatch):
    monkeypatch.setattr(json_body, "MAX_DECODED_BYTES", 1000)
    read = []
    monkeypatch.setattr(protocol, "read_client_message", lambda data: read.append(data))
    key, secret = create_key()
    flow = ws.open(secret)
    assert ws.client(flow, create(input="x" * 1000)).dropped
    assert ws.injected[-1]["status"] == 400 and "at most" in ws.injected[-1]["error"]["message"] and read == []


def test_a_big_message_is_read_off_the_event_loop(ws, monkeypatch):
    threads = []
    reading = protocol.read_client_message

    def read(data):
        threads.append(threading.current_thread())
        return reading(data)

    monkeypatch.setattr(protocol, "read_client_message", read)
    key, secret = create_key(budget=Money.usd("5"))
    flow = ws.open(secret)
    ws.client(flow, create(max_output_tokens=5))
    ws.client(flow, create(max_output_tokens=5, input="x " * prompt.OFF_LOOP_BYTES))
    assert threads[0] is threading.main_thread() and threads[1] is not threading.main_thread()


def test_a_long_socket_keeps_its_last_messages(ws):
    key, secret = create_key()
    flow = ws.open(secret)
    delta = {"type": "response.output_text.delta", "delta": "x"}
    ws.server(flow, [delta] * (KEEP_MESSAGES * 2))
    assert KEEP_MESSAGES <= len(flow.websocket.messages) <= KEEP_MESSAGES * 1.1
