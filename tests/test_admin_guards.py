"""What the admin API holds against callers who are not its operator, over real HTTP to the
server ``pouch admin`` runs: wrong tokens never lock the real admin out; a loopback listener
answers only requests for a loopback name (no DNS rebinding)."""

import pytest

from pouch.admin import metrics as admin_metrics
from pouch.admin.auth import Authenticator, FailedAttempts
from pouch.domain.periods import utcnow
from pouch.store import admin_tokens, keys
from tests.admin_server import Api, Served, error_of


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
