"""``pouch run --workers N`` before anything starts: the user's arguments each worker keeps,
the listeners and names pouch gives each worker instead, HAProxy's configuration, and how a
worker behind HAProxy decides who is local (pouch_public_listen)."""

from __future__ import annotations

from types import SimpleNamespace

import click
import pytest

from pouch.cli import haproxy, mitm_options, run, workers
from pouch.services import perimeter
from mitmproxy.proxy import mode_specs

PER_WORKER = {"mode", "listen_host", "listen_port", "pouch_instance"}


@pytest.fixture(autouse=True)
def direct_clients():
    yield
    perimeter.public_listen = ""  # make_plan sets it for the banner: not for the next test


@pytest.mark.parametrize("args, kept", [
    (["--mode", "reverse:https://x@9000", "--set", "pouch_route=a=b"], ["--set", "pouch_route=a=b"]),
    (["-p8080", "-p", "8081", "--listen-port=8082", "--listen-port", "8083", "-q"], ["-q"]),
    (["--listen-h", "0.0.0.0", "--mode=regular", "--set=pouch_instance=x", "-s", "a.py"], ["-s", "a.py"]),
    (["--set", "pouch_instance=x", "--set", "pouch_db=sqlite:///d"], ["--set", "pouch_db=sqlite:///d"]),
    (["--", "--mode", "regular"], ["--", "--mode", "regular"]),
])
def test_the_settings_pouch_gives_each_worker_are_left_out_in_any_form(args, kept):
    assert mitm_options.without("mitmdump", args, PER_WORKER) == kept


def test_web_options_are_left_out_for_mitmdump_workers():
    args = ["--web-port", "9000", "--no-web-open-browser", "--set", "web_host=::1", "--set", "pouch_mock=all"]
    assert mitm_options.without("mitmweb", args, {"web_port", "web_open_browser", "web_host"}) == \
        ["--set", "pouch_mock=all"]


def plan(tool: str, *extra: str, count: int = 2, port: int = 8080) -> workers.Plan:
    _, opts = run.command(tool, port, None, extra)
    return workers.make_plan(tool, port, None, extra, opts, count, run.command)


def setting(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1].partition("=")[2] for i, a in enumerate(argv[:-1])
            if a == "--set" and argv[i + 1].startswith(name + "=")]


def modes(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--mode"]


def test_each_worker_listens_on_loopback_ports_of_its_own_under_its_own_name():
    made = plan("mitmdump", "--mode", "regular@8080", "--mode", "reverse:https://api.openai.com@9000",
                "--set", "pouch_instance=edge", "--set", "pouch_route=api.openai.com=http://127.0.0.1:1")
    one, two = made.workers
    assert [w.name for w in made.workers] == ["edge-1", "edge-2"]
    assert setting(one.argv, "pouch_instance") == ["edge-1"] and setting(two.argv, "pouch_instance") == ["edge-2"]
    assert modes(one.argv) == [f"regular@127.0.0.1:{one.ports[0]}",
                               f"reverse:https://api.openai.com@127.0.0.1:{one.ports[1]}"]
    assert len({*one.ports, *two.ports}) == 4
    for worker in made.workers:  # the user's other options, as given
        assert setting(worker.argv, "pouch_route") == ["api.openai.com=http://127.0.0.1:1"]
        assert setting(worker.argv, "confdir") == [str(run.confdir())]  # one CA
        assert setting(worker.argv, "pouch_public_listen") == []  # clients are on this host
    assert [(f.name, f.host, f.port, f.backends) for f in made.frontends] == [
        ("regular-8080", "127.0.0.1", 8080, (one.ports[0], two.ports[0])),
        ("reverse-9000", "127.0.0.1", 9000, (one.ports[1], two.ports[1]))]


def test_worker_1_serves_the_admin_api_where_asked_the_others_on_loopback_for_their_metrics():
    one, two, three = plan("mitmdump", "--set", "pouch_admin=127.0.0.1:9182", count=3).workers
    assert one.admin == "127.0.0.1:9182" and setting(one.argv, "pouch_admin") == ["127.0.0.1:9182"]
    for worker in (two, three):
        assert worker.admin.startswith("127.0.0.1:") and setting(worker.argv, "pouch_admin") == [worker.admin]
    assert plan("mitmdump", "--set", "pouch_admin=off").workers[1].admin is None


def test_pouch_web_runs_mitmweb_on_worker_1_only():
    one, two = plan("mitmweb", "--set", "web_port=9091").workers
    assert (one.tool, two.tool) == ("mitmweb", "mitmdump")
    assert one.argv[0].endswith("mitmweb") and setting(one.argv, "web_port") == ["9091"]
    assert two.argv[0].endswith("mitmdump") and setting(two.argv, "web_port") == []


def test_a_public_address_beyond_loopback_is_passed_to_every_worker():
    made = plan("mitmdump", "--listen-host", "0.0.0.0")
    assert made.public_listen == "0.0.0.0"
    assert all(setting(w.argv, "pouch_public_listen") == ["0.0.0.0"] for w in made.workers)
    assert all(setting(w.argv, "listen_host") == ["127.0.0.1"] for w in made.workers)
    assert "bind 0.0.0.0:8080" in haproxy.config(made.frontends, 2)


def test_the_operators_own_public_listen_reaches_every_worker():
    """(review 15/16, finding 2) A load balancer of the operator's in front of a loopback
    listener: their pouch_public_listen was dropped, and the workers took every client for a
    local one (keyless side paths, tunnels without proxy authentication)."""
    made = plan("mitmdump", "--set", "pouch_public_listen=gateway.example.com")
    assert made.public_listen == "gateway.example.com"
    assert all(setting(w.argv, "pouch_public_listen") == ["gateway.example.com"] for w in made.workers)


def test_a_udp_listener_cannot_be_balanced():
    with pytest.raises(click.ClickException, match="not a TCP listener"):
        plan("mitmdump", "--mode", "reverse:quic://example.com@9443")


@pytest.mark.parametrize("host, bound", [("", ":::8080 v4v6"), ("0.0.0.0", "0.0.0.0:8080"),
                                         ("::1", "[::1]:8080"), ("127.0.0.1", "127.0.0.1:8080")])
def test_haproxy_binds_where_mitmproxy_would_have(host, bound):
    assert haproxy.bind(host, 8080) == bound


def test_haproxy_config_balances_each_listener_over_the_workers_ports():
    text = haproxy.config([haproxy.Frontend("regular-8080", "127.0.0.1", 8080, (4001, 4002))], 2)
    assert "mode tcp" in text and "bind 127.0.0.1:8080" in text
    assert "server worker1 127.0.0.1:4001 check" in text and "server worker2 127.0.0.1:4002 check" in text


def client(peer: str):
    return SimpleNamespace(peername=(peer, 50000), proxy_mode=mode_specs.ProxyMode.parse("regular"))


@pytest.mark.parametrize("public, local", [("", True), ("127.0.0.1", True), ("::1", True),
                                           ("0.0.0.0", False), ("::", False), ("192.0.2.7", False)])
def test_behind_a_balancer_on_a_public_address_no_client_is_local(public, local):
    perimeter.public_listen = public
    assert perimeter.local_client(client("127.0.0.1")) is local
    assert perimeter.exposed(mode_specs.ProxyMode.parse("regular@127.0.0.1:4001"), "127.0.0.1") is not local
    assert not perimeter.local_client(client("192.0.2.9"))
