"""Two gateways, one PostgreSQL store, one key: a burst split across both still admits only
what the budget covers - the reservation is one atomic update in the shared database."""

import asyncio
import os
import uuid

import openai
import pytest

from pouch.domain.money import Money
from pouch.services import keys as key_service
from pouch.store import keys as key_store
from pouch.store import ledger
from pouch.store.database import UsageRow
from pouch.tokens.count import count_prompt
from tests import pinned_prices
from tests.conftest import fresh_postgres
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import Gateway

PG_URL = os.environ.get("POUCH_TEST_PG")
pytestmark = pytest.mark.skipif(not PG_URL, reason="PostgreSQL not available (scripts/test starts it)")
MODEL, HELLO = "gpt-4o-mini", [{"role": "user", "content": "hello twins"}]


def test_two_gateways_share_one_budget(tmp_path):
    fresh_postgres(PG_URL)
    price = pinned_prices.table().resolve(MODEL)
    worst = price.input * count_prompt(MODEL, {"messages": HELLO}, "chat") + price.highest_output * 50
    with FakeOpenAI(tls_dir=tmp_path / "tls") as fake:
        fake.behaviour["delay"] = 4.0  # everything in flight together, though two gateways share the CPU
        gateways = [
            Gateway(tmp_path / name, {"api.openai.com": fake.url}, str(fake.ca_path),
                    {"pouch_db": PG_URL, "pouch_instance": name}).start()
            for name in ("twin-a", "twin-b")
        ]
        try:
            gateways[0].open_store()
            key, secret = key_service.create(f"shared-{uuid.uuid4().hex[:6]}", budget=(worst * 10).json())

            async def one(client):
                try:
                    await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=50)
                    return "ok"
                except openai.RateLimitError as e:
                    assert e.code == "insufficient_quota"
                    return "refused"

            async def burst():
                clients = [g.async_client(secret) for g in gateways]
                outcomes = await asyncio.gather(*(one(clients[i % 2]) for i in range(60)))
                for client in clients:
                    await client.close()
                return outcomes

            outcomes = asyncio.run(burst())
            assert outcomes.count("ok") == 10 and outcomes.count("refused") == 50
            for gateway in gateways:
                gateway.settled(expected_rows=10)
            rows = list(UsageRow.select().where(UsageRow.key_name == key.name))
            assert len(rows) == 10 and {r.reservation_id for r in rows}.__len__() == 10
            total, held = ledger.window_totals(key_store.get(key.id), key_service.utcnow())
            assert held == Money(0) and Money(0) < total <= worst * 10
            assert len(fake.requests) == 10
        finally:
            for gateway in gateways:
                gateway.stop()
