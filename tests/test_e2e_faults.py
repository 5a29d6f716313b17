"""Faults, end to end: a real mitmdump with the chain, the real openai SDK (raw sockets and
httpx2 where the SDK hides what happens), fakes on loopback. Each test checks what the client
got AND what the store says afterwards: the usage row, the ledger's spent and reserved, and
that no reservation is left open.

What pouch does, fault by fault (``addons/usage.py``):

| fault | client sees | row outcome | charged |
|---|---|---|---|
| upstream slow, then answers | the answer | ok | exactly |
| upstream 5xx | the provider's error | upstream_error | nothing |
| upstream refuses the connection / fails TLS | 502 in the provider's shape, naming the cause | not_sent | nothing |
| upstream aborts a stream | a broken stream | cut_short | the reservation (row: input + output seen) |
| client hangs up before its body is complete | - | no row | nothing |
| client hangs up while the request is upstream | its own timeout | abandoned | the reservation |
| client hangs up mid-stream | - | cut_short | the reservation (row: input + output seen) |
| client hangs up after the response | the answer | ok (one row) | exactly |
| store locked shorter than pouch_store_timeout | the answer, later | ok | exactly |
| store locked longer | 503 store_unavailable | no row | nothing |
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from datetime import timedelta

import openai
import pytest

from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.pricing.price import cost
from pouch.services import keys as key_service
from pouch.store import keys as key_store
from pouch.store import ledger
from pouch.store.database import ReservationRow, UsageRow
from tests import pinned_prices
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import REAL_OPENAI_KEY, Gateway, free_port

MODEL = "gpt-4o-mini"
PRICE = pinned_prices.table().resolve(MODEL)
HELLO = [{"role": "user", "content": "hello there"}]
WORDS = "one two three four five six seven eight nine ten"


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("fake-tls")) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    gateway = Gateway(tmp_path_factory.mktemp("gateway"), {"api.openai.com": fake.url}, str(fake.ca_path)).start()
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def fresh(fake):
    fake.reset()


def new_key(gateway, **options):
    gateway.open_store()
    return key_service.create(f"k{uuid.uuid4().hex[:10]}", **options)


def rows_of(key):
    return list(UsageRow.select().where(UsageRow.key_name == key.name).order_by(UsageRow.id))


def held_by(key) -> int:
    return ReservationRow.select().where(ReservationRow.key == key.id).count()


def totals(key) -> tuple[Money, Money]:
    """(spent, reserved) in the key's current window."""
    return ledger.window_totals(key_store.get(key.id), key_service.utcnow())


def exact_cost(completion) -> Money:
    return cost(PRICE, Usage(input_tokens=completion.usage.prompt_tokens,
                             output_tokens=completion.usage.completion_tokens))


def released(gateway, key, *, status, outcome) -> None:
    """The request left exactly one row, charged nothing, and holds nothing."""
    gateway.settled(expected_rows=1)
    assert [(r.status, r.outcome, r.cost_pico) for r in rows_of(key)] == [(status, outcome, 0)]
    assert held_by(key) == 0 and totals(key) == (Money(0), Money(0))


def status_error(call) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as raised:
        call()
    return raised.value


@contextlib.contextmanager
def store_locked(gateway):
    """An exclusive write lock on the gateway's SQLite store, from another process's point of
    view (WAL: readers go on, every writer waits for the busy timeout)."""
    lock = sqlite3.connect(gateway.home / "pouch.db", isolation_level=None, timeout=10)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        lock.execute("ROLLBACK")
        lock.close()


