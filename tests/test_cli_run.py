"""``pouch run`` / ``pouch web`` as a user starts them: where they really listen, whose options
win, and whether the printed try-it lines work exactly as printed.

The end-to-end tests start the real command (its own process group, its own POUCH_HOME, a free
port), read the listening sockets from /proc/net/tcp{,6}, and run the printed lines with
``env -i PATH=/usr/bin:/bin bash -c`` — nothing set but what the lines set. The demo key is a
mock key: nothing goes upstream, no network is needed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import certifi
import pytest

from pouch.cli import mitm_options, run, trust
from tests.gateway import free_port

POUCH = str(Path(sys.executable).with_name("pouch"))


# -- reading the machine ---------------------------------------------------------------------


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    return str(ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))


def listening(port: int) -> set[str]:
    """The addresses a TCP socket listens on at ``port``, as the kernel reports them."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(_address(address))
    return found


def outside_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (where another host would connect)."""
    trie = Path("/proc/net/fib_trie").read_text().splitlines()
    for line, following in zip(trie, trie[1:]):
        if "/32 host LOCAL" in following and (address := line.split()[-1]) and not address.startswith("127."):
            return address
    return None


# -- the real command ------------------------------------------------------------------------


class Started:
    def __init__(self, home: Path, process: subprocess.Popen, log: Path):
        self.home, self.process, self.log = home, process, log

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def start(tmp_path):
    started: list[Started] = []

    def start(*args: str, command: str = "run", ports: tuple[int, ...]) -> Started:
        home = tmp_path / f"home-{len(started)}"
        log = tmp_path / f"pouch-{len(started)}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("POUCH_") and not k.endswith("_PROXY")}
        env["POUCH_HOME"] = str(home)
        with open(log, "wb") as out:
            process = subprocess.Popen([POUCH, command, "--demo", *args], env=env, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        gateway = Started(home, process, log)
        started.append(gateway)
        deadline = time.monotonic() + 60
        while not all(listening(port) for port in ports) or "Loading script" not in gateway.output:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"`pouch {command}` did not come up on {ports}:\n{gateway.output[-3000:]}")
            time.sleep(0.1)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def printed_block(output: str, title: str) -> str:
    """The lines printed under ``title``, as a user would copy them (indent removed)."""
    block = output.split(title, 1)[1].split("\n\n", 1)[0]
    return "\n".join(line.removeprefix("  ") for line in block.strip("\n").splitlines())


def run_as_printed(lines: str) -> str:
    """Run ``lines`` from a shell with nothing set but PATH, as copied from the banner."""
    done = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", "bash", "-c", lines],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{lines}\n-> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


EVAL_TITLE = "Or point this shell at the gateway (proxy, CA trust, the key for every SDK and CLI), then run any client:\n"


def assert_try_it_lines_work(output: str) -> None:
    answer = json.loads(run_as_printed(printed_block(output, "Try it with curl:\n")))
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"]
    python = printed_block(output, EVAL_TITLE)
    assert run_as_printed(python).strip(), "the openai line printed no answer, after eval of pouch env"


# -- end to end ------------------------------------------------------------------------------


def test_run_listens_on_loopback_only_and_its_lines_work_as_printed(start):
    port = free_port()
    gateway = start("--port", str(port), ports=(port,))
    assert listening(port) == {"127.0.0.1"}
    assert f"proxy on http://127.0.0.1:{port}, this host only" in gateway.output
    assert "proxy authentication: on" not in gateway.output
    if outside := outside_address():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((outside, port), timeout=5)

    assert_try_it_lines_work(gateway.output)
    python_line = printed_block(gateway.output, EVAL_TITLE)
    assert f" env --key demo --port {port}" in python_line, "pouch env, with the arguments pouch run got"
    assert f"{trust.BUNDLE_NAME} REQUESTS_CA_BUNDLE=" in gateway.output, "by hand: the bundle, not pouch's CA alone"
    printed_python = shlex.split(python_line.splitlines()[-1])[0]
    assert os.path.samefile(printed_python, sys.executable), "the Python that has openai"

    usage = subprocess.run([POUCH, "usage", "--json"], env={**os.environ, "POUCH_HOME": str(gateway.home)},
                           capture_output=True, text=True, timeout=60)
    rows = json.loads(usage.stdout)
    assert [(row["key"], row["mock"]) for row in rows] == [("demo", True), ("demo", True)]


def test_web_listens_on_loopback_only(start):
    port, web_port = free_port(), free_port()
    gateway = start("--port", str(port), "--set", f"web_port={web_port}", command="web", ports=(port, web_port))
    assert listening(port) == {"127.0.0.1"} and listening(web_port) == {"127.0.0.1"}
    assert f"proxy on http://127.0.0.1:{port}, this host only" in gateway.output
    assert f"web UI on http://127.0.0.1:{web_port}" in gateway.output


@pytest.mark.parametrize("form", ["--set listen_port={}", "-p {}", "--listen-port {}", "--mode regular@{}"])
def test_a_port_the_user_gives_wins_over_port(start, form):
    ignored, port = free_port(), free_port()
    gateway = start("--port", str(ignored), *form.format(port).split(), ports=(port,))
    assert listening(port) == {"127.0.0.1"} and listening(ignored) == set()
    assert f"proxy on http://127.0.0.1:{port}, this host only" in gateway.output
    assert f"--proxy http://127.0.0.1:{port} " in gateway.output and f":{ignored}" not in gateway.output, \
        "no address names the ignored port (pouch env is given the arguments as typed, and reads them as pouch run)"
    assert_try_it_lines_work(gateway.output)


def test_listen_host_everywhere_binds_everywhere_with_proxy_auth_and_its_lines_work(start):
    port = free_port()
    gateway = start("--port", str(port), "--listen-host", "0.0.0.0", ports=(port,))
    assert listening(port) == {"0.0.0.0"}
    assert f"proxy on port {port} of every interface (0.0.0.0); from this host http://127.0.0.1:{port}" in gateway.output
    assert "proxy authentication: on" in gateway.output
    secret = re.search(r"demo key \(mock[^)]*\): (\S+)", gateway.output)[1]
    assert f"--proxy http://pouch:{secret}@127.0.0.1:{port} " in gateway.output
    assert f"export HTTPS_PROXY=http://pouch:{secret}@127.0.0.1:{port} " in gateway.output
    if outside := outside_address():
        socket.create_connection((outside, port), timeout=5).close()
    assert_try_it_lines_work(gateway.output)


# -- the options mitmproxy will run with -------------------------------------------------------


def resolved(*extra: str, tool: str = "mitmdump", port: int = 8080, db: str | None = None):
    args, opts = run.command(tool, port, db, extra)
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    return args, opts, sets


@pytest.mark.parametrize(
    "extra, port",
    [
        (["--set", "listen_port=9000"], 9000),
        (["--set=listen_port=9000"], 9000),
        (["-p", "9000"], 9000),
        (["-p9000"], 9000),
        (["--listen-port", "9000"], 9000),
        (["--listen-port=9000"], 9000),
        (["--listen-p", "9000"], 9000),  # argparse takes unambiguous abbreviations
        ([], 8123),
    ],
)
def test_the_users_port_wins_in_any_form(extra, port):
    args, opts, sets = resolved(*extra, port=8123)
    assert opts.listen_port == port
    assert ("listen_port=8123" in sets) == (not extra), "pouch's default is left out when the user gave one"


def test_a_dedicated_flag_wins_over_set_and_config_yaml_over_set(tmp_path):
    confdir = tmp_path / "conf"
    confdir.mkdir()
    _, opts, _ = resolved("--set", "listen_port=9000", "--listen-port", "9001")
    assert opts.listen_port == 9001
    (confdir / "config.yaml").write_text("listen_port: 9002\nlisten_host: 0.0.0.0\n")
    _, opts, _ = resolved("--set", f"confdir={confdir}")
    assert (opts.listen_port, opts.listen_host) == (9002, "0.0.0.0")
    _, opts, _ = resolved("--set", f"confdir={confdir}", "-p", "9003")
    assert opts.listen_port == 9003


@pytest.mark.parametrize(
    "extra, host",
    [
        ([], "127.0.0.1"),
        (["--listen-host", "0.0.0.0"], "0.0.0.0"),
        (["--set", "listen_host=::"], "::"),
        (["--set", "listen_host="], ""),
    ],
)
def test_loopback_unless_the_user_names_a_host(extra, host):
    _, opts, sets = resolved(*extra)
    assert opts.listen_host == host
    assert ("listen_host=127.0.0.1" in sets) == (not extra)


def test_a_mode_with_its_own_host_keeps_it_and_other_modes_stay_on_loopback():
    _, opts, _ = resolved("--mode", "regular@0.0.0.0:9000", "--mode", "reverse:https://api.openai.com@9001")
    found = run.listeners(opts)
    assert [(l.host, l.port) for l in found] == [("0.0.0.0", 9000), ("127.0.0.1", 9001)]
    assert run.proxy_auth(opts, found) == "on"


@pytest.mark.parametrize(
    "option, value, tool",
    [
        ("confdir", "/tmp/elsewhere", "mitmdump"),
        ("connection_strategy", "eager", "mitmdump"),
        ("store_streamed_bodies", "true", "mitmweb"),
        ("flow_detail", "3", "mitmdump"),
        ("web_open_browser", "true", "mitmweb"),
    ],
)
def test_every_default_yields_to_the_user(option, value, tool):
    args, opts, sets = resolved("--set", f"{option}={value}", tool=tool)
    assert [s for s in sets if s.startswith(f"{option}=")] == [f"{option}={value}"], "one value: no 'multiple values' error"
    assert str(getattr(opts, option)).lower() == value


@pytest.mark.parametrize("tool", ["mitmdump", "mitmweb"])
def test_stream_bodies_are_left_to_the_inspectors_bound(tool):
    _, opts, sets = resolved(tool=tool)
    assert opts.store_streamed_bodies is False and not any(s.startswith("store_streamed_bodies") for s in sets)


def test_the_users_pouch_db_is_the_one_used():
    _, opts, sets = resolved("--set", "pouch_db=sqlite:////tmp/theirs.db", db="sqlite:////tmp/ours.db")
    assert sets.count("pouch_db=sqlite:////tmp/theirs.db") == 1 and "pouch_db=sqlite:////tmp/ours.db" not in sets
    assert mitm_options.deferred(opts, "pouch_db") == "sqlite:////tmp/theirs.db"


@pytest.mark.parametrize("extra", [["--help"], ["--version"], ["--no-such-flag"], ["--set", "listen_port=abc"]])
def test_what_mitmproxy_must_answer_is_left_to_it(extra):
    args, opts, _ = resolved(*extra)
    assert opts is None and args[-len(extra):] == extra


@pytest.mark.parametrize(
    "extra, auth",
    [
        ([], "off"),
        (["--listen-host", "0.0.0.0"], "on"),
        (["--listen-host", "0.0.0.0", "--set", "pouch_proxy_auth=off"], "off"),
        (["--set", "pouch_proxy_auth=on"], "on"),
        (["--listen-host", "0.0.0.0", "--proxyauth", "user:pass"], "mitmproxy"),
    ],
)
def test_proxy_auth_as_the_perimeter_decides_it(extra, auth):
    _, opts, _ = resolved(*extra)
    assert run.proxy_auth(opts, run.listeners(opts)) == auth


@pytest.mark.parametrize("tool, master", [("mitmdump", "dump.DumpMaster"), ("mitmweb", "web.master.WebMaster")])
def test_pouch_parses_every_flag_the_tool_takes(tool, master):
    """tool_options registers options without a master; a mitmproxy upgrade that adds an addon
    with flags shows up here, not as a user's flag pouch cannot read."""
    import importlib

    from mitmproxy import options
    from mitmproxy.tools import cmdline

    module, _, name = f"mitmproxy.tools.{master}".rpartition(".")

    async def real_options():
        master = getattr(importlib.import_module(module), name)(options.Options(), with_termlog=False)
        master.addons.get("errorcheck").finish()  # its log handler would outlive the test
        return master.options

    def flags(opts):
        return {flag for action in getattr(cmdline, tool)(opts)._actions for flag in action.option_strings}

    assert flags(mitm_options.tool_options(tool)) == flags(asyncio.run(real_options()))


# -- what clients trust ------------------------------------------------------------------------


def test_the_bundle_is_the_usual_cas_plus_pouchs_and_follows_a_new_ca(tmp_path):
    ca = trust.ensure_ca(tmp_path / "conf")
    bundle = trust.write_bundle(ca)
    assert bundle == tmp_path / "conf" / "ca-bundle.pem"
    text = bundle.read_text()
    assert ca.read_text().strip() in text
    usual = trust._PEM.findall(Path(certifi.where()).read_text())
    assert usual and all(pem in text for pem in usual), "a client's other HTTPS keeps working"
    loaded = ssl.create_default_context(cafile=str(bundle)).cert_store_stats()["x509_ca"]
    assert loaded >= len(usual) + 1

    old = ca.read_text()
    for file in ca.parent.glob("mitmproxy-ca*"):
        file.unlink()
    trust.ensure_ca(ca.parent)
    assert ca.read_text() != old
    text = trust.write_bundle(ca).read_text()
    assert ca.read_text().strip() in text and old.strip() not in text


def test_without_openai_the_line_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(run.importlib.util, "find_spec", lambda name: None)
    python, first = run.openai_python()
    assert python == "python3" and first.strip() == "# this needs the openai package: python3 -m pip install openai"
