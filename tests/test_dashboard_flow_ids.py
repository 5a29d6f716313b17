"""The mitmproxy flow id goes with each usage row and refusal (migration 8), so that the
dashboard can link a key's recent requests to mitmweb's view of their flows."""

import json

import pytest
from mitmproxy import http

from pouch.domain.money import Money
from pouch.services import overview
from pouch.services.store_thread import store_thread
from pouch.store import refusals
from pouch.store.database import RefusalRow, UsageRow
from tests.addon_helpers import chat_body, create_key, gateway, openai_flow
from tests.fakes.openai_shapes import Controls, chat_completions

JSON = {"content-type": "application/json"}


@pytest.fixture
def gw(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-provider-key")
    with gateway() as gw:
        yield gw


def test_a_usage_row_and_a_refusal_keep_their_flow_ids_and_recent_requests_show_them(gw):
    key, secret = create_key(budget=Money.usd("5"), models=("gpt-4o-mini",))
    answered = gw.request(openai_flow(body=chat_body("hello", max_completion_tokens=20), secret=secret))
    sent = json.loads(answered.request.content)
    gw.respond(answered, http.Response.make(200, json.dumps(chat_completions(sent, Controls())), JSON))
    refused = gw.request(openai_flow(body=chat_body("hello", model="gpt-4o"), secret=secret))
    gw.hook("response", refused)
    store_thread.drain()

    assert refused.response.status_code == 403
    assert UsageRow.get().flow_id == answered.id
    assert RefusalRow.get().flow_id == refused.id
    recent = overview.recent_requests(key.name, 10)
    assert {(r["kind"], r["flow_id"]) for r in recent} == {("usage", answered.id), ("refusal", refused.id)}


def test_a_refusal_written_without_a_flow_id_has_none(store):
    from datetime import UTC, datetime

    refusals.record([{"ts": datetime(2026, 1, 1, tzinfo=UTC), "key": None, "provider": "openai", "model": None,
                      "endpoint": None, "status": 401, "reason": "invalid_api_key", "message": "no"}])
    assert RefusalRow.get().flow_id is None
    assert "flow_id" not in refusals.rows()[0]  # `pouch usage --refused --json` keeps its fields
