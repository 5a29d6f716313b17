"""Gateways sharing one store each hold their own name: a gateway starting next to another
never charges the other's requests in flight as "left open", and a second gateway under a
live gateway's name refuses to start."""

import contextlib
import socket
import threading
import time

from pouch.services import keys as key_service
from pouch.store import instances
from pouch.store.database import InstanceRow, ReservationRow, UsageRow
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import Gateway

MODEL, HELLO = "gpt-4o-mini", [{"role": "user", "content": "hello there"}]
WORDS = " ".join(f"word{i}" for i in range(40))


def default_name(gateway: Gateway) -> str:
    return f"{socket.gethostname()}:{'+'.join(map(str, sorted((gateway.port, gateway.reverse_port))))}"


def test_a_gateway_starting_beside_another_leaves_its_stream_alone(tmp_path):
    with FakeOpenAI(tls_dir=tmp_path / "tls") as fake:
        routes, ca = {"api.openai.com": fake.url}, str(fake.ca_path)
        first = Gateway(tmp_path / "first", routes, ca, {"pouch_instance": ""}).start()  # default names
        second = Gateway(tmp_path / "second", routes, ca, {"pouch_instance": "", "pouch_db": first.db_url})
        try:
            first.open_store()
            _, streamer = key_service.create("streamer", budget="1")
            _, other = key_service.create("other", budget="1")
            streamed = []

            def stream():
                streamed.extend(first.client(streamer).chat.completions.create(
                    model=MODEL, messages=HELLO, max_tokens=100, stream=True, stream_options={"include_usage": True},
                    extra_headers={"x-fake-reply": WORDS, "x-fake-chunk-delay": "0.25"}))

            caller = threading.Thread(target=stream)
            caller.start()
            deadline = time.monotonic() + 15
            while not (fake.requests and ReservationRow.select().count()) and time.monotonic() < deadline:
                time.sleep(0.05)
            [held] = list(ReservationRow.select())

            second.start()  # recovers what its own name left open, at start
            second.client(other).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10)
            assert caller.is_alive(), "the stream was still in flight while the second gateway started"
            caller.join(30)
            first.settled(expected_rows=2)

            row = UsageRow.get(UsageRow.key_name == "streamer")
            usage = streamed[-1].usage
            assert (row.reservation_id, row.outcome) == (held.id, "ok"), "settled by its own gateway, not recovered"
            assert (row.input_tokens, row.output_tokens) == (usage.prompt_tokens, usage.completion_tokens)
            assert row.cost_pico < held.amount_pico
            assert UsageRow.get(UsageRow.key_name == "other").outcome == "ok"
            assert held.owner == default_name(first)
            assert {r.name for r in InstanceRow.select()} == {default_name(first), default_name(second)}
        finally:
            second.stop()
            first.stop()


def test_a_second_gateway_under_a_live_name_refuses_to_start(tmp_path):
    with FakeOpenAI(tls_dir=tmp_path / "tls") as fake:
        routes, ca = {"api.openai.com": fake.url}, str(fake.ca_path)
        first = Gateway(tmp_path / "first", routes, ca, {"pouch_instance": "eu-1"}).start()
        second = Gateway(tmp_path / "second", routes, ca, {"pouch_instance": "eu-1", "pouch_db": first.db_url})
        try:
            with contextlib.suppress(RuntimeError):  # it may exit before or after its ports open
                second.start()
            assert second.process.wait(30) != 0
            log = second.log_path.read_text()
            assert "instance name 'eu-1' is held by a live gateway" in log
            assert f"pid {first.process.pid}" in log and "--set pouch_instance=NAME" in log

            first.open_store()
            assert instances.holder("eu-1").pid == first.process.pid, "the first keeps its name"
            _, secret = key_service.create("still-served", budget="1")
            reply = first.client(secret).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10)
            assert reply.choices[0].message.content == "echo: hello there"
            first.settled(expected_rows=1)
        finally:
            second.stop()
            first.stop()
        assert instances.holder("eu-1") is None, "a gateway that stops gives its name back"
