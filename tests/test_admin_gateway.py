"""The admin API inside the gateway: a real mitmdump with the chain serves it on ``pouch_admin``
next to the proxy, on the same store; what the API changes holds for the very next request, and
proxy traffic keeps flowing while the API is hammered. Also the addon itself (its listener
moved, turned off, or its port taken) in a taddons context."""

import asyncio
import logging
import socket
import threading

import httpx2
import openai
import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from addons.admin import Admin
from pouch.domain.periods import utcnow
from pouch.store import admin_tokens
from tests.admin_server import Api
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import Gateway, free_port

MODEL = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "hello there"}]


def chat(client):
    return client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("fake-tls")) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    port = free_port()
    gateway = Gateway(tmp_path_factory.mktemp("gateway"), {"api.openai.com": fake.url}, str(fake.ca_path),
                      options={"pouch_admin": f"127.0.0.1:{port}"}).start()
    gateway.admin_url = f"http://127.0.0.1:{port}"
    try:
        gateway.open_store()
        now = utcnow()
        gateway.admin = admin_tokens.create("ops", "admin", now)[1]
        gateway.viewer = admin_tokens.create("dash", "viewer", now)[1]
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def api(gateway):
    api = Api(gateway.admin_url)
    yield api
    api.close()


def test_keys_made_through_the_api_meter_proxy_traffic_and_revoke_at_once(gateway, api):
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").status_code == 200
    created = api.post("/api/keys", gateway.admin, {"name": "alice", "budget_usd": "5", "models": [MODEL]})
    assert created.status_code == 201
    secret = created.json()["key"]
    client = gateway.client(secret)
    assert chat(client).choices[0].message.content.startswith("echo:")
    gateway.settled(expected_rows=1)

    [row] = api.get("/api/usage?key=alice", gateway.viewer).json()["rows"]
    assert (row["model"], row["status"], row["outcome"]) == (MODEL, 200, "ok")
    shown = api.get("/api/keys/alice", gateway.viewer).json()
    assert shown["spent_usd"] == row["cost_usd"] != "0"
    [recent] = api.get("/api/keys/alice/requests", gateway.viewer).json()["requests"]
    assert recent["kind"] == "usage" and recent["id"] == row["id"]
    assert api.get("/api/overview", gateway.viewer).json()["today"]["requests"] >= 1

    narrowed = api.patch("/api/keys/alice", gateway.admin, {"models": ["gpt-4o"]})
    assert narrowed.status_code == 200
    with pytest.raises(openai.PermissionDeniedError):  # the gateway's cached key was dropped: no wait
        chat(client)
    rotated = api.post("/api/keys/alice/rotate", gateway.admin, {}).json()["key"]
    with pytest.raises(openai.AuthenticationError):
        chat(client)
    api.patch("/api/keys/alice", gateway.admin, {"models": None})
    assert chat(gateway.client(rotated)).choices
    assert api.post("/api/keys/alice/revoke", gateway.admin).json()["revoked"] is True
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(gateway.client(rotated))
    assert "revoked" in str(refused.value)


def test_the_proxy_does_not_lead_to_the_admin_api(gateway):
    """A proxy client cannot reach the admin listener through the proxy (loopback is not passed through)."""
    with httpx2.Client(proxy=gateway.proxy_url, timeout=30) as client:
        answered = client.get(f"{gateway.admin_url}/healthz")
    assert answered.status_code == 403 and "does not tunnel there" in answered.text


def test_proxy_traffic_flows_while_the_api_is_hammered(gateway):
    secret = Api(gateway.admin_url).post("/api/keys", gateway.admin, {"name": "busy", "budget_usd": "5"}).json()["key"]
    paths = ["/api/overview", "/api/usage?format=csv", "/api/keys", "/api/usage?by=day", "/api/prices"]
    statuses: list[int] = []
    warmed, stop = threading.Event(), threading.Event()

    def hammer():
        with httpx2.Client(base_url=gateway.admin_url, timeout=60,
                           headers={"Authorization": f"Bearer {gateway.viewer}"}) as client:
            while not stop.is_set():
                for path in paths:
                    statuses.append(client.get(path).status_code)
                    if len(statuses) >= 10:
                        warmed.set()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        assert warmed.wait(60)
        before = len(statuses)

        async def traffic():
            client = gateway.async_client(secret)
            return await asyncio.gather(*[client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20)
                                          for _ in range(40)])

        answers = asyncio.run(traffic())
        during = len(statuses) - before
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert len(answers) == 40 and all(a.choices[0].message.content.startswith("echo:") for a in answers)
    assert during > 0, "the API was being called all along the traffic"
    assert set(statuses) == {200}, sorted(set(statuses))
    gateway.settled()
    rows = Api(gateway.admin_url).get("/api/usage?key=busy", gateway.viewer).json()["rows"]
    assert len(rows) == 40 and {r["status"] for r in rows} == {200}


async def _get(url: str) -> int | None:
    try:
        async with httpx2.AsyncClient(timeout=10) as client:
            return (await client.get(url)).status_code
    except httpx2.ConnectError:
        return None


def test_the_addon_moves_its_listener_turns_off_and_survives_a_taken_port(store, caplog):
    admin = Admin()
    with taddons.context(admin) as tctx:
        loop = tctx.master.event_loop

        def on_loop(call, *args, **kwargs):
            """As mitmproxy calls an addon: on its event loop, which serves the listener."""
            async def run():
                return call(*args, **kwargs)
            return loop.run_until_complete(run())

        def status(port: int) -> int | None:
            return loop.run_until_complete(_get(f"http://127.0.0.1:{port}/healthz"))

        with pytest.raises(exceptions.OptionsError, match="pouch_admin: '8082': give HOST:PORT"):
            tctx.configure(admin, pouch_admin="8082")
        first, second = free_port(), free_port()
        tctx.configure(admin, pouch_admin=f"127.0.0.1:{first}")
        assert status(first) is None, "not before the gateway runs"
        on_loop(admin.running)
        assert status(first) == 200
        on_loop(tctx.configure, admin, pouch_admin=f"127.0.0.1:{second}")
        assert (status(second), status(first)) == (200, None)
        on_loop(tctx.configure, admin, pouch_admin="off")
        assert status(second) is None

        with socket.create_server(("127.0.0.1", 0)) as taken, caplog.at_level(logging.ERROR):
            port = taken.getsockname()[1]
            on_loop(tctx.configure, admin, pouch_admin=f"127.0.0.1:{port}")  # logged; the gateway runs on
        assert f"the admin API cannot listen on 127.0.0.1:{port}" in caplog.text
        on_loop(tctx.configure, admin, pouch_admin=f"127.0.0.1:{first}")
        assert status(first) == 200
        on_loop(admin.done)
        assert status(first) is None
