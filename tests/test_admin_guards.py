"""What the admin API holds against callers who are not its operator, over real HTTP to the
server ``pouch admin`` runs: wrong tokens never lock the real admin out."""

import pytest

from pouch.admin.auth import Authenticator, FailedAttempts
from pouch.domain.periods import utcnow
from pouch.store import admin_tokens
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
