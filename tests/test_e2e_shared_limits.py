"""Rate limits shared through the store, end to end: two real gateways on one SQLite store
count one minute and one set of requests in flight per key, and a restart forgets nothing."""

from __future__ import annotations

import threading
import time

import openai
import pytest

from pouch.services import keys as key_service
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import Gateway

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def shared_fake(tmp_path_factory):
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("tls")) as fake:
        yield fake


@pytest.fixture
def fake(shared_fake):
    shared_fake.reset()
    return shared_fake


def gateway(fake, home, db, name):
    return Gateway(home, {"api.openai.com": fake.url}, str(fake.ca_path),
                   {"pouch_db": db, "pouch_instance": name}).start()


def chat(gw, secret, **extra):
    return gw.client(secret).chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=5, **extra)


def test_two_gateways_on_one_sqlite_store_share_a_keys_minute_and_a_restart_keeps_it(fake, tmp_path):
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    one = gateway(fake, tmp_path / "one", db, "one")
    two = gateway(fake, tmp_path / "two", db, "two")
    try:
        one.open_store()
        _, secret = key_service.create("shared", rpm=3)
        chat(one, secret)
        chat(two, secret)
        answered = two.client(secret).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=HELLO, max_tokens=5)
        assert answered.headers["x-ratelimit-remaining-requests"] == "0", "the third of 3, whichever gateway"
        with pytest.raises(openai.RateLimitError, match="key 'shared' is rate limited: over 3 requests per minute"):
            chat(one, secret)
        two.stop()
        two = gateway(fake, tmp_path / "two", db, "two")  # a restart does not forget the minute
        with pytest.raises(openai.RateLimitError) as refused:
            chat(two, secret)
        assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
        assert len(fake.requests) == 3
    finally:
        one.stop()
        two.stop()


def test_requests_in_flight_are_counted_across_gateways(fake, tmp_path):
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    one = gateway(fake, tmp_path / "one", db, "one")
    two = gateway(fake, tmp_path / "two", db, "two")
    try:
        one.open_store()
        _, secret = key_service.create("slots", max_concurrent=1)
        slow = threading.Thread(target=chat, args=(one, secret), kwargs={"extra_headers": {"x-fake-delay": "2"}})
        slow.start()
        try:
            deadline = time.monotonic() + 10
            while not fake.requests:  # the slow one is in flight at the provider
                assert time.monotonic() < deadline
                time.sleep(0.02)
            with pytest.raises(openai.RateLimitError, match="1 requests already in flight"):
                chat(two, secret)
        finally:
            slow.join(15)
        one.settled()
        chat(two, secret)  # settled: its place is free again, on the other gateway too
    finally:
        one.stop()
        two.stop()