def wait_for(condition, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --- upstream faults -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_slow_upstream_is_charged_exactly_and_its_latency_recorded(gateway, fake, stream):
    key, secret = new_key(gateway, budget="1")
    client = gateway.client(secret)
    slow = {"x-fake-delay": "1"}
    if stream:
        chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True,
                                                     stream_options={"include_usage": True}, extra_headers=slow))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello there"
        charged = exact_cost(chunks[-1])
    else:
        reply = client.chat.completions.create(model=MODEL, messages=HELLO, extra_headers=slow)
        assert reply.choices[0].message.content == "echo: hello there"
        charged = exact_cost(reply)
    gateway.settled(expected_rows=1)
    [row] = rows_of(key)
    assert (row.status, row.outcome, row.streamed, row.cost_pico) == (200, "ok", stream, charged.pico)
    # Lower bounds only: the fake waited a second before its headers, whatever the machine's speed.
    assert row.latency_ms >= 1000 and row.ttft_ms is not None and row.ttft_ms >= 1000
    assert totals(key) == (charged, Money(0)) and held_by(key) == 0


@pytest.mark.parametrize("status", [500, 503])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_upstream_5xx_is_passed_through_and_released(gateway, fake, status, stream):
    key, secret = new_key(gateway, budget="1")
    failed = status_error(lambda: gateway.client(secret).chat.completions.create(
        model=MODEL, messages=HELLO, stream=stream, extra_headers={"x-fake-status": str(status)}))
    assert isinstance(failed, openai.InternalServerError) and failed.status_code == status
    assert failed.type == "server_error" and "as requested by x-fake-status" in failed.message, "the provider's own error"
    assert len(fake.requests) == 1
    released(gateway, key, status=status, outcome="upstream_error")


@pytest.fixture(scope="module")
def dead_gateway(tmp_path_factory):
    """api.openai.com routed to a loopback port nobody listens on."""
    dead_port = free_port()
    gateway = Gateway(tmp_path_factory.mktemp("dead"), {"api.openai.com": f"https://127.0.0.1:{dead_port}"},
                      None).start()
    yield gateway
    gateway.stop()


@pytest.mark.parametrize("reverse", [False, True], ids=["https_proxy", "reverse_base_url"])
def test_upstream_connection_refused_is_released(dead_gateway, reverse):
    key, secret = new_key(dead_gateway, budget="1")
    failed = status_error(lambda: dead_gateway.client(secret, reverse=reverse).chat.completions.create(
        model=MODEL, messages=HELLO))
    assert isinstance(failed, openai.InternalServerError) and failed.status_code == 502
    assert failed.code == "upstream_unreachable" and "connection refused" in failed.message
    assert REAL_OPENAI_KEY not in failed.response.text and secret not in failed.response.text
    released(dead_gateway, key, status=502, outcome="not_sent")


@pytest.fixture(scope="module")
def untrusted(tmp_path_factory):
    """A provider whose certificate the gateway has no reason to trust (its own CA, not given)."""
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("untrusted-tls")) as fake:
        yield fake


@pytest.fixture(scope="module")
def untrusting_gateway(untrusted, fake, tmp_path_factory):
    """Routed to ``untrusted`` while trusting only ``fake``'s CA."""
    gateway = Gateway(tmp_path_factory.mktemp("untrusting"), {"api.openai.com": untrusted.url},
                      str(fake.ca_path)).start()
    yield gateway
    gateway.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_upstream_tls_failure_is_released_and_nothing_is_sent(untrusting_gateway, untrusted, stream):
    untrusted.reset()
    key, secret = new_key(untrusting_gateway, budget="1")
    failed = status_error(lambda: untrusting_gateway.client(secret).chat.completions.create(
        model=MODEL, messages=HELLO, stream=stream))
    assert isinstance(failed, openai.InternalServerError) and failed.status_code == 502
    assert "certificate" in failed.response.text.lower(), failed.response.text
    # Upstream TLS verification stays on: the handshake failed, so no request (and no real
    # key) ever reached the server that could not prove who it is.
    assert untrusted.requests == []
    released(untrusting_gateway, key, status=502, outcome="not_sent")


