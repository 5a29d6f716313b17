"""What the admin API holds against callers who are not its operator, over real HTTP to the
server ``pouch admin`` runs: wrong tokens never lock the real admin out; a loopback listener
answers only requests for a loopback name (no DNS rebinding); bodies too deep or not text are
a 400, never a 500; the gateway says where the API really listens, and warns beyond loopback."""

import json
import logging

import httpx2
import pytest
from mitmproxy.test import taddons

from addons.admin import Admin
from addons.metrics import Metrics

from pouch.admin import metrics as admin_metrics
from pouch.admin.auth import Authenticator, FailedAttempts
from pouch.domain.periods import utcnow
from pouch.store import admin_tokens, keys
from tests.admin_server import Api, Served, error_of
from tests.gateway import free_port


@pytest.fixture
def api(store):
    now = utcnow()
    served = Served(Authenticator(FailedAttempts()))
    api = Api(served.url)
    api.admin = admin_tokens.create("ops", "admin", now)[1]
    api.viewer = admin_tokens.create("prometheus", "viewer", now)[1]
    yield api
    api.close()
    served.stop()


def test_wrong_tokens_from_the_admins_own_address_never_lock_the_admin_out(api):
    for _ in range(30):  # far past the burst: every one from loopback, the admin's own address
        api.get("/api/keys", "pouch-admin-wrong")
    assert "too many wrong admin tokens" in error_of(api.get("/api/keys", "pouch-admin-wrong"), 429)
    assert api.get("/api/keys", api.admin).status_code == 200
    assert api.post("/api/keys", api.admin, json={"name": "still-works"}).status_code == 201
    assert api.get("/metrics", api.viewer).status_code == 200, "Prometheus keeps scraping"
    assert error_of(api.get("/api/keys", "pouch-admin-wrong"), 429), "the wrong ones are still refused"


@pytest.fixture
def public_metrics(monkeypatch):
    monkeypatch.setattr(admin_metrics, "public", True)  # pouch_metrics_public=true


@pytest.mark.parametrize("host", ["rebind.evil.example", "rebind.evil.example:{port}", "localhost.evil.example",
                                  "10.0.0.1:{port}", "0.0.0.0:{port}"])
def test_a_loopback_listener_refuses_requests_for_another_host(api, public_metrics, host):
    """DNS rebinding: a page on rebind.evil.example re-pointed at 127.0.0.1 is same-origin with the
    listener in the browser; its requests carry its own name in Host, and get nothing."""
    keys.create("payroll-secret-project", utcnow())
    host = host.format(port=api.url.rsplit(":", 1)[1])
    for path, token in (("/metrics", None), ("/", None), ("/healthz", None), ("/readyz", None),
                        ("/static/js/app.js", None), ("/api/keys", api.admin)):
        answer = api.get(path, token, headers={"Host": host})
        assert "answers only requests for localhost, 127.0.0.1 or [::1]" in error_of(answer, 403), path
        assert "payroll" not in answer.text
    assert api.get("/api/keys", "pouch-admin-wrong", headers={"Host": host}).status_code == 403
    assert api.get("/api/keys", api.admin).status_code == 200, "nothing was counted against loopback"


@pytest.mark.parametrize("host", ["localhost", "localhost:{port}", "LocalHost:{port}", "127.0.0.1:{port}",
                                  "127.8.9.10", "[::1]:{port}", "[::1]"])
def test_a_loopback_listener_answers_loopback_names(api, public_metrics, host):
    host = host.format(port=api.url.rsplit(":", 1)[1])
    assert api.get("/metrics", headers={"Host": host}).status_code == 200
    assert api.get("/healthz", headers={"Host": host}).status_code == 200
    assert api.get("/api/keys", api.admin, headers={"Host": host}).status_code == 200


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("body", [
    deep(200_000),  # 400 kB, under the body limit
    '{"name": "deep", "models": ' + deep(200_000) + "}",
    '{"name": "deep", "models": ' + deep(990) + "}",
    '{"name": "deep", "alert_at": ' + deep(200_000) + "}",
])
def test_deeply_nested_json_is_a_400(api, body, caplog):
    for method, path in (("POST", "/api/keys"), ("PATCH", "/api/keys/alice")):
        answer = api.request(method, path, api.admin, content=body.encode())
        assert answer.status_code in (400, 404), (method, answer.status_code, answer.text[:200])
        assert answer.json()["error"]["type"] in ("invalid_request", "not_found")
    assert "Traceback" not in caplog.text
    assert keys.all_keys() == []


@pytest.mark.parametrize("field", ["name", "webhook", "models", "expires_at", "period", "bogus\ud800"])
def test_a_lone_surrogate_anywhere_in_a_body_is_a_400(api, field, caplog):
    value = {"webhook": "https://x.example/\ud800", "models": ["gpt-\ud800"]}.get(field, "x\ud800")
    body = json.dumps({"name": "fine", field: value} if field != "name" else {"name": value})  # "\\ud800": valid JSON
    for method, path in (("POST", "/api/keys"), ("PATCH", "/api/keys/fine")):
        message = error_of(api.request(method, path, api.admin, content=body.encode()), 400)
        assert "lone surrogate escape" in message, message
    assert "Traceback" not in caplog.text
    assert keys.all_keys() == []


def test_the_gateway_logs_where_it_really_listens_and_warns_beyond_loopback(store, caplog):
    """pouch_admin=0.0.0.0:PORT used to be logged as http://127.0.0.1:PORT, and a public /metrics on
    it went without a word. (Binds every interface for the test's length; nothing is sent out.)"""
    admin, metrics = Admin(), Metrics()
    port = free_port()
    with taddons.context(admin, metrics) as tctx, caplog.at_level(logging.INFO):
        loop = tctx.master.event_loop

        def on_loop(call, *args, **kwargs):
            async def run():
                return call(*args, **kwargs)
            return loop.run_until_complete(run())

        tctx.configure(metrics, pouch_metrics_public=False)
        tctx.configure(admin, pouch_admin=f"0.0.0.0:{port}")
        on_loop(admin.running)
        try:
            assert f"admin API on 0.0.0.0:{port} (every interface), http://127.0.0.1:{port} from this host" \
                in caplog.text
            assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
                f"pouch admin: listening on 0.0.0.0:{port} (every interface), beyond this host, on plain HTTP: "
                "admin tokens cross the network unencrypted; put a TLS proxy in front of it or listen on 127.0.0.1"]
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
            # beyond loopback any Host is answered: operators reach it by their own names
            answer = loop.run_until_complete(_get(f"http://127.0.0.1:{port}/healthz", "pouch.example.com"))
            assert answer == 200

            on_loop(tctx.configure, metrics, pouch_metrics_public=True)  # turned on while it runs
            [error] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert error.startswith(f"pouch: pouch_metrics_public=true on 0.0.0.0:{port} (every interface): "
                                    "anyone who can reach this address reads /metrics without a token")
            caplog.clear()
            on_loop(tctx.configure, admin, pouch_admin=f"0.0.0.0:{free_port()}")  # and at each start
            assert [r.levelno for r in caplog.records if r.levelno >= logging.WARNING] == [logging.WARNING,
                                                                                         logging.ERROR]
            caplog.clear()
            on_loop(tctx.configure, admin, pouch_admin=f"127.0.0.1:{port}")
            assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "loopback: nothing to warn of"
        finally:
            on_loop(admin.done)
            admin_metrics.public = False


async def _get(url: str, host: str) -> int:
    async with httpx2.AsyncClient(timeout=10) as client:
        return (await client.get(url, headers={"Host": host})).status_code
