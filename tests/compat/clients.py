"""The compatibility suite's harness: real third-party clients, installed by scripts/compat-install
(pinned in scripts/compat-clients.txt) into a cache outside the checkout, each run as a user runs
it: from a bash that evaluated ``pouch env --key <pouch key>``, with nothing else of this
process's environment, against a real gateway (tests/gateway.py) in front of the fakes.

``Harness.run`` drives one client once with a new key (mock or real) and keeps what the tests
check: the client's output, what reached the fakes, the key's usage rows and every refusal the
gateway logged meanwhile. The gateway tunnels nothing but LLM hosts (``pouch_passthrough=none``):
the suite runs offline, and what a client fetches elsewhere (update checks, feature flags) is
refused at CONNECT instead of going to the internet.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.domain.usage import Usage
from pouch.pricing.price import cost
from pouch.services import keys as key_service
from pouch.store import ledger
from pouch.store.database import RefusalRow, UsageRow
from tests import pinned_prices
from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.openai_fake import FakeOpenAI
from tests.fakes.server import RecordedRequest
from tests.gateway import REAL_KEYS, ROOT, Gateway

CACHE = Path(os.environ.get("POUCH_COMPAT_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pouch-compat")
NPM_BIN = CACHE / "npm" / "node_modules" / ".bin"
NODE_MODULES = CACHE / "npm" / "node_modules"
VENV_BIN = CACHE / "venv" / "bin"
INSTALLER = ROOT / "scripts" / "compat-install"
POUCH = str(Path(sys.executable).with_name("pouch"))
HERE = Path(__file__).resolve().parent

MOCK_REPLY = "mock reply from pouch"
# The requests a provider bills; anything else a client sends (count_tokens, model lists,
# settings) is free and has no usage row.
PAID = {("POST", "/v1/messages"), ("POST", "/v1/responses"), ("POST", "/v1/chat/completions")}


@functools.cache
def _installer_ran() -> None:
    """scripts/test runs the installer before pytest (and says so with POUCH_COMPAT_INSTALLED=1);
    a pytest run of its own runs it here, once."""
    if os.environ.get("POUCH_COMPAT_INSTALLED") == "1":
        return
    try:
        subprocess.run([str(INSTALLER)], timeout=100, check=False)  # within the test's own timeout
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/compat-install did not finish in 100 s: run it on its own first (it installs "
                    "the compatibility suite's clients once, in a minute or so)", pytrace=False)


def require(registry: str) -> None:
    """Skip when scripts/compat-install found the registry unreachable; fail when it could not
    install (so a broken install is never a silent skip)."""
    _installer_ran()
    status_file = CACHE / f"{registry}.status"
    status = status_file.read_text().strip() if status_file.exists() else f"failed {status_file} is missing"
    word, _, why = status.partition(" ")
    if word == "unreachable":
        pytest.skip(f"{registry} registry unreachable: {why}")
    if word != "ok":
        pytest.fail(f"the {registry} clients of the compatibility suite are not installed: {why} "
                    f"(run scripts/compat-install)", pytrace=False)


@dataclasses.dataclass
class Run:
    """One client run and what the gateway and the fakes saw of it."""

    kind: str  # "real" or "mock"
    key_name: str
    home: Path  # the client's HOME
    started: datetime
    process: subprocess.CompletedProcess
    reached: list[RecordedRequest]  # every HTTP request the fakes received (WebSocket handshakes too)
    messages: list[object]  # every message a fake received on a WebSocket
    rows: list[UsageRow]
    refusals: list[RefusalRow]

    @property
    def paid_calls(self) -> list[dict]:
        """The bodies of the calls that reached the fake and that the provider bills: HTTP
        requests, and ``response.create`` messages on a Responses WebSocket."""
        return [r.body for r in self.reached if (r.method, r.path.split("?")[0]) in PAID] + \
            [m for m in self.messages if isinstance(m, dict) and m.get("type") == "response.create"]

    @property
    def output(self) -> str:
        return self.process.stdout

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.output.splitlines() if line.startswith("{")]


def run_bounded(command: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``bash -c SCRIPT NAME CLIENT ...`` in a process group of its own, stdin closed; past
    ``timeout`` the whole group is killed (a helper the client spawned would otherwise hold its
    output open) and the test fails."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{Path(command[4]).name} did not finish in {timeout} s\nstdout: {stdout[-1500:]}\n"
                    f"stderr: {stderr[-1500:]}", pytrace=False)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


class Harness:
    """The fakes and one gateway (per test module) in front of them."""

    def __init__(self, root: Path, options: dict | None = None):
        self.openai = FakeOpenAI(tls_dir=root / "openai-tls")
        self.anthropic = FakeAnthropic(tls_dir=root / "anthropic-tls")
        self.fakes = (self.openai, self.anthropic)
        for fake in self.fakes:
            fake.start()
        bundle = root / "upstream-cas.pem"
        bundle.write_text("".join(Path(fake.ca_path).read_text() for fake in self.fakes))
        routes = {"api.openai.com": self.openai.url, "api.anthropic.com": self.anthropic.url}
        self.gateway = Gateway(root / "gateway", routes, str(bundle), {
            "pouch_passthrough": "none", "pouch_mock_reply": MOCK_REPLY, **(options or {})}).start()
        self.root = root
        self.options = options or {}

    def stop(self) -> None:
        self.gateway.stop()
        for fake in self.fakes:
            fake.stop()

    def run(self, kind: str, command: list[str], *, env: dict[str, str] | None = None, timeout: float = 60) -> Run:
        """``command`` from a bash that evaluated ``pouch env --key`` with a new key (``kind``:
        "real" or "mock"), HOME a new empty directory; ``env`` adds the client's own settings."""
        self.gateway.open_store()
        key, secret = key_service.create(f"{kind}{uuid.uuid4().hex[:8]}", budget="5", mock=kind == "mock")
        home = self.root / f"home-{key.name}"
        home.mkdir()
        for fake in self.fakes:
            fake.reset()
        started = utcnow()
        # pouch env is told what the gateway was started with that changes its lines (proxy authentication)
        told = " ".join(f"--set {name}={value}" for name, value in self.options.items() if name == "pouch_proxy_auth")
        script = f'eval "$("$POUCH" env --key "$POUCH_KEY" --port "$POUCH_PORT" {told})" && exec "$@"'
        process = run_bounded(
            ["bash", "-c", script, "compat", *command], cwd=home, timeout=timeout,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
                 "POUCH_HOME": str(self.gateway.home),  # pouch env finds the gateway's CA there
                 "POUCH": POUCH, "POUCH_KEY": secret, "POUCH_PORT": str(self.gateway.port), **(env or {})})
        self._settled()
        rows = list(UsageRow.select().where(UsageRow.key_name == key.name).order_by(UsageRow.id))
        refusals = list(RefusalRow.select().where(RefusalRow.ts >= started).order_by(RefusalRow.id))
        reached = [request for fake in self.fakes for request in fake.requests]
        messages = [message.body for fake in self.fakes for message in getattr(fake, "messages", ())]
        return Run(kind, key.name, home, started, process, reached, messages, rows, refusals)

    def _settled(self, timeout: float = 15) -> None:
        """Every reservation closed: each answered request's usage row is written."""
        deadline = time.monotonic() + timeout
        while ledger.open_reservations() and time.monotonic() < deadline:
            time.sleep(0.05)

    @property
    def reverse_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.reverse_port}/v1"


