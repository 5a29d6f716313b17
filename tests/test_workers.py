"""``pouch run --workers 2`` as a user starts it: two gateway processes behind HAProxy, driven by
the real openai SDK through HTTPS_PROXY and through reverse mode. Requests spread over both
workers (each worker's own /metrics counts what it served), a worker SIGKILLed mid-request is
restarted under its name and the reservations it left open are charged, a public address beyond
loopback makes the workers require proxy authentication, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx2
import openai
import pytest

from pouch.cli import haproxy
from pouch.services import keys as key_service
from pouch.store import database, ledger
from pouch.store.database import ReservationRow, UsageRow
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import REAL_KEYS, free_ports

pytestmark = pytest.mark.skipif(haproxy.binary() is None, reason="haproxy not installed (scripts/bootstrap does)")
POUCH = str(Path(sys.executable).with_name("pouch"))
MODEL, HELLO = "gpt-4o-mini", [{"role": "user", "content": "hello workers"}]


def wait_for(what: str, check, timeout: float = 60, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def outside_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (where another host would connect)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


class Supervised:
    """``pouch run --workers 2 ...`` in its own process group, with its output in a file."""

    def __init__(self, home: Path, fake: FakeOpenAI, *extra: str, host: str = "127.0.0.1"):
        self.home, self.host = home, host
        self.port, self.reverse_port, self.admin_port = free_ports(3)
        self.log = home / "pouch-run.log"
        self.args = [POUCH, "run", "--workers", "2", "--listen-host", host,
                     "--mode", f"regular@{self.port}", "--mode", f"reverse:https://api.openai.com@{self.reverse_port}",
                     "--set", f"pouch_route=api.openai.com={fake.url}",
                     "--set", f"ssl_verify_upstream_trusted_ca={fake.ca_path}",
                     "--set", "pouch_instance=wt", "--set", f"pouch_admin=127.0.0.1:{self.admin_port}",
                     "--set", "pouch_metrics_public=true", *extra]
        self.process: subprocess.Popen | None = None

    def start(self) -> Supervised:
        env = dict(os.environ, **REAL_KEYS, POUCH_HOME=str(self.home))
        env.pop("POUCH_DB", None)
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(self.args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, process_group=0)
        wait_for("pouch: ready", lambda: self.ready() or self.process.poll() is not None, timeout=90)
        assert self.process.poll() is None, self.output()[-4000:]
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self) -> bool:
        return "pouch: ready: 2 workers behind HAProxy" in self.output()

    def metrics_url(self, worker: int) -> str:
        if worker == 1:
            return f"http://127.0.0.1:{self.admin_port}/metrics"
        found = re.search(rf"worker {worker} \(mitmdump.*admin API and /metrics on (http://[\d.:]+)", self.output())
        return found.group(1) + "/metrics"

    def served(self, worker: int) -> int:
        """Requests the worker counted (pouch_requests_total, every outcome): its own counters."""
        text = httpx2.get(self.metrics_url(worker), timeout=10).text
        return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("pouch_requests_total{")))

    def worker_pid(self, worker: int) -> int | None:
        return next((pid for pid in children(self.process.pid) if f"pouch_instance=wt-{worker} " in cmdline(pid)
                     or cmdline(pid).endswith(f"pouch_instance=wt-{worker} ")), None)

    def client(self, secret: str, *, reverse: bool = False, proxy_auth: bool = False) -> openai.OpenAI:
        ca = self.home / "mitmproxy" / "mitmproxy-ca-cert.pem"
        dial = "127.0.0.1" if self.host == "127.0.0.1" else self.host
        if reverse:
            return openai.OpenAI(api_key=secret, base_url=f"http://{dial}:{self.reverse_port}/v1", max_retries=0)
        credentials = f"pouch:{secret}@" if proxy_auth else ""
        http = httpx2.Client(proxy=f"http://{credentials}{dial}:{self.port}", verify=ssl.create_default_context(cafile=str(ca)),
                            timeout=60)
        return openai.OpenAI(api_key=secret, http_client=http, max_retries=0)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # our own group only: what this test started
                self.process.wait()


@pytest.fixture
def fake(tmp_path):
    with FakeOpenAI(tls_dir=tmp_path / "tls") as fake:
        yield fake


def new_key(budget: str = "10"):
    database.open_store()  # the default store under POUCH_HOME, as the workers' (isolated_home)
    return key_service.create(f"w{uuid.uuid4().hex[:8]}", budget=budget)


def test_requests_spread_over_both_workers_through_the_proxy_and_reverse_mode(isolated_home, fake):
    gateway = Supervised(isolated_home, fake).start()
    try:
        key, secret = new_key()
        for i in range(12):  # a new client each time: a new connection for HAProxy to place
            reply = gateway.client(secret, reverse=bool(i % 2)).chat.completions.create(model=MODEL, messages=HELLO)
            assert reply.choices[0].message.content == "echo: hello workers"
        assert all(r.headers["authorization"] == f"Bearer {REAL_KEYS['OPENAI_API_KEY']}" for r in fake.requests)
        wait_for("12 usage rows", lambda: UsageRow.select().where(UsageRow.key_name == key.name).count() == 12)
        served = [gateway.served(1), gateway.served(2)]
        assert sum(served) == 12 and min(served) > 0, served
        assert ledger.open_reservations() == 0
    finally:
        gateway.stop()


def test_a_killed_worker_is_restarted_and_what_it_left_open_is_charged(isolated_home, fake):
    gateway = Supervised(isolated_home, fake).start()
    try:
        key, secret = new_key()
        fake.behaviour["delay"] = 30.0  # held upstream until the worker is killed

        async def burst():
            clients = [gateway.client(secret, reverse=True) for _ in range(6)]
            asyncs = [openai.AsyncOpenAI(api_key=secret, base_url=str(c.base_url), max_retries=0, timeout=60)
                      for c in clients]
            return await asyncio.gather(*(c.chat.completions.create(model=MODEL, messages=HELLO) for c in asyncs),
                                        return_exceptions=True)

        outcomes = []
        sender = threading.Thread(target=lambda: outcomes.extend(asyncio.run(burst())), daemon=True)
        sender.start()
        held = wait_for("reservations held by worker 2", lambda: ReservationRow.select().where(
            ReservationRow.owner == "wt-2").count(), timeout=30)
        victim = gateway.worker_pid(2)
        os.kill(victim, signal.SIGKILL)
        wait_for("worker 2's restart", lambda: re.search(r"worker 2 \(pid \d+\) exited with code -9; restarting",
                                                         gateway.output()), timeout=30)
        # started again under its name, it charges in full what the killed run left open
        wait_for("worker 2's reservations charged", lambda: ReservationRow.select().where(
            ReservationRow.owner == "wt-2").count() == 0, timeout=60)
        recovered = UsageRow.select().where((UsageRow.key_name == key.name) & (UsageRow.outcome == "recovered"))
        assert recovered.count() == held
        fake.behaviour["delay"] = 0.0
        sender.join(60)
        assert not sender.is_alive()
        assert sum(isinstance(o, Exception) for o in outcomes) >= held  # their connections died with the worker
        new_pid = wait_for("worker 2 running again", lambda: gateway.worker_pid(2))
        assert new_pid != victim and alive(new_pid)
        wait_for("worker 2 serving again", lambda: re.search(
            r"\[worker 2\] .*pouch: serving", gateway.output().rsplit("exited with code -9", 1)[1]), timeout=60)
        for i in range(6):  # both workers serve again
            gateway.client(secret, reverse=bool(i % 2)).chat.completions.create(model=MODEL, messages=HELLO)
        wait_for("every reservation settled", lambda: ledger.open_reservations() == 0, timeout=30)
    finally:
        gateway.stop()


def test_ctrl_c_stops_haproxy_and_every_worker(isolated_home, fake):
    gateway = Supervised(isolated_home, fake).start()
    spawned = children(gateway.process.pid)
    assert len(spawned) == 3 and any("haproxy" in cmdline(pid) for pid in spawned)
    gateway.process.send_signal(signal.SIGINT)
    assert gateway.process.wait(40) == 0
    assert not [pid for pid in spawned if alive(pid)]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gateway.port), timeout=2).close()


def test_a_public_address_beyond_loopback_needs_proxy_authentication(isolated_home, fake):
    address = outside_address()
    if address is None:
        pytest.skip("this machine has no address beyond loopback")
    gateway = Supervised(isolated_home, fake, host=address).start()
    try:
        _, secret = new_key()
        assert "proxy authentication: on" in gateway.output()

        def connect(target: str, auth: str | None) -> bytes:
            with socket.create_connection((address, gateway.port), timeout=10) as s:
                header = f"Proxy-Authorization: Basic {auth}\r\n" if auth else ""
                s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{header}\r\n".encode())
                return s.recv(4096)

        # Every client reaches the workers from 127.0.0.1, yet none is trusted as local.
        assert connect("example.com:443", None).startswith(b"HTTP/1.1 407")
        authorised = base64.b64encode(f"pouch:{secret}".encode()).decode()
        assert connect("127.0.0.1:1", authorised).startswith(b"HTTP/1.1 403")  # authenticated: passthrough rules
        reply = gateway.client(secret, proxy_auth=True).chat.completions.create(model=MODEL, messages=HELLO)
        assert reply.choices[0].message.content == "echo: hello workers"
    finally:
        gateway.stop()
