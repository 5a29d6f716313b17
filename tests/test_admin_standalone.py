"""``pouch admin`` as an operator runs it, and ``/readyz`` when the store goes away: a SQLite
file moved out from under it, a PostgreSQL server cut off (through a relay this test closes,
since the server itself is shared) and back."""

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pouch.domain.periods import utcnow
from pouch.store import admin_tokens, database
from tests.admin_server import Api, Served, error_of
from tests.conftest import PG_URL, fresh_postgres
from tests.gateway import free_port


def test_readyz_says_503_while_the_sqlite_file_is_gone(store, isolated_home):
    token = admin_tokens.create("ops", "viewer", utcnow())[1]
    served = Served()
    api = Api(served.url)
    files = sorted(isolated_home.glob("pouch.db*"))
    try:
        assert api.get("/readyz").status_code == 200
        for path in files:
            path.rename(path.with_name("moved-" + path.name))
        assert "the store does not answer" in error_of(api.get("/readyz"), 503)
        assert not (isolated_home / "pouch.db").exists(), "a readiness check never creates the store"
        assert api.get("/healthz").status_code == 200, "the process is up all the same"
        for path in files:
            path.with_name("moved-" + path.name).rename(path)
        assert api.get("/readyz").json() == {"status": "ready"}
        assert api.get("/api/keys", token).status_code == 200
    finally:
        api.close()
        served.stop()


class Relay:
    """A TCP relay on a loopback port to ``target``; ``cut()`` closes it and every connection
    through it, ``mend()`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.mend()

    def mend(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; close alone would not
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.sockets.clear()


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL not available (scripts/test starts it when installed)")
def test_readyz_and_the_api_follow_postgresql_away_and_back(isolated_home):
    fresh_postgres(PG_URL)
    relay = Relay(("127.0.0.1", 5432))
    url = PG_URL.replace("@127.0.0.1/", f"@127.0.0.1:{relay.port}/")
    assert url != PG_URL
    db = database.open_store(url)
    token = admin_tokens.create("ops", "admin", utcnow())[1]
    served = Served()
    api = Api(served.url)
    try:
        assert api.get("/readyz").status_code == 200
        assert api.post("/api/keys", token, {"name": "before"}).status_code == 201
        relay.cut()
        assert "the store does not answer" in error_of(api.get("/readyz"), 503)
        assert "the store does not answer" in error_of(api.get("/api/keys", token), 503)
        assert "the store does not answer" in error_of(api.post("/api/keys", token, {"name": "during"}), 503)
        relay.mend()
        assert api.get("/readyz").status_code == 200
        assert [k["name"] for k in api.get("/api/keys", token).json()] == ["before"]
        assert api.post("/api/keys", token, {"name": "after"}).status_code == 201
    finally:
        api.close()
        served.stop()
        relay.cut()
        db.close()


def test_pouch_admin_serves_a_store_and_stops_on_sigterm(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    database.open_store(url)
    token = admin_tokens.create("ops", "viewer", utcnow())[1]
    port = free_port()
    pouch = str(Path(sys.executable).with_name("pouch"))
    process = subprocess.Popen([pouch, "admin", "--db", url, "--listen", f"127.0.0.1:{port}"],
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ, POUCH_DB=""))
    try:
        assert process.stderr.readline().strip() == f"pouch admin API on http://127.0.0.1:{port} (Ctrl-C stops it)"
        api = Api(f"http://127.0.0.1:{port}")
        assert api.get("/healthz").json() == {"status": "ok"}
        assert api.get("/api/keys", token).json() == []
        assert error_of(api.post("/api/keys", token, {"name": "x"}), 403)
        api.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_pouch_admin_says_what_is_wrong_with_listen(tmp_path):
    pouch = str(Path(sys.executable).with_name("pouch"))
    db = f"sqlite:///{tmp_path / 'x.db'}"
    bad = subprocess.run([pouch, "admin", "--db", db, "--listen", "8082"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "give HOST:PORT" in bad.stderr
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        busy = subprocess.run([pouch, "admin", "--db", db, "--listen", f"127.0.0.1:{port}"], capture_output=True,
                              text=True, timeout=60)
    assert busy.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr


def test_the_run_command_prints_the_dashboard_url_and_a_token_that_works(tmp_path, monkeypatch):
    from pouch.cli import admin as admin_cli
    from pouch.cli import mitm_options

    port, admin_port = free_port(), free_port()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POUCH_") and not k.endswith("_PROXY")}
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(Path(sys.executable).with_name("pouch")), "run", "--demo", "--port", str(port),
                                    "--set", f"pouch_admin=127.0.0.1:{admin_port}"], env={**env, "POUCH_HOME": str(home)},
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        api = Api(f"http://127.0.0.1:{admin_port}")
        for _ in range(600):  # until the gateway serves the admin API (it says so when it cannot)
            if process.poll() is not None or "admin API on" in log.read_text(errors="replace"):
                break
            threading.Event().wait(0.1)
        output = log.read_text(errors="replace")
        line = next(line for line in output.splitlines() if line.startswith("Dashboard and admin API:"))
        url, token = line.split()[4], line.split()[-1]
        assert url == f"http://127.0.0.1:{admin_port}/" and token.startswith("pouch-admin-")
        assert [k["name"] for k in api.get("/api/keys", token).json()] == ["demo"]
        api.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)

    monkeypatch.setenv("POUCH_HOME", str(home))
    database.open_store()
    assert admin_cli.first_run_token() == token, "the same token every run"
    assert oct((home / "admin-token").stat().st_mode & 0o777) == "0o600"
    admin_tokens.revoke(admin_tokens.get("dashboard"), utcnow())
    renewed = admin_cli.first_run_token()
    assert renewed != token and admin_tokens.get("dashboard").prefix == renewed[:16]
    off = mitm_options.effective("mitmdump", ["--set", "pouch_admin=off"])
    assert admin_cli.dashboard_banner(off) == ""
