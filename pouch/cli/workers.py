"""``pouch run|web --workers N``: N gateway processes behind HAProxy on one address.

One mitmproxy process uses one core. Here each worker is a whole gateway (mitmdump; for
``pouch web``, mitmweb on worker 1), on loopback ports of its own, all sharing one confdir
(one CA), one store and the user's options; HAProxy (TCP mode, ``POUCH_HOME/haproxy.cfg``)
listens where the user asked and spreads connections over them. pouch supervises: a worker
that dies is started again under the same ``pouch_instance`` (``<name>-<n>``), which charges
what it left open (addons/gateway.py); Ctrl-C or SIGTERM stops HAProxy, then the workers.

- Behind HAProxy every client arrives from 127.0.0.1. When the public address is beyond
  loopback, workers get ``pouch_public_listen`` so they require proxy authentication and
  trust no client as local, as one gateway listening there would.
- The admin API is served by worker 1 on ``pouch_admin`` itself, not through HAProxy: it is
  store-backed, so any worker answers alike, and this way it sees callers' real addresses (its
  limit on wrong tokens is per address). Workers 2..N serve theirs on loopback ports of their
  own, for their ``/metrics``: counters are per process, as Prometheus expects; scrape each.
- mitmweb (``pouch web``) runs on worker 1 and shows only the flows worker 1 serves.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from pouch.admin.server import parse_listen
from pouch.cli import haproxy, mitm_options
from pouch.services import perimeter
from pouch.store import database

DEFAULT_ADMIN = "127.0.0.1:8082"
# What pouch sets on each worker itself, so the user's value is left out of its command line.
PER_WORKER = {"mode", "listen_host", "listen_port", "pouch_instance", "pouch_public_listen"}
START_WAIT = 60.0  # seconds for a worker or HAProxy to start listening
QUIET_WAIT = 10.0  # seconds listening after which a worker that logs nothing counts as up
STOP_WAIT = 20.0  # seconds for a worker to settle its requests in flight on SIGTERM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Child:
    label: str  # "worker 1", "haproxy"
    argv: list[str]
    addresses: tuple[tuple[str, int], ...]  # where it listens when up
    process: subprocess.Popen | None = None
    started: float = 0.0
    quick_deaths: int = 0  # deaths in a row within a minute of starting
    due: float | None = None  # when to start it again
    ready_line: str | None = None  # what it prints once it serves (None: listening is enough)
    ready: threading.Event = field(default_factory=threading.Event)
    listening_since: float | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, process_group=0, preexec_fn=_die_with_parent)
        self.started, self.due = time.monotonic(), None
        self.ready.clear()
        self.listening_since = None
        threading.Thread(target=self._relay, args=(self.process,), daemon=True).start()

    def _relay(self, process: subprocess.Popen) -> None:
        """Its output, each line marked with which child said it; and whether it said it serves."""
        for line in process.stdout:
            text = line.decode(errors="replace")
            if self.ready_line and self.ready_line in text:
                self.ready.set()
            sys.stdout.write(f"[{self.label}] {text}")
            sys.stdout.flush()

    def up(self) -> bool:
        """Listening and, if it says when it serves, said so (or was told to be quiet: -q)."""
        if not self.listening():
            return False
        self.listening_since = self.listening_since or time.monotonic()
        return self.ready_line is None or self.ready.is_set() or time.monotonic() - self.listening_since > QUIET_WAIT

    def listening(self) -> bool:
        try:
            for address in self.addresses:
                socket.create_connection(address, timeout=0.5).close()
            return True
        except OSError:
            return False


def _die_with_parent() -> None:
    if sys.platform == "linux":  # not even a SIGKILLed pouch leaves a gateway listening
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Worker:
    number: int
    tool: str
    name: str  # its pouch_instance
    ports: tuple[int, ...]  # its loopback port for each public listener, in order
    admin: str | None  # where its admin API (and /metrics) listens; None: off
    argv: list[str] = field(default_factory=list)


@dataclass
class Plan:
    workers: list[Worker]
    frontends: list[haproxy.Frontend]
    public_listen: str  # "" when every listener is on loopback
    config_path: Path

    def describe(self) -> str:
        lines = [f"{len(self.workers)} gateway processes behind HAProxy ({self.config_path}), sharing one CA, "
                 "store and set of options; a worker that dies is restarted under its name:"]
        for w in self.workers:
            where = ", ".join(f"{f.name} on 127.0.0.1:{p}" for f, p in zip(self.frontends, w.ports))
            admin = f"; admin API and /metrics on http://{w.admin}" if w.admin else ""
            lines.append(f"  worker {w.number} ({w.tool}, pouch_instance {w.name}): {where}{admin}")
        if self.workers[0].tool == "mitmweb":
            lines.append("  the web UI is worker 1's: it shows the flows worker 1 serves, not the others'")
        if self.public_listen:
            lines.append(f"  clients reach HAProxy on {self.public_listen}: the workers treat them as they would "
                         "there (pouch_public_listen), though each arrives from 127.0.0.1")
        return "\n".join(lines) + "\n"


def make_plan(tool: str, port: int, db: str | None, extra: tuple[str, ...], opts, count: int, command) -> Plan:
    """Each worker's command line (``command`` is run.command) and HAProxy's frontends, for the
    listeners ``opts`` describes. Sets pouch_public_listen in this process too, so the banner
    says what the workers will do."""
    from pouch.cli.run import listeners

    found = listeners(opts)
    for listener in found:
        if listener.mode.transport_protocol == "udp" or not listener.port:  # HTTP/3 to a reverse listener too
            raise click.ClickException(f"--workers puts a TCP load balancer in front: {listener.mode.full_spec} "
                                       "is not a TCP listener with a port (regular, upstream, reverse, socks5 are)")
    if not found:
        raise click.ClickException("--workers needs at least one listener (--mode)")
    # The operator's own pouch_public_listen wins (a load balancer of theirs in front of a loopback
    # listener): dropped, it left the workers taking every client for a local one.
    public = mitm_options.deferred(opts, "pouch_public_listen") or \
        next((l.host or "::" for l in found if not perimeter.is_loopback(l.host)), "")
    perimeter.public_listen = public
    base = mitm_options.deferred(opts, "pouch_instance") or \
        f"{socket.gethostname()}:{'+'.join(str(l.port) for l in found)}"
    admin_off = parse_listen(mitm_options.deferred(opts, "pouch_admin") or DEFAULT_ADMIN) is None
    web_only = set(mitm_options.tool_options("mitmweb").keys()) - set(mitm_options.tool_options("mitmdump").keys())
    workers = []
    for n in range(1, count + 1):
        worker_tool = tool if n == 1 else "mitmdump"
        ports = tuple(free_port() for _ in found)
        admin = None if admin_off else (mitm_options.deferred(opts, "pouch_admin") or DEFAULT_ADMIN) if n == 1 \
            else f"127.0.0.1:{free_port()}"
        leave_out = PER_WORKER | ({"pouch_admin"} if n > 1 else set()) | (web_only if worker_tool != tool else set())
        args = mitm_options.without(tool, extra, leave_out)
        for listener, worker_port in zip(found, ports):
            mode = listener.mode
            args += ["--mode", f"{mode.type_name}{':' + mode.data if mode.data else ''}@127.0.0.1:{worker_port}"]
        settings = {"pouch_instance": f"{base}-{n}", "pouch_public_listen": public}
        if n > 1:
            settings["pouch_admin"] = admin or "off"
        args += [a for name, value in settings.items() if value for a in ("--set", f"{name}={value}")]
        argv, worker_opts = command(worker_tool, ports[0], db, tuple(args))
        if worker_opts is None:
            raise click.ClickException(f"worker {n}'s command line does not parse: {' '.join(argv)}")
        workers.append(Worker(n, worker_tool, f"{base}-{n}", ports, admin, argv))
    frontends = [haproxy.Frontend(f"{l.mode.type_name}-{l.port}", l.host, l.port, tuple(w.ports[i] for w in workers))
                 for i, l in enumerate(found)]
    return Plan(workers, frontends, public, database.home().absolute() / "haproxy.cfg")


class Supervisor:
    def __init__(self, plan: Plan, haproxy_binary: str):
        self.plan = plan
        # a worker listens before its chain runs (store claimed, reservations recovered): it says so
        self.workers = [Child(f"worker {w.number}", w.argv, tuple(("127.0.0.1", p) for p in w.ports),
                              ready_line="pouch: serving ") for w in plan.workers]
        dial = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
        self.haproxy = Child("haproxy", [haproxy_binary, "-f", str(plan.config_path), "-db"],
                             tuple((dial.get(f.host, f.host), f.port) for f in plan.frontends))
        self.stopping = threading.Event()

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, lambda *_: self.stopping.set())
        self.plan.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.plan.config_path.write_text(haproxy.config(self.plan.frontends, len(self.workers)))
        try:
            if not self._start_all():
                return 0 if self.stopping.is_set() else 1
            public = ", ".join(f"{haproxy.bind(f.host, f.port).split(' ')[0]}" for f in self.plan.frontends)
            print(f"pouch: ready: {len(self.workers)} workers behind HAProxy on {public}", flush=True)
            while not self.stopping.wait(0.2):
                for child in (*self.workers, self.haproxy):
                    self._watch(child)
            return 0
        finally:
            self._stop_all()

    def _start_all(self) -> bool:
        """Every worker, then HAProxy, each listening (bounded); False if one failed or we were stopped."""
        for child in self.workers:
            child.start()
        for child in self.workers:
            if not self._wait_listening(child):
                return False
        self.haproxy.start()
        return self._wait_listening(self.haproxy)

    def _wait_listening(self, child: Child) -> bool:
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline and not self.stopping.is_set():
            if child.process.poll() is not None:
                print(f"pouch: {child.label} exited with code {child.process.returncode} while starting; "
                      "stopping (its lines above say why)", file=sys.stderr, flush=True)
                return False
            if child.up():
                return True
            time.sleep(0.1)
        if not self.stopping.is_set():
            print(f"pouch: {child.label} did not start listening within {START_WAIT:.0f} s; stopping",
                  file=sys.stderr, flush=True)
        return False

    def _watch(self, child: Child) -> None:
        """Start a dead child again: at once the first time, then backing off while it keeps
        dying within a minute of starting (a taken instance name, a broken store...)."""
        now = time.monotonic()
        if child.due is not None:
            if now >= child.due:
                child.start()
            return
        code = child.process.poll()
        if code is None:
            return
        child.quick_deaths = child.quick_deaths + 1 if now - child.started < 60 else 0
        delay = min(30.0, 0.5 * 2 ** child.quick_deaths) if child.quick_deaths > 1 else 0.0
        print(f"pouch: {child.label} (pid {child.process.pid}) exited with code {code}; restarting it"
              + (f" in {delay:.0f} s" if delay else ""), file=sys.stderr, flush=True)
        child.due = now + delay

    def _stop_all(self) -> None:
        """HAProxy first (no new connections), then the workers, which settle what is in flight."""
        for group in ([self.haproxy], self.workers):
            running = [c.process for c in group if c.process is not None and c.process.poll() is None]
            for process in running:
                process.terminate()
            deadline = time.monotonic() + STOP_WAIT
            for process in running:
                try:
                    process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
