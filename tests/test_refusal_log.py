"""Refusals are recorded (pouch/services/refusal_log.py, fed by the usage link): one row per
refused flow, written in batches off the event loop, bounded, and never failing a flow."""

import logging

import pytest
from mitmproxy.test import tflow

from pouch.domain.errors import InvalidKey
from pouch.domain.money import Money
from pouch.services import chain, refusal_log as refusal_log_module
from pouch.services.refusal_log import BATCH, RefusalLog
from pouch.services.secrets import redact_text
from pouch.services.store_thread import store_thread
from pouch.store import refusals
from pouch.store.database import RefusalRow
from tests.addon_helpers import MODEL, chat_body, create_key, facts, gateway, openai_flow

SECRET_TAIL = "A" * 43  # the random part of a pouch key


@pytest.fixture
def gw(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-provider-key")
    with gateway() as gw:
        yield gw


def through_chain(gw, flow):
    """The request hooks, then the response hook mitmproxy calls for an answer set in the
    request phase; then wait for the store thread."""
    gw.request(flow)
    gw.hook("response", flow)
    store_thread.drain()
    return flow


class TestThroughTheChain:
    def test_an_unknown_key_is_recorded_without_a_key(self, gw):
        flow = through_chain(gw, openai_flow(body=chat_body(), secret="pouch-" + SECRET_TAIL))
        assert flow.response.status_code == 401
        [row] = refusals.rows()
        assert (row["key"], row["provider"], row["status"], row["reason"]) == (None, "openai", 401, "invalid_api_key")
        assert row["message"] == "unknown API key: use a pouch key (see `pouch keys list`)"

    def test_a_budget_refusal_names_key_model_and_endpoint(self, gw):
        key, secret = create_key(budget=Money.usd("0.000001"))
        flow = through_chain(gw, openai_flow(body=chat_body(max_tokens=1000), secret=secret))
        assert flow.response.status_code == 429
        [row] = refusals.rows()
        assert (row["key"], row["model"], row["endpoint"], row["status"], row["reason"]) == (
            "alice", MODEL, facts(flow)["endpoint"]["name"], 429, "insufficient_quota")
        assert row["message"] == facts(flow)["refused"]["message"]

    def test_a_disallowed_model_is_recorded_against_the_key(self, gw):
        _, secret = create_key("bob", models=("gpt-4o-mini",))
        through_chain(gw, openai_flow(body=chat_body(model="gpt-4o"), secret=secret))
        [row] = refusals.rows()
        assert (row["key"], row["status"], row["reason"]) == ("bob", 403, "model_not_allowed")

    def test_an_admitted_request_is_not_a_refusal(self, gw):
        _, secret = create_key(budget=Money.usd("5"))
        flow = gw.request(openai_flow(body=chat_body(max_tokens=10), secret=secret))
        assert flow.response is None
        gw.fail(flow)
        store_thread.drain()
        assert refusals.rows() == []

    def test_response_and_error_of_one_flow_record_it_once(self, gw):
        flow = through_chain(gw, openai_flow(body=chat_body(), secret="pouch-" + SECRET_TAIL))
        gw.fail(flow, "client disconnected")
        store_thread.drain()
        assert RefusalRow.select().count() == 1

    def test_a_credential_in_the_query_is_not_stored(self, gw):
        _, secret = create_key()
        flow = through_chain(gw, openai_flow(f"/v1/nowhere?api_key=sk-client-secret&k={secret}", secret=secret))
        assert flow.response.status_code == 404
        [row] = refusals.rows()
        assert row["reason"] == "unknown_endpoint"
        assert "sk-client-secret" not in row["message"] and secret not in row["message"]
        assert row["message"] == "pouch does not know POST /v1/nowhere"  # the query is not even shown


@pytest.mark.parametrize("text, redacted", [
    ("pouch does not know GET /v1beta/models?key=AIzaSecret&alt=sse", "pouch does not know GET /v1beta/models?key=…&alt=…"),
    (f"key pouch-{SECRET_TAIL} is not known", "key pouch-AAAAAA… is not known"),
    ("key 'alice' may not use model 'gpt-4o' (allowed: gpt-4o-mini*)", "key 'alice' may not use model 'gpt-4o' (allowed: gpt-4o-mini*)"),
    ("what? use https://api.openai.com/v1/chat/completions", "what? use https://api.openai.com/v1/chat/completions"),
])
def test_redact_text(text, redacted):
    assert redact_text(text) == redacted


class HeldThread:
    """A store thread that runs queued work only when told."""

    def __init__(self):
        self.jobs = []

    def later(self, fn, *args, **kwargs):
        self.jobs.append(lambda: fn(*args, **kwargs))

    def run_all(self):
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job()


def refused_flow():
    flow = tflow.tflow()
    flow.request.host = "api.openai.com"
    chain.refuse(flow, InvalidKey("unknown API key"))
    return flow


class TestQueue:
    def test_a_burst_is_one_job_written_in_batches(self, store, monkeypatch):
        thread, batches = HeldThread(), []
        record = refusals.record
        monkeypatch.setattr(refusal_log_module.refusals, "record", lambda rows: (batches.append(len(rows)), record(rows)))
        log = RefusalLog(thread)
        flows = [refused_flow() for _ in range(2 * BATCH + 30)]
        for flow in flows:
            log.note(flow)
        assert len(thread.jobs) == 1 and log.queued == len(flows)
        thread.run_all()
        assert batches == [BATCH, BATCH, 30]
        assert RefusalRow.select().count() == len(flows) and log.queued == 0
        log.note(refused_flow())
        assert len(thread.jobs) == 1, "drained: the next refusal queues a new job"

    def test_a_full_queue_drops_and_says_how_many(self, store, caplog):
        thread = HeldThread()
        log = RefusalLog(thread, limit=3)
        for _ in range(5):
            log.note(refused_flow())
        assert log.queued == 3
        with caplog.at_level(logging.WARNING, logger=refusal_log_module.__name__):
            thread.run_all()
        assert RefusalRow.select().count() == 3
        assert "2 refusals were not recorded" in caplog.text

    def test_a_store_failure_is_logged_not_raised(self, store, monkeypatch, caplog):
        thread = HeldThread()
        log = RefusalLog(thread)

        record, locked = refusals.record, [True]

        def sometimes(rows):
            if locked[0]:
                raise RuntimeError("database is locked")
            record(rows)

        monkeypatch.setattr(refusal_log_module.refusals, "record", sometimes)
        log.note(refused_flow())
        with caplog.at_level(logging.ERROR, logger=refusal_log_module.__name__):
            thread.run_all()
        assert "recording 1 refusals failed: database is locked" in caplog.text
        locked[0] = False
        log.note(refused_flow())
        thread.run_all()
        assert RefusalRow.select().count() == 1, "the log goes on after a failure"

    def test_a_flow_pouch_did_not_refuse_is_not_noted(self, store):
        thread = HeldThread()
        log = RefusalLog(thread)
        log.note(tflow.tflow(resp=True))
        assert log.queued == 0 and thread.jobs == []

    def test_a_malformed_refusal_never_raises(self, store, caplog):
        log = RefusalLog(HeldThread())
        flow = tflow.tflow()
        flow.request.host = "api.openai.com"
        chain.exchange(flow).refusal = {"kind": "auth"}  # no status, no message
        with caplog.at_level(logging.ERROR):
            log.note(flow)
        assert "could not note a refusal" in caplog.text and log.queued == 0