def reservation_charged(key, row) -> None:
    """The row's cost is its reservation: input and the model's maximum output, uncapped."""
    worst = PRICE.input * row.input_tokens + PRICE.highest_output * PRICE.max_output_tokens
    assert row.cost_pico == row.reserved_pico == worst.pico
    assert totals(key) == (worst, Money(0)) and held_by(key) == 0


def test_upstream_abort_mid_stream_charges_the_reservation(gateway, fake):
    """What the provider billed for a stream it broke off is unknown (hidden reasoning, output
    still in flight): the reservation is charged, the row records what was seen."""
    key, secret = new_key(gateway, budget="1")
    stream = gateway.client(secret).chat.completions.create(
        model=MODEL, messages=HELLO, stream=True, extra_headers={"x-fake-abort-after": "3", "x-fake-reply": WORDS})
    seen = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(seen) == "one two three"
    gateway.settled(expected_rows=1)
    [row] = rows_of(key)
    assert (row.status, row.outcome, row.streamed) == (200, "cut_short", True)
    assert row.input_tokens > 0 and row.output_tokens == 3, "input + exactly the three words that went through"
    reservation_charged(key, row)


def test_upstream_abort_before_any_content_charges_the_reservation(gateway, fake):
    key, secret = new_key(gateway, budget="1")
    stream = gateway.client(secret).chat.completions.create(
        model=MODEL, messages=HELLO, stream=True, extra_headers={"x-fake-abort-after": "0"})
    with pytest.raises(openai.APIConnectionError):
        list(stream)
    gateway.settled(expected_rows=1)
    [row] = rows_of(key)
    assert (row.outcome, row.output_tokens) == ("cut_short", 0) and row.input_tokens > 0
    reservation_charged(key, row)


# --- the client hangs up -------------------------------------------------------------------


def test_client_gone_before_its_body_is_complete(gateway, fake):
    """mitmproxy calls the ``request`` hooks only once the body is in, so nothing was reserved
    and nothing is recorded for a request whose body never arrived."""
    key, secret = new_key(gateway, budget="1")
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}'
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer {secret}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gateway.reverse_port)) as raw:
        raw.sendall(head + body[:20])
        time.sleep(0.3)  # the gateway has the headers and part of the body
    # A complete request afterwards on the same key: its row is the only one.
    gateway.client(secret, reverse=True).chat.completions.create(model=MODEL, messages=HELLO)
    gateway.settled(expected_rows=1)
    assert [r.outcome for r in rows_of(key)] == ["ok"]
    assert len(fake.requests) == 1 and held_by(key) == 0


def test_client_gone_while_the_request_is_upstream_is_charged_its_worst_case(gateway, fake):
    """The client gives up (its timeout) while the provider is still working on a non-streamed
    request. Providers finish and bill such a generation anyway, and pouch cannot know how
    much, so it charges the reservation: the worst case, never a discount. Outcome abandoned."""
    key, secret = new_key(gateway, budget="1")
    with pytest.raises(openai.APITimeoutError):
        gateway.client(secret).chat.completions.create(
            model=MODEL, messages=HELLO, timeout=0.5, max_tokens=40, extra_headers={"x-fake-delay": "2"})
    assert len(fake.requests) == 1, "the request was upstream when the client left"
    gateway.settled(expected_rows=1)
    [row] = rows_of(key)
    assert (row.status, row.outcome, row.output_tokens) == (None, "abandoned", 0) and row.input_tokens > 0
    worst = PRICE.input * row.input_tokens + PRICE.highest_output * 40
    assert row.cost_pico == worst.pico and totals(key) == (worst, Money(0)) and held_by(key) == 0


