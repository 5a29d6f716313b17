"""What the links share (pouch/services/chain.py): the exchange, the one way to answer, fail_closed."""

import asyncio
import contextlib
import json

import pytest
from mitmproxy import flow as mflow
from mitmproxy import http

from pouch.domain import errors
from pouch.providers.base import Endpoint
from pouch.providers.registry import PROVIDERS
from pouch.services import chain
from tests.addon_helpers import chat_body, facts, openai_flow


def run(coroutine):
    return asyncio.run(coroutine)


def llm_flow():
    return openai_flow(body=chat_body())


def other_flow():
    """A flow to a host that is not an LLM provider's."""
    return openai_flow(body=chat_body(), host="example.com")


@pytest.mark.parametrize("endpoint, metered", [
    (None, False),
    ({"name": "chat.completions", "metering": "metered", "api": "chat"}, True),
    ({"name": "models.list", "metering": "free", "api": ""}, False),
    ({"name": "images", "metering": "unmetered", "api": ""}, False),
])
def test_metered(endpoint, metered):
    flow = openai_flow()
    if endpoint:
        chain.exchange(flow).endpoint = Endpoint(**endpoint)
    assert chain.metered(flow) is metered


def test_provider_of():
    assert chain.provider_of(other_flow()) is None
    assert chain.provider_of(llm_flow()) is PROVIDERS["openai"]  # by the host the client called, once
    routed = llm_flow()
    chain.provider_of(routed)
    routed.request.host = "127.0.0.1"  # pouch_route sent it on: still the provider's flow
    assert chain.provider_of(routed) is PROVIDERS["openai"]


@pytest.mark.parametrize("error, status, code, kind", [
    (errors.InvalidKey("no key"), 401, "invalid_api_key", "invalid_request_error"),
    (errors.ModelNotAllowed("no"), 403, "model_not_allowed", "invalid_request_error"),
    (errors.RateLimited("slow down"), 429, "rate_limit_exceeded", "requests"),
    (errors.BudgetExhausted("spent"), 429, "insufficient_quota", "insufficient_quota"),
    (errors.ModelNotPriced("unknown"), 400, "model_not_priced", "invalid_request_error"),
    (errors.BadRequest("bad"), 400, "invalid_request_error", "invalid_request_error"),
    (errors.EndpointNotMetered("no"), 403, "endpoint_not_metered", "invalid_request_error"),
    (errors.UnknownEndpoint("where"), 404, "unknown_endpoint", "invalid_request_error"),
    (errors.StoreUnavailable("down"), 503, "store_unavailable", "server_error"),
    (errors.GatewayError("broken"), 500, "gateway_error", "server_error"),
])
def test_refuse_answers_in_the_providers_shape(error, status, code, kind):
    flow = llm_flow()
    chain.refuse(flow, error)
    assert flow.response.status_code == status
    assert flow.response.headers["content-type"] == "application/json"
    assert json.loads(flow.response.content) == {
        "error": {"message": error.message, "type": kind, "param": None, "code": code}}
    assert facts(flow)["refused"] == {"kind": error.kind, "code": code, "status": status,
                                            "message": error.message}


def test_refuse_carries_the_errors_headers():
    flow = llm_flow()
    chain.refuse(flow, errors.RateLimited("slow down", {"retry-after": "7", "x-ratelimit-limit-requests": "3"}))
    assert flow.response.headers["retry-after"] == "7"
    assert flow.response.headers["x-ratelimit-limit-requests"] == "3"


def test_budget_refusals_tell_sdks_not_to_retry():
    flow = llm_flow()
    chain.refuse(flow, errors.BudgetExhausted("spent"))
    assert flow.response.headers["x-should-retry"] == "false"


def test_refuse_needs_an_llm_flow():
    with pytest.raises(RuntimeError):
        chain.refuse(other_flow(), errors.BadRequest("bad"))


class Link:
    """A link whose hooks raise ``error`` (after answering with ``answer``, if given)."""

    def __init__(self, error: Exception, answer: http.Response | None = None):
        self.error, self.answer = error, answer

    @chain.fail_closed
    async def request(self, flow):
        if self.answer is not None:
            flow.response = self.answer
        raise self.error

    @chain.fail_closed
    async def response(self, flow):
        raise self.error


class TestFailClosed:
    def test_a_pouch_error_becomes_that_refusal(self):
        flow = llm_flow()
        run(Link(errors.ModelNotPriced("no price for 'x'")).request(flow))
        assert flow.response.status_code == 400
        assert json.loads(flow.response.content)["error"]["code"] == "model_not_priced"

    def test_any_other_exception_becomes_a_gateway_error(self):
        flow = llm_flow()
        run(Link(KeyError("boom")).request(flow))
        assert flow.response.status_code == 500
        error = json.loads(flow.response.content)["error"]
        assert error["code"] == "gateway_error"
        assert "Link failed" in error["message"] and "not forwarded" in error["message"]
        assert facts(flow)["refused"]["kind"] == "gateway"

    def test_a_flow_without_a_provider_is_killed(self):
        flow = other_flow()
        run(Link(KeyError("boom")).request(flow))
        assert flow.response is None
        assert flow.error is not None and flow.error.msg == mflow.Error.KILLED_MESSAGE

    def test_a_pouch_error_on_a_flow_without_a_provider_is_not_forwarded(self):
        flow = other_flow()
        run(Link(errors.GatewayError("not accounted for")).request(flow))
        assert flow.response is not None or flow.error is not None

    @pytest.mark.parametrize("error", [errors.BadRequest("late"), RuntimeError("late")])
    def test_an_answer_already_given_is_kept(self, error):
        flow = llm_flow()
        answer = http.Response.make(200, b"mock")
        with contextlib.suppress(errors.PouchError):  # mitmproxy logs what escapes a hook
            run(Link(error, answer).request(flow))
        assert flow.response is answer and facts(flow)["refused"] is None

    @pytest.mark.parametrize("error", [errors.BadRequest("late"), RuntimeError("late")])
    def test_response_phase_failures_never_rewrite_the_response(self, error):
        flow = llm_flow()
        flow.response = answer = http.Response.make(200, b"upstream")
        with contextlib.suppress(errors.PouchError):  # mitmproxy logs what escapes a hook
            run(Link(error).response(flow))
        assert flow.response is answer and flow.response.content == b"upstream"
        assert facts(flow)["refused"] is None

    def test_the_hook_result_is_passed_through(self):
        class Answers:
            @chain.fail_closed
            async def request(self, flow):
                return "done"

        assert run(Answers().request(llm_flow())) == "done"
