"""A real gateway for end-to-end tests: mitmdump with the chain, routed to a fake provider.

One mitmdump serves two modes: a regular proxy (clients set HTTPS_PROXY and trust the
gateway's CA) and reverse mode in front of api.openai.com (clients set base_url).
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import openai

from pouch.store import database, ledger
from pouch.store.database import ReservationRow, UsageRow
from tests import pinned_prices

ROOT = Path(__file__).resolve().parent.parent
REAL_OPENAI_KEY = "sk-real-provider-key-never-shown-to-clients"
REAL_KEYS = {  # the gateway's environment: one real credential per provider
    "OPENAI_API_KEY": REAL_OPENAI_KEY,
    "ANTHROPIC_API_KEY": "sk-ant-real-provider-key",
    "GEMINI_API_KEY": "gm-real-provider-key",
    "GROQ_API_KEY": "gsk-real-provider-key",
    "AZURE_OPENAI_API_KEY": "azure-real-provider-key",
}


def free_ports(count: int) -> list[int]:
    """``count`` different free ports (a port just closed may be handed out again at once)."""
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    def __init__(self, home: Path, routes: dict[str, str], upstream_ca: str | None, options: dict | None = None,
                 tool: str = "mitmdump"):
        self.home = home
        self.port, self.reverse_port, self.web_port = free_ports(3)
        self.web_password = "test-web-password"
        options = dict(options or {})
        self.db_url = options.pop("pouch_db", None) or f"sqlite:///{home / 'pouch.db'}"
        self.confdir = home / "mitmproxy"
        self.log_path = home / "mitmdump.log"
        args = [
            str(Path(sys.executable).with_name(tool)), "-s", str(ROOT / "addons" / "pouch.py"),
            "--mode", f"regular@{self.port}",
            "--mode", f"reverse:https://api.openai.com@{self.reverse_port}",
            "--set", f"confdir={self.confdir}",
            "--set", f"pouch_db={self.db_url}",
        ]
        # No admin listener unless a test asks: every gateway would want 127.0.0.1:8082.
        options = {"pouch_instance": "test-gateway", "pouch_admin": "off", **(options or {})}
        if tool == "mitmweb":
            options = {"web_port": self.web_port, "web_password": self.web_password, "web_open_browser": "false",
                       "store_streamed_bodies": "true", **options}
        else:
            options = {"flow_detail": "0", **options}
        self.ports = (self.port, self.reverse_port) + ((self.web_port,) if tool == "mitmweb" else ())
        for host, url in routes.items():
            args += ["--set", f"pouch_route={host}={url}"]
        if upstream_ca:
            args += ["--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"]
        for name, value in options.items():
            args += ["--set", f"{name}={value}"]
        self.args = args
        self.env = dict(os.environ, **REAL_KEYS, POUCH_HOME=str(home))
        self.process: subprocess.Popen | None = None

    def start(self) -> Gateway:
        self.home.mkdir(parents=True, exist_ok=True)
        if not (self.home / "prices.json").exists():
            pinned_prices.write(self.home)  # the prices the tests run at, whatever the date
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mitmdump exited: {self.log_path.read_text()[-3000:]}")
            try:
                for port in self.ports:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                if self.rebound():
                    return self
                time.sleep(0.05)
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"mitmdump did not start: {self.log_path.read_text()[-3000:]}")

    def rebound(self) -> bool:
        """Left to its default listen host, the gateway moves mitmproxy's servers (up before the
        chain is loaded) to loopback: ready once both listen there."""
        if "listen_host=" in " ".join(self.args):
            return True
        log = self.log_path.read_text(errors="replace")
        return all(f"listening at 127.0.0.1:{port}" in log for port in (self.port, self.reverse_port))

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def ca_path(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_path))

    def client(self, secret: str, *, reverse: bool = False, **kwargs) -> openai.OpenAI:
        """The real openai SDK, through HTTPS_PROXY-style proxying or reverse mode."""
        kwargs.setdefault("max_retries", 0)
        if reverse:
            return openai.OpenAI(api_key=secret, base_url=f"http://127.0.0.1:{self.reverse_port}/v1", **kwargs)
        http_client = httpx2.Client(proxy=f"http://127.0.0.1:{self.port}", verify=self._tls(), timeout=30)
        return openai.OpenAI(api_key=secret, http_client=http_client, **kwargs)

    def async_client(self, secret: str, *, reverse: bool = False, **kwargs) -> openai.AsyncOpenAI:
        kwargs.setdefault("max_retries", 0)
        if reverse:
            return openai.AsyncOpenAI(api_key=secret, base_url=f"http://127.0.0.1:{self.reverse_port}/v1", **kwargs)
        http_client = httpx2.AsyncClient(proxy=f"http://127.0.0.1:{self.port}", verify=self._tls(), timeout=30,
                                         limits=httpx2.Limits(max_connections=200))
        return openai.AsyncOpenAI(api_key=secret, http_client=http_client, **kwargs)

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tls(self) -> ssl.SSLContext:
        """What a client trusts to talk through the proxy: the gateway's CA."""
        return self._tls()

    def open_store(self) -> None:
        database.open_store(self.db_url)

    def settled(self, expected_rows: int | None = None, timeout: float = 15) -> None:
        """Wait until the gateway has closed every reservation (settlement runs off the hot
        path, just after each response) and, if given, written ``expected_rows`` usage rows."""
        self.open_store()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ledger.open_reservations() == 0 and (expected_rows is None or UsageRow.select().count() >= expected_rows):
                return
            time.sleep(0.05)
        raise AssertionError(
            f"not settled: {ReservationRow.select().count()} reservations open, {UsageRow.select().count()} rows")
