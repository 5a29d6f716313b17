"""Webhook URLs (pouch/domain/keys.py): what a viewer and the logs see of one (display_url), and
which ones are taken (parse_webhook): only URLs alert delivery can send to. Over real HTTP for
what the admin API answers."""

import pytest

from pouch.domain.keys import display_url
from pouch.domain.periods import utcnow
from pouch.store import admin_tokens
from tests.admin_server import Api, Served


@pytest.fixture
def api(store):
    served = Served()
    api = Api(served.url)
    now = utcnow()
    api.admin = admin_tokens.create("ops", "admin", now)[1]
    api.viewer = admin_tokens.create("look", "viewer", now)[1]
    yield api
    api.close()
    served.stop()


@pytest.mark.parametrize("url, shown", [
    ("https://hooks.example.com?token=SECRET", "https://hooks.example.com/..."),
    ("https://hooks.example.com/?token=SECRET", "https://hooks.example.com/..."),
    ("https://hooks.example.com#SECRET", "https://hooks.example.com/..."),
    ("https://user:pa/ssSECRET@hooks.example.com/x", "https://user/..."),
    ("https://user:SECRET@hooks.example.com", "https://hooks.example.com/..."),
    ("https://user:SECRET@Hooks.Example.com:8443/x", "https://hooks.example.com:8443/..."),
    ("http://[::1]:9000/SECRET", "http://[::1]:9000/..."),
    ("http://[::1/SECRET", "http://..."),
    ("http://127.0.0.1:99999/SECRET", "http://127.0.0.1/..."),
    ("https://hooks.slack.com/services/T/B/SECRET", "https://hooks.slack.com/..."),
    ("hooks.slack.com/services/SECRET", "hooks.slack.com/..."),
    ("user:SECRET@host/x", "host/..."),
    ("http://example.com", "http://example.com"),
    ("http://example.com/", "http://example.com"),
])
def test_display_url_shows_scheme_host_and_port_only(url, shown):
    assert display_url(url) == shown
    assert "SECRET" not in display_url(url)


def test_a_viewer_never_sees_a_secret_kept_in_the_query_or_the_fragment(api):
    for name, hook in (("query", "https://hooks.example.com?token=SUPERSECRET123"),
                       ("fragment", "https://hooks.example.com#SUPERSECRET123")):
        made = api.post("/api/keys", api.admin, json={"name": name, "webhook": hook})
        assert made.status_code == 201, made.text
        assert api.get(f"/api/keys/{name}", api.viewer).json()["webhook"] == "https://hooks.example.com/..."
        assert api.get(f"/api/keys/{name}", api.admin).json()["webhook"] == hook, "an admin sees it whole"
    listed = api.get("/api/keys", api.viewer)
    assert listed.status_code == 200 and "SUPERSECRET123" not in listed.text