@pytest.mark.parametrize("k", [1, 3])
def test_client_gone_mid_stream_is_charged_the_reservation(gateway, fake, k):
    """The provider goes on generating (and billing) after the client left, unseen."""
    key, secret = new_key(gateway, budget="1")
    stream = gateway.client(secret).chat.completions.create(
        model=MODEL, messages=HELLO, stream=True,
        extra_headers={"x-fake-reply": WORDS, "x-fake-chunk-delay": "0.2"})
    got = 0
    for chunk in stream:
        got += bool(chunk.choices and chunk.choices[0].delta.content)
        if got == k:
            break
    stream.close()
    gateway.settled(expected_rows=1)
    [row] = rows_of(key)
    assert (row.status, row.outcome, row.streamed) == (200, "cut_short", True)
    # What passed the gateway: at least what the client read, less than the whole reply.
    assert row.input_tokens > 0 and k <= row.output_tokens < 10
    reservation_charged(key, row)


def test_client_gone_after_the_response_is_charged_exactly_once(gateway, fake):
    key, secret = new_key(gateway, budget="1")
    client = gateway.client(secret)
    reply = client.chat.completions.create(model=MODEL, messages=HELLO)
    client.close()
    client = gateway.client(secret)
    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    client.close()
    # Raw: read the last chunk of a stream and hang up at once, before anything else happens.
    body = b'{"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hello there"}]}'
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer {secret}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gateway.reverse_port)) as raw:
        raw.sendall(head + body)
        received = b""
        while not received.endswith(b"0\r\n\r\n"):
            data = raw.recv(65536)
            assert data, received
            received += data
    assert b"[DONE]" in received
    gateway.settled(expected_rows=3)
    time.sleep(0.3)  # a second settlement of any of them would show up now
    rows = rows_of(key)
    assert [(r.outcome, r.streamed) for r in rows] == [("ok", False), ("ok", True), ("ok", True)]
    assert len({r.reservation_id for r in rows}) == 3
    assert rows[0].cost_pico == exact_cost(reply).pico and rows[1].cost_pico == exact_cost(chunks[-1]).pico
    assert rows[2].cost_pico == rows[1].cost_pico
    assert totals(key) == (Money(sum(r.cost_pico for r in rows)), Money(0)) and held_by(key) == 0


# --- the store is locked -------------------------------------------------------------------


def test_store_locked_briefly_the_request_waits_and_succeeds(gateway, fake):
    key, secret = new_key(gateway, budget="1")
    outcome = {}

    def call():
        outcome["reply"] = gateway.client(secret).chat.completions.create(model=MODEL, messages=HELLO)

    with store_locked(gateway):
        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(1)  # shorter than pouch_store_timeout (default 5 s)
        assert not fake.requests, "nothing goes upstream before it is reserved"
        unlocked = time.time()
    caller.join(15)
    assert outcome["reply"].choices[0].message.content == "echo: hello there"
    assert fake.requests[0].timestamp >= unlocked, "forwarded only after the reservation got the lock"
    gateway.settled(expected_rows=1)
    [row] = rows_of(key)
    assert row.outcome == "ok" and row.cost_pico == exact_cost(outcome["reply"]).pico
    assert totals(key) == (exact_cost(outcome["reply"]), Money(0))


def test_store_locked_between_reservation_and_settlement_settles_off_the_hot_path(gateway, fake):
    """Settlement runs on the store thread after the response: the client has its answer
    while the store is still locked, and the settlement waits (up to pouch_store_timeout) and
    then happens."""
    key, secret = new_key(gateway, budget="1")
    outcome = {}

    def call():
        outcome["reply"] = gateway.client(secret).chat.completions.create(
            model=MODEL, messages=HELLO, extra_headers={"x-fake-delay": "0.3"})
        outcome["answered"] = time.time()

    caller = threading.Thread(target=call)
    caller.start()
    wait_for(lambda: held_by(key) == 1, "the reservation")
    with store_locked(gateway):
        caller.join(15)
        assert outcome["reply"].choices[0].message.content == "echo: hello there"
        assert rows_of(key) == [] and held_by(key) == 1, "not settled while the store is locked"
        time.sleep(0.5)
    gateway.settled(expected_rows=1)
    [row] = rows_of(key)
    assert row.outcome == "ok" and row.cost_pico == exact_cost(outcome["reply"]).pico
    assert totals(key) == (exact_cost(outcome["reply"]), Money(0))


