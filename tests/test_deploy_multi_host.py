"""The several-machines recipe (README: "Several processes and machines"), with loopback
standing in for the hosts: three gateways, each with its own pouch_instance and its own
confdir holding the same CA files, on one PostgreSQL store, behind HAProxy running
deploy/haproxy.cfg itself (its addresses replaced). The openai SDK goes through HTTPS_PROXY,
with its pouch key as the proxy password as the recipe says, trusting the one CA: a burst over
all three holds the key's budget exactly, and every gateway served part of it."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import httpx2
import openai
import pytest

from pouch.cli import haproxy, trust
from pouch.domain.money import Money
from pouch.services import keys as key_service
from pouch.store import keys as key_store
from pouch.store import ledger
from pouch.store.database import UsageRow
from pouch.tokens.count import count_prompt
from tests import pinned_prices
from tests.conftest import fresh_postgres
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import Gateway, free_ports

PG_URL = os.environ.get("POUCH_TEST_PG")
pytestmark = [pytest.mark.skipif(not PG_URL, reason="PostgreSQL not available (scripts/test starts it)"),
              pytest.mark.skipif(haproxy.binary() is None, reason="haproxy not installed (scripts/bootstrap does)")]
DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "haproxy.cfg"
MODEL, HELLO = "gpt-4o-mini", [{"role": "user", "content": "hello hosts"}]
CA_FILES = ("mitmproxy-ca.pem", "mitmproxy-ca-cert.pem", "mitmproxy-ca-cert.cer", "mitmproxy-ca-cert.p12",
            "mitmproxy-ca.p12", "mitmproxy-dhparam.pem")


def deploy_config(listen_port: int, gateway_ports: list[int]) -> str:
    """deploy/haproxy.cfg with loopback for the hosts: its proxy frontend on ``listen_port``,
    its servers the gateways' ports (as many as the file names)."""
    text = DEPLOY.read_text().replace("bind :8080", f"bind 127.0.0.1:{listen_port}", 1)
    servers = re.findall(r"^    server (gw\d) 10\.0\.0\.\d+:8080 ", text, flags=re.M)
    assert len(servers) == len(gateway_ports)
    for name, port in zip(servers, gateway_ports):
        text = re.sub(rf"^    server {name} 10\.0\.0\.\d+:8080 ", f"    server {name} 127.0.0.1:{port} ", text,
                      count=1, flags=re.M)
    return text


def metrics_count(port: int) -> int:
    text = httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("pouch_requests_total{")))


def test_three_hosts_one_postgresql_behind_haproxy_hold_one_budget(tmp_path):
    fresh_postgres(PG_URL)
    ca_home = tmp_path / "ca"  # the CA made once, then copied to every host
    trust.ensure_ca(ca_home)
    price = pinned_prices.table().resolve(MODEL)
    worst = price.input * count_prompt(MODEL, {"messages": HELLO}, "chat") + price.highest_output * 50
    listen_port, *admin_ports = free_ports(4)
    with FakeOpenAI(tls_dir=tmp_path / "tls") as fake:
        fake.behaviour["delay"] = 3.0  # the whole burst in flight together
        gateways = []
        for n, admin_port in enumerate(admin_ports, start=1):
            gateway = Gateway(tmp_path / f"host{n}", {"api.openai.com": fake.url}, str(fake.ca_path), {
                "pouch_db": PG_URL, "pouch_instance": f"host-{n}", "pouch_admin": f"127.0.0.1:{admin_port}",
                "pouch_metrics_public": "true",
                # each stands in for a host listening beyond loopback: proxy authentication on
                "pouch_public_listen": "0.0.0.0"})
            gateway.confdir.mkdir(parents=True)
            for name in CA_FILES:
                if (ca_home / name).exists():
                    shutil.copy(ca_home / name, gateway.confdir / name)
            gateways.append(gateway)
        config = tmp_path / "haproxy.cfg"
        config.write_text(deploy_config(listen_port, [g.port for g in gateways]))
        balancer = None
        try:
            for gateway in gateways:
                gateway.start()
            assert len({g.ca_path.read_bytes() for g in gateways}) == 1  # one CA, three confdirs
            with open(tmp_path / "haproxy.log", "wb") as log:
                balancer = subprocess.Popen([haproxy.binary(), "-f", str(config), "-db"], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + 30
            while True:
                assert balancer.poll() is None and time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()
                try:
                    socket.create_connection(("127.0.0.1", listen_port), timeout=0.5).close()
                    break
                except OSError:
                    time.sleep(0.1)

            gateways[0].open_store()
            key, secret = key_service.create(f"hosts-{uuid.uuid4().hex[:6]}", budget=(worst * 10).json())
            tls = ssl.create_default_context(cafile=str(ca_home / "mitmproxy-ca-cert.pem"))

            async def one():
                http = httpx2.AsyncClient(proxy=f"http://pouch:{secret}@127.0.0.1:{listen_port}", verify=tls,
                                          timeout=60)
                client = openai.AsyncOpenAI(api_key=secret, http_client=http, max_retries=0)
                try:
                    await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=50)
                    return "ok"
                except openai.RateLimitError as e:
                    assert e.code == "insufficient_quota"
                    return "refused"
                finally:
                    await client.close()

            async def burst():
                return await asyncio.gather(*(one() for _ in range(45)))

            outcomes = asyncio.run(burst())
            assert outcomes.count("ok") == 10 and outcomes.count("refused") == 35
            for gateway in gateways:
                gateway.settled(expected_rows=10)
            rows = list(UsageRow.select().where(UsageRow.key_name == key.name))
            assert len(rows) == 10 and len({r.reservation_id for r in rows}) == 10
            total, held = ledger.window_totals(key_store.get(key.id), key_service.utcnow())
            assert held == Money(0) and Money(0) < total <= worst * 10
            assert len(fake.requests) == 10
            served = [metrics_count(port) for port in admin_ports]
            assert sum(served) == 45 and min(served) > 0, served  # every host took part
        finally:
            if balancer is not None:
                balancer.terminate()
                balancer.wait(15)
            for gateway in gateways:
                gateway.stop()
