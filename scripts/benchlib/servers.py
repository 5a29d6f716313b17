"""The servers one benchmark run measures: the fake OpenAI, bare mitmdump and the chain.

Every process started here is stopped by ``Servers.stop_all`` (the benchmark calls it from a
``finally``), and on Linux each is also told to die with the benchmark, so not even a
SIGKILLed benchmark leaves a gateway listening.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests import pinned_prices

ROOT = Path(__file__).resolve().parents[2]
MITMDUMP = str(Path(sys.executable).with_name("mitmdump"))
UPSTREAM_SECRET = "sk-bench-fake-upstream-key"  # the chain's "real" OpenAI key; the fake accepts any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def rss_mb(pid: int) -> float:
    """Resident set size of a live process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Server:
    name: str
    url: str  # base URL, no /v1
    process: subprocess.Popen
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid


class Servers:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self._started: list[Server] = []

    def fake_openai(self) -> Server:
        """The fake upstream over plain HTTP (no TLS cost on the far side of the proxies)."""
        process = self._spawn([sys.executable, "-m", "tests.fakes.openai_fake", "--port", "0", "--plain",
                               "--print-url"], stdout=subprocess.PIPE, env=os.environ)
        ready, _, _ = select.select([process.stdout], [], [], 30)
        line = process.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("http"):
            raise RuntimeError(f"the fake upstream did not start (exit code {process.poll()})")
        return self._track(Server("fake", line, process))

    def bare_mitmdump(self, upstream: str, *, stream_sse: bool = False) -> Server:
        """mitmdump with no script (it buffers every response), or with ``stream_sse`` only
        the few lines that stream event streams (``sse_passthrough.py``)."""
        port = free_port()
        script = ["-s", str(Path(__file__).with_name("sse_passthrough.py"))] if stream_sse else []
        return self._mitmdump("bare_sse" if stream_sse else "bare", port, [
            *script, "--mode", f"reverse:{upstream}@{port}",
        ], os.environ)

    def chain(self, upstream: str, db_url: str, home: Path) -> Server:
        """mitmdump -s addons/pouch.py in front of api.openai.com, routed to the fake, at the
        tests' prices (the benchmark's model keeps its price whatever the date)."""
        pinned_prices.write(home)
        port = free_port()
        return self._mitmdump("chain", port, [
            "-s", str(ROOT / "addons" / "pouch.py"),
            "--mode", f"reverse:https://api.openai.com@{port}",
            "--set", f"pouch_route=api.openai.com={upstream}",
            "--set", f"pouch_db={db_url}",
            "--set", "pouch_instance=bench",
            "--set", "pouch_admin=off",  # 127.0.0.1:8082 may be another gateway's on this host
            # What the chain sets itself, but only in its running hook: mitmdump accepts
            # connections before that, and would dial api.openai.com for them.
            "--set", "connection_strategy=lazy",
        ], dict(os.environ, OPENAI_API_KEY=UPSTREAM_SECRET, POUCH_HOME=str(home)))

    def workers(self, count: int, upstream: str, db_url: str, home: Path) -> Server:
        """The chain as ``pouch run --workers N`` runs it: ``count`` mitmdump processes behind
        HAProxy (benchlib/supervise.py: the same plan and supervisor, one worker included)."""
        pinned_prices.write(home)
        port = free_port()
        name = f"workers{count}"
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            process = self._spawn([sys.executable, str(Path(__file__).with_name("supervise.py")), str(count),
                                   "--mode", f"reverse:https://api.openai.com@{port}",
                                   "--set", f"pouch_route=api.openai.com={upstream}",
                                   "--set", f"pouch_db={db_url}", "--set", f"pouch_instance=bench-{count}w",
                                   "--set", "pouch_admin=off"],
                                  stdout=out, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, OPENAI_API_KEY=UPSTREAM_SECRET, POUCH_HOME=str(home)))
        server = self._track(Server(name, f"http://127.0.0.1:{port}", process, log))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{log.read_text()[-3000:]}")
            if "pouch: ready:" in log.read_text(errors="replace"):
                return server
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not get ready:\n{log.read_text()[-3000:]}")

    def _mitmdump(self, name: str, port: int, args: list[str], env: dict) -> Server:
        log = self.workdir / f"{name}.log"
        confdir = self.workdir / f"{name}-confdir"
        with open(log, "ab") as out:
            process = self._spawn([MITMDUMP, *args, "--set", "listen_host=127.0.0.1",
                                   "--set", f"confdir={confdir}", "--set", "flow_detail=0"],
                                  stdout=out, stderr=subprocess.STDOUT, env=env)
        server = self._track(Server(name, f"http://127.0.0.1:{port}", process, log))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} mitmdump exited:\n{log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return server
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{name} mitmdump did not start listening:\n{log.read_text()[-3000:]}")

    def _spawn(self, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent, **kwargs)

    def _track(self, server: Server) -> Server:
        self._started.append(server)
        return server

    def stop_all(self) -> None:
        """Stop every server, newest first (the chain settles its last requests on SIGTERM)."""
        for server in reversed(self._started):
            if server.process.poll() is None:
                server.process.terminate()
        for server in reversed(self._started):
            try:
                server.process.wait(15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
            if server.process.stdout:
                server.process.stdout.close()
        self._started.clear()
