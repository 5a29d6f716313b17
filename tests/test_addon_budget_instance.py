"""The budget link's name in the store: formed from the listen ports, claimed on start (a
live holder refuses the start), kept alive by heartbeats, released on stop."""

import asyncio
import logging
import os
import socket
from datetime import timedelta

import pytest

from addons.gateway import instance_name
from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.store import instances, ledger
from pouch.store.database import InstanceRow, ReservationRow
from tests.addon_helpers import create_key, gateway

HOST = socket.gethostname()
REVERSE = "reverse:https://api.openai.com"


@pytest.mark.parametrize(
    "modes, listen_port, name",
    [
        (["regular"], None, "box:8080"),
        (["regular"], 9090, "box:9090"),
        (["regular@8081", f"{REVERSE}@8082"], None, "box:8081+8082"),
        ([f"{REVERSE}@8082", "regular@8081"], None, "box:8081+8082"),  # whatever the order given
        (["regular", "socks5"], None, "box:1080+8080"),
        (["regular@8080", "dns@8080"], None, "box:8080"),
        (["local"], None, "box"),  # a mode that listens on no port
    ],
)
def test_instance_name(modes, listen_port, name):
    assert instance_name("box", modes, listen_port) == name


class TestInstance:
    def test_the_default_name_has_every_listen_port(self):
        with gateway(started=False, mode=["regular@8081", f"{REVERSE}@8082"]) as gw:
            assert gw.shared.owner == f"{HOST}:8081+8082"

    def test_running_claims_the_name_and_done_releases_it(self):
        with gateway(started=False, pouch_instance="eu-1") as gw:
            gw.lifecycle("running")
            held = instances.holder("eu-1")
            assert (held.host, held.pid) == (instances.this_host(), os.getpid())
            gw.lifecycle("done")
            assert instances.holder("eu-1") is None

    def test_the_name_is_fixed_once_claimed(self, caplog):
        with gateway(pouch_instance="eu-1") as gw:
            gw.configure(pouch_instance="eu-2", listen_port=9090)
            assert gw.shared.owner == "eu-1"
            assert "keeps the instance name 'eu-1' until it restarts" in caplog.text
            assert instances.holder("eu-2") is None and instances.holder("eu-1") is not None

    def test_a_live_holder_refuses_the_start(self, caplog):
        with gateway(started=False, pouch_instance="eu-1") as gw:
            other = instances.claim("eu-1", utcnow(), host="other-host", pid=4242)
            key, _ = create_key(budget=Money.usd("5"))
            now = utcnow()
            in_flight = ledger.reserve(key.id, key.window(now), Money(1_000), now, owner="eu-1",
                                       hold=timedelta(minutes=15), provider="openai", model="gpt-4o-mini",
                                       endpoint="chat.completions")
            with caplog.at_level(logging.ERROR):
                gw.lifecycle("running")
            refusal = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert len(refusal) == 1
            message = refusal[0].getMessage()
            assert "'eu-1' is held by a live gateway" in message and "other-host" in message and "pid 4242" in message
            assert "--set pouch_instance=NAME" in message
            assert gw.tctx.master.should_exit.is_set(), "mitmproxy is told to stop"
            assert [r.id for r in ReservationRow.select()] == [in_flight.id], "the other's request is not charged"
            gw.lifecycle("done")
            assert instances.holder("eu-1") == other, "a refused gateway releases nothing"

    def test_heartbeats_keep_the_name_and_win_it_back_after_a_takeover(self, monkeypatch, caplog):
        monkeypatch.setattr(instances, "HEARTBEAT_INTERVAL", 0.01)
        with gateway(pouch_instance="eu-1") as gw:
            claimed = instances.holder("eu-1")
            gw.run(asyncio.sleep(0.2))
            assert instances.holder("eu-1").heartbeat_at > claimed.heartbeat_at
            # another gateway found this one silent too long and took the name; it has gone since
            long_ago = utcnow() - 2 * instances.STALE_AFTER
            InstanceRow.update(host="other-host", pid=4242, started_at=long_ago, heartbeat_at=long_ago).execute()
            gw.run(asyncio.sleep(0.2))
            held = instances.holder("eu-1")
            assert (held.host, held.pid) == (instances.this_host(), os.getpid())
            assert "another gateway took over the instance name 'eu-1'" in caplog.text
        assert instances.holder("eu-1") is None, "released on stop"
