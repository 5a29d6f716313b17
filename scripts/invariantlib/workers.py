"""The gateway as ``pouch run --workers N`` runs it: N mitmdump processes (pouch_instance
``inv-1``..``inv-N``, one confdir and CA) on one PostgreSQL store behind HAProxy, supervised by
pouch. It stands in for ``tests.gateway.Gateway`` (the same attributes the harness reads), and
can SIGKILL a worker and wait until the supervisor has started it again under its name.

``fresh_database`` gives the harness a store of its own: the database is created if missing and
emptied of pouch's tables and functions (so give it one it owns, never a real store).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from pouch.store import database
from tests import pinned_prices
from tests.gateway import REAL_KEYS, free_ports

POUCH = str(Path(sys.executable).with_name("pouch"))
INSTANCE = "inv"
START_WAIT = 120.0  # seconds for every worker and HAProxy (this 2-core machine, others testing)
DEFAULT_DATABASE = "pouch_inv"  # on POUCH_TEST_PG's server when no --db is given


def default_url() -> str | None:
    """POUCH_TEST_PG's server and role, database pouch_inv (not the tests' database)."""
    base = os.environ.get("POUCH_TEST_PG")
    return base.rsplit("/", 1)[0] + "/" + DEFAULT_DATABASE if base else None


def fresh_database(url: str) -> None:
    """Create ``url``'s database if missing (the role needs CREATEDB) and drop pouch's tables and
    functions in it, so every run starts from migration 1."""
    import psycopg2
    from playhouse.db_url import parse

    params = parse(url)
    try:
        connection = psycopg2.connect(**params)
    except psycopg2.OperationalError as e:
        if "does not exist" not in str(e):
            raise
        admin = psycopg2.connect(**{**params, "database": "postgres"})
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{params["database"]}"')
        admin.close()
        connection = psycopg2.connect(**params)
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'pouch%'")
        tables = [name for (name,) in cursor.fetchall()]
        if tables:
            cursor.execute("DROP TABLE IF EXISTS " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")
        cursor.execute("SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                       "WHERE n.nspname = current_schema() AND p.proname LIKE 'pouch%'")
        for (signature,) in cursor.fetchall():
            cursor.execute(f"DROP FUNCTION IF EXISTS {signature}")
    connection.close()


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class Workers:
    """``pouch --db URL run --workers N`` with a proxy and a reverse listener, routed to the fakes."""

    def __init__(self, home: Path, routes: dict[str, str], upstream_ca: str, db_url: str, count: int):
        self.home, self.db_url, self.count = home, db_url, count
        self.port, self.reverse_port = free_ports(2)
        self.confdir = home / "mitmproxy"
        self.log_path = home / "pouch-run.log"
        self.args = [POUCH, "--db", db_url, "run", "--workers", str(count),
                     "--mode", f"regular@{self.port}", "--mode", f"reverse:https://api.openai.com@{self.reverse_port}",
                     "--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}", "--set", f"pouch_instance={INSTANCE}",
                     "--set", "pouch_admin=off", "--set", "flow_detail=0"]
        for host, url in routes.items():
            self.args += ["--set", f"pouch_route={host}={url}"]
        self.env = dict(os.environ, **REAL_KEYS, POUCH_HOME=str(home))
        self.env.pop("POUCH_DB", None)
        self.process: subprocess.Popen | None = None

    def start(self) -> Workers:
        self.home.mkdir(parents=True, exist_ok=True)
        pinned_prices.write(self.home)
        with open(self.log_path, "ab") as log:
            # its own process group: stop() ends pouch, HAProxy and the workers, nothing else
            self.process = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, process_group=0)
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pouch run --workers exited: {self.output()[-3000:]}")
            if f"pouch: ready: {self.count} workers behind HAProxy" in self.output():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"pouch run --workers did not get ready: {self.output()[-3000:]}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # HAProxy first, then the workers settle
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # the group we started
                self.process.wait()

    # --- what the harness reads of a gateway ---------------------------------------------

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_path))

    def open_store(self) -> None:
        database.open_store(self.db_url)

    # --- one worker ----------------------------------------------------------------------

    def instance(self, worker: int) -> str:
        return f"{INSTANCE}-{worker}"

    def worker_pid(self, worker: int) -> int | None:
        wanted = f"pouch_instance={self.instance(worker)} "
        return next((pid for pid in children(self.process.pid) if wanted in cmdline(pid) + " "), None)

    def kill(self, worker: int) -> tuple[int, int]:
        """SIGKILL the worker (what it had in flight is left open in the store); returns its pid
        and how many times it had said it serves."""
        pid = self.worker_pid(worker)
        if pid is None:
            raise RuntimeError(f"worker {worker} is not running")
        served = self.serving_lines(worker)
        os.kill(pid, signal.SIGKILL)
        return pid, served

    def serving_lines(self, worker: int) -> int:
        return sum(line.startswith(f"[worker {worker}] ") and "pouch: serving " in line
                   for line in self.output().splitlines())

    def wait_restarted(self, worker: int, old_pid: int, served: int, timeout: float = START_WAIT) -> float:
        """Wait until the supervisor has started the worker again and it serves (it has
        recovered what its previous run left open by then); returns time.time() then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.worker_pid(worker)
            if pid not in (None, old_pid) and self.serving_lines(worker) > served and self._listening(pid):
                return time.time()
            time.sleep(0.1)
        raise RuntimeError(f"worker {worker} was not restarted within {timeout:.0f} s: {self.output()[-3000:]}")

    def _listening(self, pid: int) -> bool:
        """The restarted worker's loopback port takes connections (its port is on its command line)."""
        for part in cmdline(pid).split():
            if part.startswith("regular@127.0.0.1:"):
                try:
                    socket.create_connection(("127.0.0.1", int(part.rsplit(":", 1)[1])), timeout=0.5).close()
                    return True
                except OSError:
                    return False
        return False