@pytest.fixture(scope="module")
def strict_gateway(fake, tmp_path_factory):
    """pouch_store_timeout=1: a request waits at most a second for a store lock."""
    home = tmp_path_factory.mktemp("strict")
    gateway = Gateway(home, {"api.openai.com": fake.url}, str(fake.ca_path), {"pouch_store_timeout": "1"}).start()
    yield gateway
    gateway.stop()


def test_float_options_can_be_set_on_the_command_line(tmp_path):
    options = {"pouch_store_timeout": "1", "pouch_key_cache": "0.5", "pouch_mock_latency": "0"}
    gateway = Gateway(tmp_path / "gw", {}, None, options)
    try:
        gateway.start()
        with pytest.raises(subprocess.TimeoutExpired):  # still serving: it did not exit at start-up
            gateway.process.wait(2)
    finally:
        gateway.stop()
    assert b"unsupported option type" not in gateway.log_path.read_bytes()


def test_store_locked_too_long_fails_closed_then_recovers(strict_gateway, fake):
    key, secret = new_key(strict_gateway, budget="1")
    client = strict_gateway.client(secret)
    locked, unlocked = threading.Event(), threading.Event()

    def hold_the_lock(seconds=3):
        with store_locked(strict_gateway):
            locked.set()
            time.sleep(seconds)
        unlocked.set()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    locked.wait(10)
    refused = status_error(lambda: client.chat.completions.create(model=MODEL, messages=HELLO))
    assert not unlocked.is_set(), "refused while the lock was still held: the 1 s timeout applies"
    holder.join(10)
    assert isinstance(refused, openai.InternalServerError) and refused.status_code == 503
    assert refused.code == "store_unavailable" and "nothing was sent" in refused.message
    assert not fake.requests, "fail closed: nothing unaccounted went upstream"
    strict_gateway.open_store()
    assert held_by(key) == 0 and rows_of(key) == [] and totals(key) == (Money(0), Money(0))

    reply = client.chat.completions.create(model=MODEL, messages=HELLO)  # the store is back
    assert reply.choices[0].message.content == "echo: hello there" and len(fake.requests) == 1
    strict_gateway.settled(expected_rows=1)
    assert [r.outcome for r in rows_of(key)] == ["ok"] and totals(key) == (exact_cost(reply), Money(0))


def settlement_outlives_the_lock(gateway, key, secret) -> openai.types.chat.ChatCompletion:
    """A request answered while the store is locked for longer than pouch_store_timeout: its
    settlement (on the store thread, after the response) gives up before the lock goes."""
    outcome = {}

    def call():
        outcome["reply"] = gateway.client(secret).chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=100, extra_headers={"x-fake-delay": "0.3"})

    caller = threading.Thread(target=call)
    caller.start()
    wait_for(lambda: held_by(key) == 1, "the reservation")
    with store_locked(gateway):
        caller.join(15)
        time.sleep(2)  # the settlement waits 1 s, fails, and waits to be tried again
    return outcome["reply"]


def test_settlement_that_times_out_is_retried_with_the_measured_cost(strict_gateway, fake):
    key, secret = new_key(strict_gateway, budget="1")
    reply = settlement_outlives_the_lock(strict_gateway, key, secret)
    try:
        strict_gateway.settled(expected_rows=1, timeout=3)
        [row] = rows_of(key)
        assert (row.outcome, row.cost_pico) == ("ok", exact_cost(reply).pico)
        assert b"store work failed" in strict_gateway.log_path.read_bytes(), "the first try did fail"
    finally:
        ledger.recover(key_service.utcnow() + timedelta(seconds=901))  # leave no reservation open
