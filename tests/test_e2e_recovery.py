"""A gateway killed with SIGKILL mid-flight: on restart nothing stays reserved and the
admitted request is charged (in full: pouch cannot know what the provider did with it)."""

import threading
import time

import openai

from pouch.domain.money import Money
from pouch.services import keys as key_service
from pouch.store import keys as key_store
from pouch.store import ledger
from pouch.store.database import ReservationRow, UsageRow
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import Gateway


def test_sigkill_mid_flight_then_restart(tmp_path):
    with FakeOpenAI(tls_dir=tmp_path / "tls") as fake:
        home = tmp_path / "gateway"
        first = Gateway(home, {"api.openai.com": fake.url}, str(fake.ca_path)).start()
        first.open_store()
        key, secret = key_service.create("crashy", budget="1")
        fake.behaviour["delay"] = 30  # the request is still upstream when the gateway dies
        failures = []

        def call():
            try:
                first.client(secret).chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=20)
            except openai.APIError as e:
                failures.append(e)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 15
        while not fake.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake.requests, "the request reached the provider"
        [held] = list(ReservationRow.select())
        first.process.kill()  # SIGKILL: no hook, no settlement
        first.process.wait()
        caller.join(15)
        assert failures, "the client saw the connection fail"
        assert ledger.open_reservations() == 1

        second = Gateway(home, {"api.openai.com": fake.url}, str(fake.ca_path)).start()  # same instance name
        try:
            second.settled(expected_rows=1)
            [row] = list(UsageRow.select())
            assert (row.reservation_id, row.outcome, row.cost_pico) == (held.id, "recovered", held.amount_pico)
            assert ledger.window_totals(key_store.get(key.id), key_service.utcnow()) == (Money(held.amount_pico), Money(0))
        finally:
            second.stop()
