"""Receivers that misbehave (pouch/alerts/delivery.py): an answer too large to hold, one that
trickles, one that never comes. Real sockets on loopback, the real store, the Courier's looks."""

import asyncio
import socket
import threading
import time

from pouch.alerts import delivery
from pouch.alerts.outbox import AlertRow
from pouch.services.store_thread import StoreThread
from tests.alerts_receiver import Receiver
from tests.test_alerts_delivery import crossed, deliver

BIG = 400 << 20  # bytes an answer claims to have


class RawReceiver:
    """Takes each POST whole, then lets ``answer(conn)`` write whatever it likes on the socket."""

    def __init__(self, answer):
        self.answer = answer
        self.bodies: list[bytes] = []
        self.sent: list[int] = []  # per connection: bytes of answer written before the socket failed or ended
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            while len(body) < length:
                body += conn.recv(65536)
            self.bodies.append(body)
            sent = [0]
            try:
                self.answer(conn, sent)
            except OSError:
                pass
            self.sent.append(sent[0])

    def close(self):
        self.listener.close()


def huge(conn, sent):
    """'200 OK', then 400 MB as fast as the client takes them."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
    chunk = b"\0" * (1 << 20)
    while sent[0] < BIG:
        conn.sendall(chunk)
        sent[0] += len(chunk)


def trickle(conn, sent):
    """'200 OK' at once, then a body of 100 bytes, one a second."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    for _ in range(100):
        conn.sendall(b"x")
        sent[0] += 1
        time.sleep(1)


def test_a_huge_answer_is_never_read(store):
    receiver = RawReceiver(huge)
    crossed(alert_at=())  # one event
    deliver(delivery.Settings(webhooks=(receiver.url,), timeout=60), lambda: False, looks=1)
    assert AlertRow.get().state == "delivered"
    for _ in range(200):  # the receiver's write fails once the gateway has hung up
        if receiver.sent:
            break
        time.sleep(0.05)
    receiver.close()
    assert receiver.sent and receiver.sent[0] < BIG // 4, "the gateway hung up instead of taking it all"


def test_a_200_whose_body_trickles_is_delivered_at_the_first_try(store):
    receiver = RawReceiver(trickle)
    crossed()  # two events: 50 % and exhausted
    deliver(delivery.Settings(webhooks=(receiver.url,), timeout=5, backoff=0.01, tries=3),
            lambda: {row.state for row in AlertRow.select()} == {"delivered"})
    receiver.close()
    assert len(receiver.bodies) == 2, "each event once"
    assert {(row.state, row.attempts) for row in AlertRow.select()} == {("delivered", 1)}


def test_a_webhook_that_never_answers_holds_up_no_other_alert(store):
    """A key's webhook accepts the connection and never answers: its row waits out its timeout
    alone, while an event written meanwhile is delivered by the next looks."""
    sink = socket.create_server(("127.0.0.1", 0))  # connections wait in its backlog, unanswered
    with Receiver() as ops:
        crossed("slow", webhook=f"http://127.0.0.1:{sink.getsockname()[1]}/", alert_at=())
        settings = delivery.Settings(webhooks=(ops.url,), timeout=60, backoff=60)

        def fine_delivered() -> bool:
            return [r.state for r in AlertRow.select().where(AlertRow.body.contains('"key": "fine"'))] == ["delivered"]

        async def drive():
            courier = delivery.Courier(settings, StoreThread())
            try:
                assert await courier.once() == 1  # slow's event: ops has it at once, the sink never answers
                crossed("fine", alert_at=())
                for _ in range(1000):
                    await courier.once()
                    if fine_delivered():
                        break
                    await asyncio.sleep(0.02)
                assert courier.busy, "slow's POST is still waiting on the sink"
            finally:
                await courier.close()

        asyncio.run(drive())
        assert fine_delivered()
        assert sorted(r.json["key"] for r in ops.accepted()) == ["fine", "slow"]
    sink.close()
    slow = AlertRow.get(AlertRow.body.contains('"key": "slow"'))
    assert (slow.state, slow.attempts) == ("pending", 0), "stopped mid-try: left to its lease, not recorded"