def harness(tmp_path_factory, options: dict | None = None):
    """A module fixture's body: ``yield from harness(tmp_path_factory)``."""
    made = Harness(tmp_path_factory.mktemp("compat"), options)
    try:
        yield made
    finally:
        made.stop()


# -- what every case asserts ------------------------------------------------------------------


def assert_ran(run: Run) -> None:
    assert run.process.returncode == 0, \
        f"exit {run.process.returncode}\nstdout: {run.process.stdout[-1500:]}\nstderr: {run.process.stderr[-1500:]}"


def expected_cost(row: UsageRow) -> Money:
    usage = Usage(input_tokens=row.input_tokens, cached_tokens=row.cached_tokens,
                  cache_write_5m_tokens=row.cache_write_5m_tokens, cache_write_1h_tokens=row.cache_write_1h_tokens,
                  output_tokens=row.output_tokens, reasoning_tokens=row.reasoning_tokens)
    price = pinned_prices.table().resolve(row.model, row.provider, row.ts)
    assert price is not None, f"{row.provider}/{row.model} has no price at {row.ts}"
    return cost(price, usage)


def assert_metered(run: Run, models: list[str] | None = None) -> None:
    """Each paid call has exactly one usage row, for the model asked for, at the pinned price of
    the tokens in the row. A real key's rows are matched one by one with the paid calls the fake
    received, which carried the real credential, never the pouch key; a mock key's are mock rows,
    none charged. ``models``: the set of models the client asked for."""
    assert run.rows, "no usage row"
    if run.kind == "real":
        paid = run.paid_calls
        assert len(run.rows) == len(paid), f"{len(paid)} paid calls reached the fake, {len(run.rows)} usage rows"
        assert sorted(row.model for row in run.rows) == sorted(call["model"] for call in paid)
        for request in run.reached:
            sent = credential(request)
            assert sent is None or sent.removeprefix("Bearer ") in REAL_KEYS.values(), \
                f"{request.method} {request.path} went upstream with a credential that is not the real key"
    else:
        assert models is not None, "a mock key's rows are checked against the models the client names"
    if models is not None:
        assert {row.model for row in run.rows} == set(models)
    assert any(row.output_tokens > 0 for row in run.rows), "no answer was metered"
    for row in run.rows:
        assert (row.mock, row.outcome) == (run.kind == "mock", "ok" if run.kind == "real" else "mock")
        assert row.status in (200, None), row.status  # None: a call on a WebSocket has no HTTP status
        # a mock prewarm ("generate": false, Codex over WebSocket) writes nothing: 0 output
        assert row.input_tokens > 0 and (row.output_tokens > 0 or run.kind == "mock")
        assert row.cost_pico == expected_cost(row).pico > 0, (row.model, row.cost_pico)


def assert_tokens(run: Run, input_tokens: int, output_tokens: int) -> None:
    """The rows' tokens are what the client was told it used."""
    rows = (sum(row.input_tokens for row in run.rows), sum(row.output_tokens for row in run.rows))
    assert rows == (input_tokens, output_tokens)


def credential(request: RecordedRequest) -> str | None:
    return request.headers.get("x-api-key") or request.headers.get("authorization")


def assert_mock_never_upstream(run: Run) -> None:
    """No request of a mock key's client reached the provider, with the mock key or with the real
    one, and nothing paid did. A request that carries no key at all (Claude Code's public MCP
    directory) is no key's: on a connection without proxy credentials pouch cannot tell whose it
    is, and nothing of the operator's goes with it."""
    assert run.kind == "mock"
    keyed = [(r.method, r.path) for r in run.reached if credential(r) is not None]
    assert not keyed, f"a mock key's requests reached the provider: {keyed}"
    assert not run.paid_calls and not run.messages, "a mock key's calls reached the provider"


def assert_nothing_refused(run: Run) -> None:
    """No flow of the client's normal operation was refused (the refusal log, every key: a
    request without a key is refused too)."""
    refused = [(r.status, r.reason, r.message) for r in run.refusals]
    assert not refused, f"refused: {refused}"
