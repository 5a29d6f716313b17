"""PostgreSQL restarted under traffic: while it is down the gateway answers 503 (nothing
unaccounted goes upstream); what it admitted before is settled once it is back (settlements are
retried, and the store threads connect again); nothing is left reserved after recovery.

The test makes a PostgreSQL cluster of its own (pg_createcluster, as root) on a free port, so
stopping it disturbs nothing else."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time

import openai
import pytest

from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.services import keys as key_service
from pouch.store import keys as key_store
from pouch.store import ledger
from pouch.store.database import ReservationRow, UsageRow
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import Gateway, free_port

CLUSTER = "pouchrestart"
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("pg_createcluster") or not shutil.which("pg_ctlcluster"),
    reason="needs root and Debian's PostgreSQL cluster tools (pg_createcluster) to make a cluster of its own")


def _pg(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def cluster():
    version = sorted(os.listdir("/usr/lib/postgresql"))[-1]
    subprocess.run(["pg_dropcluster", "--stop", version, CLUSTER], capture_output=True)
    port = free_port()
    _pg("pg_createcluster", version, CLUSTER, "-p", str(port))
    try:
        _pg("pg_ctlcluster", version, CLUSTER, "start")
        sql = "CREATE USER pouch PASSWORD 'pouch'; CREATE DATABASE pouch OWNER pouch;"
        _pg("su", "postgres", "-c", f"psql -q -p {port} -c \"{sql.split(';')[0]}\" -c \"{sql.split(';')[1]}\"")
        yield version, f"postgresql://pouch:pouch@127.0.0.1:{port}/pouch"
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, CLUSTER], capture_output=True)


def test_a_postgresql_restart_mid_burst_gives_503s_and_loses_no_settlement(cluster, tmp_path):
    version, url = cluster
    with FakeOpenAI(tls_dir=tmp_path / "tls") as fake:
        gateway = Gateway(tmp_path / "gw", {"api.openai.com": fake.url}, str(fake.ca_path),
                          {"pouch_db": url, "pouch_store_timeout": "2"}).start()
        try:
            gateway.open_store()
            key, secret = key_service.create("burst", budget="10")

            async def one(i):
                await asyncio.sleep(i * 0.05)
                client = gateway.async_client(secret)
                try:
                    stream = await client.chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=30,
                        stream=True, extra_headers={"x-fake-chunk-delay": "0.1", "x-fake-chunks": "10"})
                    async for _ in stream:
                        pass
                    return "ok"
                except openai.APIStatusError as e:
                    return e.status_code
                except openai.APIConnectionError:
                    return "cut"
                finally:
                    await client.close()

            async def burst():
                requests = asyncio.gather(*(one(i) for i in range(60)))
                await asyncio.sleep(1.0)  # some admitted and streaming, more to come
                await asyncio.to_thread(_pg, "pg_ctlcluster", version, CLUSTER, "stop", "-m", "fast")
                await asyncio.sleep(1.5)
                await asyncio.to_thread(_pg, "pg_ctlcluster", version, CLUSTER, "start")
                return await requests

            outcomes = asyncio.run(burst())
            assert 503 in outcomes, "while the store was down, requests were refused"
            assert "ok" in outcomes
            # admitted ones settle once the store is back: every reservation closes, each with its row
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    gateway.open_store()
                    if ledger.open_reservations() == 0 and UsageRow.select().count() >= outcomes.count("ok"):
                        break
                except Exception:
                    pass
                time.sleep(0.5)
            assert ReservationRow.select().count() == 0, "no reservation left open"
            rows = list(UsageRow.select())
            assert len(rows) >= outcomes.count("ok"), "every answered request was billed"
            assert len({r.reservation_id for r in rows}) == len(rows), "each once"
            spent, held = ledger.window_totals(key_store.get(key.id), utcnow())
            assert spent == Money(sum(r.cost_pico for r in rows)) and held == Money(0)
        finally:
            gateway.stop()
