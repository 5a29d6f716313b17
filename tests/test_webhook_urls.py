"""Webhook URLs (pouch/domain/keys.py): what a viewer and the logs see of one (display_url), and
which ones are taken (parse_webhook): only URLs alert delivery can send to. Over real HTTP for
what the admin API answers."""

import json
import logging

import pytest

from pouch.alerts import delivery
from pouch.alerts.outbox import AlertRow
from pouch.domain.errors import InvalidInput
from pouch.domain.keys import display_url, parse_webhook
from pouch.domain.periods import utcnow
from pouch.store import admin_tokens
from pouch.store import keys as key_store
from tests.admin_server import Api, Served, error_of
from tests.alerts_receiver import Receiver
from tests.test_alerts_delivery import crossed, deliver


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


@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.1:99999/x", "its port is not a number from 1 to 65535"),
    ("http://127.0.0.1:0/x", "its port is not a number from 1 to 65535"),
    ("http://example.com:http/x", "its port is not a number from 1 to 65535"),
    ("http://[::1/x", "its host is not valid"),
    ("http://[zz]/x", "its host is not valid"),
    ("http://xn--/x", "its host is not valid"),
    ("http://\N{SNOWMAN}.example/x", "its host is not valid"),
    ("http://:80/x", "no host"),
    ("http://user@/x", "no host"),
    ("https://x.example/\ud800", "it is not valid text"),
])
def test_parse_webhook_refuses_what_delivery_cannot_send_to(url, why):
    with pytest.raises(InvalidInput, match=r"^bad webhook .*: give an http:// or https:// URL") as refused:
        parse_webhook(url)
    assert f"({why})" in str(refused.value)


@pytest.mark.parametrize("url, message", [("http://127.0.0.1:99999/x", "bad webhook"),
                                          ("http://[::1/x", "bad webhook"),
                                          ("https://x.example/\ud800", "lone surrogate")])
def test_the_api_refuses_a_webhook_it_could_not_send_to(api, url, message):
    # json.dumps writes "\ud800" as an escape: valid JSON text that decodes to a lone surrogate
    # (the API refuses it in any field; parse_webhook too, for the CLI)
    answer = api.request("POST", "/api/keys", api.admin, content=json.dumps({"name": "hook", "webhook": url}))
    assert message in error_of(answer, 400)
    assert key_store.all_keys() == []


@pytest.mark.parametrize("bad_hook", ["http://127.0.0.1:99999/x", "http://[::1/x"])
def test_a_stored_webhook_delivery_cannot_use_fails_its_tries_and_is_given_up(store, bad_hook, caplog):
    """A key's webhook stored before parse_webhook refused such URLs: each try fails for it (the
    gateway's own webhook has the event once) and the row is given up after its tries."""
    with Receiver() as ops:
        key = crossed("alice", alert_at=())  # one event: exhausted
        key_store.update(key, utcnow(), webhook=bad_hook)  # the store as an older pouch left it
        settings = delivery.Settings(webhooks=(ops.url,), tries=3, backoff=0.01)
        with caplog.at_level(logging.DEBUG, logger="pouch.alerts.delivery"):
            deliver(settings, lambda: AlertRow.get().state != "pending")
        row = AlertRow.get()
        assert (row.state, row.attempts) == ("failed", 3)
        assert row.last_error.startswith("http://...: ") or row.last_error.startswith("http://127.0.0.1/...: ")
        assert len(ops.accepted()) == 1, "the gateway's webhook got it once, not once per try"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 3 and not any(r.exc_info for r in warnings), "a line per try, no traceback"
