"""End to end: a real mitmdump, the real openai and anthropic SDKs, the operator's price file.

A retired model is refused the way its provider answers a model that is gone (the SDK raises
NotFoundError) with the date and the replacement, and nothing reaches the provider; Claude's
context-1m beta is refused where the table has no price above the short window and admitted,
answered and charged where it has.
"""

from __future__ import annotations

import json
import uuid

import anthropic
import httpx2
import openai
import pytest

from pouch.services import keys as key_service
from pouch.store.database import UsageRow
from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.openai_fake import FakeOpenAI
from tests import pinned_prices
from tests.gateway import Gateway

PRICES = {"models": [
    {"model": "gpt-old", "provider": "openai", "retired": "2026-01-01", "use": "gpt-4o-mini",
     "source": "https://developers.openai.com/api/docs/deprecations", "as_of": "2026-11-27"},
    {"model": "claude-short", "provider": "anthropic", "input": "3", "output": "15", "max_input_tokens": 200000,
     "source": "test", "as_of": "2026-11-27"},
    {"model": "claude-long", "provider": "anthropic", "input": "3", "output": "15", "max_input_tokens": 200000,
     "tiers": [{"above_input_tokens": 200000, "input": "6", "output": "22.50"}], "source": "test",
     "as_of": "2026-11-27"},
]}
BETA = {"anthropic-beta": "context-1m-2025-08-07"}


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    tls = tmp_path_factory.mktemp("tls")
    with FakeOpenAI(tls_dir=tls / "o") as gpt, FakeAnthropic(tls_dir=tls / "a") as claude:
        bundle = tls / "cas.pem"
        bundle.write_text(open(gpt.ca_path).read() + open(claude.ca_path).read())
        yield gpt, claude, bundle


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory):
    gpt, claude, bundle = fakes
    home = tmp_path_factory.mktemp("gateway")
    pinned_prices.write(home, PRICES["models"])
    gateway = Gateway(home, {"api.openai.com": gpt.url, "api.anthropic.com": claude.url}, str(bundle)).start()
    gateway.open_store()
    yield gateway
    gateway.stop()


def secret():
    return key_service.create(f"k{uuid.uuid4().hex[:10]}", budget="5")[1]


def claude(gateway, key):
    return anthropic.Anthropic(api_key=key, max_retries=0, http_client=httpx2.Client(
        proxy=gateway.proxy_url, verify=gateway.tls(), timeout=30))


def ask(client, model, **kwargs):
    return client.messages.create(model=model, max_tokens=20, messages=[{"role": "user", "content": "hello"}], **kwargs)


def test_a_retired_model_is_refused_as_gone_with_its_date_and_replacement(gateway, fakes):
    gpt, _, _ = fakes
    before = len(gpt.requests)
    with pytest.raises(openai.NotFoundError) as gone:
        gateway.client(secret()).chat.completions.create(
            model="gpt-old-2024-05-13", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert gone.value.code == "model_not_found"
    assert "model 'gpt-old' was retired by openai on 2026-01-01: use gpt-4o-mini instead" in gone.value.message
    assert len(gpt.requests) == before  # nothing went upstream


def test_the_context_1m_beta_is_refused_without_a_long_context_price(gateway, fakes):
    _, claude_fake, _ = fakes
    before = len(claude_fake.requests)
    with pytest.raises(anthropic.BadRequestError) as refused:
        ask(claude(gateway, secret()), "claude-short", extra_headers=BETA)
    assert "no price for its input above 200,000 tokens" in refused.value.message
    assert len(claude_fake.requests) == before


def test_the_context_1m_beta_is_answered_and_charged_with_a_long_context_price(gateway):
    answer = ask(claude(gateway, secret()), "claude-long", extra_headers=BETA)
    assert answer.usage.output_tokens > 0
    gateway.settled()
    row = UsageRow.select().where(UsageRow.model == "claude-long").get()
    # a short prompt: below the 200K threshold, so the short rate is the right one
    expected = answer.usage.input_tokens * 3_000_000 + answer.usage.output_tokens * 15_000_000
    assert row.cost_pico == expected
