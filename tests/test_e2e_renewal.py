"""Auto-renewal through a real gateway: a key whose expiry is far behind is renewed in one
step on its next request, and the renewal is stored."""

from datetime import UTC, datetime, timedelta

from pouch.domain.periods import utcnow
from pouch.services import keys as key_service
from pouch.store import keys as key_store
from pouch.store.database import KeyRow, UsageRow
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import Gateway


def test_a_1s_key_expired_in_2000_serves_its_next_request(tmp_path):
    """Renewing one period at a time would run ~830 million steps on the store thread (minutes,
    while every other key's requests wait); the client here gives up after 30 s."""
    with FakeOpenAI(tls_dir=tmp_path / "tls") as fake:
        gateway = Gateway(tmp_path / "gw", {"api.openai.com": fake.url}, str(fake.ca_path)).start()
        try:
            gateway.open_store()
            # Made to expire soon, then set back to 2000 in the store: creating it that way is refused
            # (a renewal date in the past is an operator's mistake), but a key unused for years is not.
            key, secret = key_service.create("every-second", budget="1", period="1s", expires="30d",
                                             auto_renew=True)
            KeyRow.update(expires_at=datetime(2000, 1, 1, tzinfo=UTC), anchor=datetime(1999, 12, 31, 23, 59, 59,
                                                                                       tzinfo=UTC)).where(
                KeyRow.id == key.id).execute()
            before = utcnow()
            reply = gateway.client(secret).chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "still there?"}], max_tokens=10)
            assert reply.choices[0].message.content == "echo: still there?"
            gateway.settled(expected_rows=1)

            renewed = key_store.get(key.id)
            assert renewed.expires_at > before, "the stored expiry moved past the request"
            assert renewed.expires_at - renewed.anchor == timedelta(seconds=1)
            assert renewed.anchor <= utcnow() and renewed.anchor.microsecond == 0, "on the key's 1 s grid"
            assert UsageRow.get().outcome == "ok"
        finally:
            gateway.stop()
