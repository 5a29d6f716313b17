"""Old events leave the store (pouch/alerts/outbox.py prune, on the delivery timer), but only
where that cannot let an event be sent twice for its period: sent or given up, and their period
over ``KEEP`` ago."""

import asyncio
from datetime import UTC, datetime, timedelta

from pouch.alerts import delivery, events, outbox
from pouch.alerts.outbox import AlertRow
from pouch.domain.money import Money
from pouch.domain.periods import Window
from pouch.services.store_thread import StoreThread
from pouch.store import keys

NOW = datetime.now(UTC)
DAY = timedelta(days=1)


def write(key, event: events.Event, start: datetime, state: str) -> str:
    assert outbox.add(key.id, event, start)
    AlertRow.update(state=state).where(AlertRow.id == event.id).execute()
    return event.id


def threshold(key, start, end, pct):
    return events.threshold(key.name, pct, Money(500), Money(1000), Window(start, end))


def outbox_of_every_age() -> dict[str, str]:
    """name -> id: events of periods that ended long ago, lately, or never, in each state."""
    key, _ = keys.create("alice", NOW - 60 * DAY, budget=Money(1000))
    ended_long_ago = (NOW - 10 * DAY, NOW - 8 * DAY)
    ended_lately = (NOW - 8 * DAY, NOW - 6 * DAY)
    ids = {
        "sent, ended 8 days ago": write(key, threshold(key, *ended_long_ago, 50), ended_long_ago[0], "delivered"),
        "given up, ended 8 days ago": write(key, threshold(key, *ended_long_ago, 80), ended_long_ago[0], "failed"),
        "pending, ended 8 days ago": write(key, threshold(key, *ended_long_ago, 90), ended_long_ago[0], "pending"),
        "sent, ended 6 days ago": write(key, threshold(key, *ended_lately, 50), ended_lately[0], "delivered"),
        "sent, never ends": write(key, threshold(key, NOW - 30 * DAY, None, 50), NOW - 30 * DAY, "delivered"),
    }
    for name, expired in (("expired 8 days ago", NOW - 8 * DAY), ("expired 6 days ago", NOW - 6 * DAY)):
        warning = events.expiring(key.name, expired, expired - 3 * DAY, Money(0), Money(1000),
                                  Window(NOW - 30 * DAY, None))
        ids[f"key.expiring, {name}"] = write(key, warning, expired, "delivered")
    return ids


def left(ids: dict[str, str]) -> list[str]:
    kept = {row.id for row in AlertRow.select()}
    return sorted(name for name, id_ in ids.items() if id_ in kept)


KEPT = ["key.expiring, expired 6 days ago", "pending, ended 8 days ago", "sent, ended 6 days ago", "sent, never ends"]


def test_only_sent_or_given_up_events_of_periods_over_a_week_ago_are_deleted(any_store):
    ids = outbox_of_every_age()
    assert outbox.prune(NOW, batch=2) == 3  # in batches smaller than the outbox
    assert left(ids) == KEPT
    assert outbox.prune(NOW) == 0


def test_a_pruned_period_is_not_alerted_again_and_the_current_one_still_once(any_store):
    key, _ = keys.create("bob", NOW - 60 * DAY, budget=Money(1000), period="daily")
    window = key.window(NOW)
    assert outbox.refused(key.id, NOW)
    AlertRow.update(state="delivered").execute()
    assert outbox.prune(NOW + 3 * DAY) == 0, "its day ended under a week ago"
    assert not outbox.refused(key.id, NOW), "once per period: its row is still there"
    assert outbox.prune(window.end + outbox.KEEP + timedelta(seconds=1)) == 1


def test_the_delivery_timer_prunes(store):
    ids = outbox_of_every_age()

    async def look():
        courier = delivery.Courier(delivery.Settings(), StoreThread())
        await courier.once()
        await courier.close()

    asyncio.run(look())
    assert left(ids) == KEPT
