"""Gateway names in the store: one live holder per name, on SQLite and PostgreSQL."""

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest

from pouch.store import database, instances
from pouch.store.database import InstanceRow

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
HERE = "gateway-host"


def seconds(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def dead_pid() -> int:
    """A pid that existed a moment ago and no longer does."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def live_pid() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_free_name_is_claimed(any_store):
    mine = instances.claim("eu-1", T0, host=HERE, pid=101)
    assert mine == instances.Holder("eu-1", HERE, 101, T0, T0)
    assert instances.holder("eu-1") == mine, "the claim is stored (timestamps to the microsecond)"


def test_a_live_holder_is_refused(any_store):
    first = instances.claim("eu-1", T0, host="other-host", pid=101)
    with pytest.raises(instances.NameTaken) as refused:
        instances.claim("eu-1", seconds(5), host=HERE, pid=202)
    assert refused.value.holder == first
    assert "'eu-1'" in str(refused.value) and "other-host" in str(refused.value) and "pid 101" in str(refused.value)
    assert instances.holder("eu-1") == first, "the holder keeps its name"


def test_a_live_process_on_this_host_is_refused(any_store):
    other = live_pid()
    try:
        instances.claim("eu-1", T0, host=HERE, pid=other.pid)
        with pytest.raises(instances.NameTaken):
            instances.claim("eu-1", seconds(1), host=HERE, pid=202)
    finally:
        other.kill()
        other.wait()


def test_a_stale_holder_is_taken_over(any_store):
    instances.claim("eu-1", T0, host="other-host", pid=101)
    with pytest.raises(instances.NameTaken):  # silent, but not for long enough
        instances.claim("eu-1", T0 + instances.STALE_AFTER - timedelta(microseconds=1), host=HERE, pid=202)
    late = T0 + instances.STALE_AFTER
    assert instances.claim("eu-1", late, host=HERE, pid=202) == instances.Holder("eu-1", HERE, 202, late, late)
    assert instances.holder("eu-1").pid == 202


def test_a_dead_process_on_this_host_is_taken_over_at_once(any_store):
    """A gateway killed with SIGKILL restarts at once: its host can see its process is gone."""
    instances.claim("eu-1", T0, host=HERE, pid=dead_pid())
    assert instances.claim("eu-1", seconds(1), host=HERE, pid=202).pid == 202


def test_a_missing_process_on_another_host_proves_nothing(any_store):
    instances.claim("eu-1", T0, host="other-host", pid=dead_pid())
    with pytest.raises(instances.NameTaken):
        instances.claim("eu-1", seconds(1), host=HERE, pid=202)


def test_heartbeats_keep_a_name(any_store):
    mine = instances.claim("eu-1", T0, host="other-host", pid=101)
    assert instances.heartbeat(mine, seconds(25))
    assert instances.holder("eu-1").heartbeat_at == seconds(25)
    with pytest.raises(instances.NameTaken):  # 40 s after the claim, but 15 s after a heartbeat
        instances.claim("eu-1", seconds(40), host=HERE, pid=202)
    taken = instances.claim("eu-1", seconds(25) + instances.STALE_AFTER, host=HERE, pid=202)
    assert not instances.heartbeat(mine, seconds(60)), "a name taken over is no longer ours"
    assert instances.holder("eu-1") == taken


def test_release_frees_only_our_own_claim(any_store):
    old = instances.claim("eu-1", T0, host="other-host", pid=101)
    new = instances.claim("eu-1", T0 + instances.STALE_AFTER, host=HERE, pid=202)
    instances.release(old)
    assert instances.holder("eu-1") == new, "a late release of a taken-over claim leaves the new holder"
    instances.release(new)
    assert instances.holder("eu-1") is None
    assert instances.claim("eu-1", seconds(40), host="third-host", pid=303).host == "third-host"


def test_the_same_process_may_claim_again(any_store):
    """A reloaded script claims the name its earlier self holds."""
    instances.claim("eu-1", T0, host=HERE, pid=101)
    assert instances.claim("eu-1", seconds(1), host=HERE, pid=101).started_at == seconds(1)


def test_names_are_independent(any_store):
    instances.claim("eu-1", T0, host="other-host", pid=101)
    assert instances.claim("eu-2", T0, host="other-host", pid=102).name == "eu-2"
    assert InstanceRow.select().count() == 2


@pytest.mark.parametrize("taken", [False, True], ids=["free", "stale"])
def test_concurrent_claims_have_one_winner(store_url, taken):
    database.open_store(store_url)
    if taken:
        instances.claim("eu-1", T0 - instances.STALE_AFTER, host="crashed-host", pid=1)
    won, refused, failed = [], [], []
    start = threading.Barrier(8)

    def claimant(i):
        try:
            start.wait()
            won.append(instances.claim("eu-1", T0, host=f"host-{i}", pid=1000 + i))
        except instances.NameTaken:
            refused.append(i)
        except Exception as e:  # noqa: BLE001 - reported below
            failed.append(e)
        finally:
            database.database.close()

    threads = [threading.Thread(target=claimant, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failed
    assert len(won) == 1 and len(refused) == 7
    assert instances.holder("eu-1") == won[0]
    database.database.close()


def test_this_host_tells_apart_machines_and_containers_that_share_a_host_name():
    """Two containers named alike (one compose service, replicas) must not read each other's
    pid as their own: the holder's host carries the boot id and the pid namespace."""
    import socket

    name, boot, namespace = instances.this_host().split("/")
    assert name == socket.gethostname() and boot and namespace
    now = datetime.now(UTC)
    other = instances.Holder("gw", f"{name}/{boot}/1", 999_999_999, now, now)
    assert not instances.is_gone(other, now, instances.this_host())  # another namespace: its heartbeat counts
    here = instances.Holder("gw", instances.this_host(), 999_999_999, now, now)
    assert instances.is_gone(here, now, instances.this_host())  # this namespace, and no such process  # another namespace: trust its heartbeat


def test_a_live_gateways_request_outlives_its_deadline_without_being_recovered(any_store):
    """A long generation or a slow reader keeps a reservation open past pouch_hold: while its
    gateway heartbeats, that gateway settles it at its real cost; other gateways leave it."""
    from pouch.domain.money import Money
    from pouch.domain.periods import Period
    from pouch.store import keys as key_store
    from pouch.store import ledger

    key, _ = key_store.create("alice", T0, budget=Money.usd("5"))
    window = Period.parse("none").window(T0, T0)
    held = ledger.reserve(key.id, window, Money.usd("1"), T0, owner="gw-a", hold=timedelta(seconds=900))
    instances.claim("gw-a", seconds(1000), host="other-host", pid=101)
    assert ledger.recover(seconds(1001)) == 0, "past its deadline, but its gateway is alive"
    assert ledger.recover(seconds(1000 + 31)) == 1, "its gateway went silent: charged in full"
    assert ledger.finish(held.id, Money.usd("0.5"), {"ts": T0, "key": key.id, "key_name": "alice"}) is False


def test_a_live_gateways_reservation_is_recovered_after_a_day(any_store):
    from pouch.domain.money import Money
    from pouch.domain.periods import Period
    from pouch.store import keys as key_store
    from pouch.store import ledger

    key, _ = key_store.create("alice", T0, budget=Money.usd("5"))
    window = Period.parse("none").window(T0, T0)
    ledger.reserve(key.id, window, Money.usd("1"), T0, owner="gw-a", hold=timedelta(seconds=900))
    day = seconds(24 * 3600 + 1)
    instances.claim("gw-a", day, host="other-host", pid=101)
    assert ledger.recover(day) == 1
