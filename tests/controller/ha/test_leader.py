"""The leader lease on SQLite and on the real PostgreSQL: acquire, renew, expiry and takeover with a new
epoch, release, concurrent candidates, the local deadline, and fencing of state writes (a fenced write
leaves nothing behind; a takeover waits for a write in flight)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import suppress

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from controller.errors import FencedError, StateBusyError
from controller.ha.leader import Leadership, LeaseSettings, LeaseTable
from controller.store.state import StateStore


class FakeMonotonic:
    """A hand-driven monotonic clock, to test the local deadline without waiting."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def migrated(lease_url: str) -> Iterator[str]:
    store = StateStore(lease_url)  # creates the leader_lease table (migration 2)
    store.close()
    yield lease_url


@pytest.fixture
def tables(migrated: str) -> Iterator[list[LeaseTable]]:
    made: list[LeaseTable] = []
    yield made
    for t in made:
        t.close()


def table(tables: list[LeaseTable], url: str, cid: str = "dc1") -> LeaseTable:
    t = LeaseTable(url, cid)
    tables.append(t)
    return t


def test_first_candidate_gets_epoch_one_and_others_wait(migrated: str, tables: list[LeaseTable]) -> None:
    a, b = table(tables, migrated), table(tables, migrated)
    got = a.try_acquire("host-a:1:x", ttl=10)
    assert got is not None and got.epoch == 1 and got.holder == "host-a:1:x"
    assert 9.0 < got.remaining <= 10.0
    assert b.try_acquire("host-b:2:y", ttl=10) is None
    seen = b.read()
    assert seen is not None and seen.holder == "host-a:1:x" and seen.epoch == 1 and seen.live
    # another controller id is another election
    other = table(tables, migrated, "dc2").try_acquire("host-b:2:y", ttl=10)
    assert other is not None and other.epoch == 1


def test_renew_extends_only_the_holders_lease(migrated: str, tables: list[LeaseTable]) -> None:
    a = table(tables, migrated)
    first = a.try_acquire("a", ttl=2)
    assert first is not None
    time.sleep(0.05)
    renewed = a.renew("a", first.epoch, ttl=5)
    assert renewed is not None and renewed.expires_at > first.expires_at and renewed.epoch == first.epoch
    assert a.renew("b", first.epoch, ttl=5) is None  # not the holder
    assert a.renew("a", first.epoch + 1, ttl=5) is None  # not the epoch


def test_expired_lease_is_taken_over_with_a_new_epoch(migrated: str, tables: list[LeaseTable]) -> None:
    a, b = table(tables, migrated), table(tables, migrated)
    first = a.try_acquire("a", ttl=1.5)
    assert first is not None
    assert b.try_acquire("b", ttl=5) is None
    time.sleep(1.6)
    taken = b.try_acquire("b", ttl=5)
    assert taken is not None and taken.holder == "b" and taken.epoch == first.epoch + 1
    assert a.renew("a", first.epoch, ttl=5) is None  # the old leader learns it lost
    assert a.try_acquire("a", ttl=5) is None


def test_release_lets_the_standby_in_at_once(migrated: str, tables: list[LeaseTable]) -> None:
    a, b = table(tables, migrated), table(tables, migrated)
    first = a.try_acquire("a", ttl=30)
    assert first is not None
    assert not a.release("b", first.epoch)  # only the holder releases
    assert a.release("a", first.epoch)
    taken = b.try_acquire("b", ttl=30)
    assert taken is not None and taken.epoch == 2


def test_concurrent_candidates_exactly_one_wins(migrated: str, tables: list[LeaseTable]) -> None:
    candidates = [table(tables, migrated) for _ in range(6)]
    barrier = threading.Barrier(len(candidates))
    wins: list[int] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            if candidates[i].try_acquire(f"c{i}", ttl=30) is not None:
                wins.append(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(candidates))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert errors == []
    assert len(wins) == 1
    info = candidates[0].read()
    assert info is not None and info.holder == f"c{wins[0]}" and info.epoch == 1


def test_settings_refuse_a_renewal_period_that_cannot_keep_the_lease() -> None:
    with pytest.raises(ValueError, match="at most half"):
        LeaseSettings(ttl=10, renew_every=5)
    assert LeaseSettings(ttl=10, renew_every=2).hold_for == pytest.approx(9.0)


def test_local_deadline_steps_down_without_the_database(migrated: str, tables: list[LeaseTable]) -> None:
    clock = FakeMonotonic()
    lead = Leadership(table(tables, migrated), LeaseSettings(ttl=10, renew_every=2), holder="a", monotonic=clock)
    assert lead.try_acquire() and lead.role == "active" and lead.ensure() == 1
    lead.changed.clear()
    clock.t += 8.9
    assert lead.holds()
    clock.t += 0.2  # past ttl * (1 - drift) since the acquisition was sent: no longer sure
    assert not lead.holds() and lead.role == "standby"
    with pytest.raises(FencedError, match="expired here"):
        lead.ensure()
    assert lead.changed.is_set() and lead.epoch is None
    # a renewal after the deadline does not resurrect it: it is a standby and must win a new election
    assert not lead.renew()


def test_fenced_store_write_after_takeover_leaves_nothing(migrated: str, tables: list[LeaseTable]) -> None:
    # a TTL long enough that B's first try still finds A's lease alive on a loaded machine (0.6 s was not)
    settings = LeaseSettings(ttl=2.0, renew_every=0.5)
    clock_a = FakeMonotonic()  # A's own clock stands still: it believes its lease holds (a paused process)
    a = Leadership(table(tables, migrated), settings, holder="a", monotonic=clock_a)
    b = Leadership(table(tables, migrated), settings, holder="b")
    store_a = StateStore(migrated, fence=a.fence)
    store_b = StateStore(migrated, fence=b.fence)
    try:
        assert a.try_acquire()
        [(_replica, intent)] = store_a.plan_replicas("web", 1, spec_hash="h", reason="r")
        assert intent.fence == 1
        assert not b.try_acquire()
        with pytest.raises(FencedError, match="standby"):
            store_b.record_event("x", "a standby never writes")
        time.sleep(2.1)  # A's lease expires in the database (A, paused, has not noticed)
        assert b.try_acquire() and b.epoch == 2
        a.changed.clear()
        with pytest.raises(FencedError, match="held by b"):
            store_a.plan_replicas("web", 1, spec_hash="h", reason="late")
        assert a.role == "standby" and a.changed.is_set()
        with pytest.raises(FencedError):
            store_a.complete(intent.id, outcome={"instances": ["i-late"]})
        assert len(store_b.replicas("web")) == 1  # the fenced plan left nothing
        assert store_b.intent(intent.id).state == "pending"  # type: ignore[union-attr]
        [(_, newer)] = store_b.plan_replicas("web", 1, spec_hash="h", reason="new leader")
        assert newer.fence == 2
    finally:
        store_a.close()
        store_b.close()


def test_takeover_waits_for_a_write_in_flight(migrated: str, tables: list[LeaseTable]) -> None:
    """The old leader's transaction that passed the fence check commits before the takeover, never after."""
    clock_a = FakeMonotonic()
    a = Leadership(table(tables, migrated), LeaseSettings(ttl=0.5, renew_every=0.2), holder="a", monotonic=clock_a)
    b_table = table(tables, migrated)
    store_a = StateStore(migrated, fence=a.fence)
    order: list[str] = []
    in_tx, takeover_started = threading.Event(), threading.Event()
    try:
        assert a.try_acquire()

        def takeover() -> None:
            in_tx.wait(10)
            time.sleep(0.6)  # the lease is now expired in the database
            order.append("takeover-start")
            takeover_started.set()
            got = b_table.try_acquire("b", ttl=30)
            order.append("takeover-done" if got is not None else "takeover-refused")

        th = threading.Thread(target=takeover)
        th.start()
        with store_a._write() as (_session, epoch):  # a write that passed the fence check...
            assert epoch == 1
            in_tx.set()
            # ...and is slow to commit while the takeover runs: it has begun (however slow the machine)
            # and had 0.6 s to go through, which it must not
            assert takeover_started.wait(30), "the takeover thread never started"
            time.sleep(0.6)
            order.append("old-leader-commit")
        th.join(20)
        assert order == ["takeover-start", "old-leader-commit", "takeover-done"]
    finally:
        store_a.close()


def test_election_threads_one_active_and_takeover_after_a_crash(migrated: str, tables: list[LeaseTable]) -> None:
    # a ttl ten renewals long: a renewal thread held up for a second on a loaded machine keeps its lease
    settings = LeaseSettings(ttl=2.0, renew_every=0.2)
    a = Leadership(table(tables, migrated), settings, holder="a")
    b = Leadership(table(tables, migrated), settings, holder="b")
    a.try_acquire()
    a.start()
    b.start()
    try:
        for _ in range(15):  # renewals keep A in place well past the ttl
            time.sleep(0.2)
            assert a.role == "active" and b.role == "standby"
        assert b.last_seen is not None and b.last_seen.holder == "a"
        a._stop.set()  # "SIGKILL": renewals stop, nothing is released
        a._thread.join(5)  # type: ignore[union-attr]
        last = a.last_seen  # A's lease as its last renewal left it
        assert last is not None and last.holder == "a"
        stopped = time.monotonic()
        while b.role != "active" and time.monotonic() - stopped < settings.ttl + 30:
            time.sleep(0.02)
        assert b.role == "active" and b.epoch == 2
        # never before A's lease expired (both times from the database's clock); how soon after is the
        # machine's load, not the lease's logic
        assert b.last_seen is not None and b.last_seen.acquired_at >= last.expires_at, (b.last_seen, last)
        a._epoch, a._deadline = None, 0.0
    finally:
        b.stop(resign=True)
        a.stop(resign=False)
    info = LeaseTable(migrated, "dc1")
    try:
        after = info.read()
        assert after is not None and not after.live  # B resigned at stop: the lease is free at once
    finally:
        info.close()


def test_history_rows_group_commit_and_are_dropped_once_fenced(migrated: str, tables: list[LeaseTable]) -> None:
    """Samples recorded by many policies' jobs at once all land (written in shared transactions); a sample
    refused by the fence is never written later under another epoch."""
    clock = FakeMonotonic()
    lead = Leadership(table(tables, migrated), LeaseSettings(ttl=10, renew_every=2), holder="a", monotonic=clock)
    store = StateStore(migrated, fence=lead.fence)
    try:
        assert lead.try_acquire()
        barrier = threading.Barrier(24)

        def record(i: int) -> None:
            barrier.wait()
            store.record_sample(f"p{i}", at=1000.0 + i, value=float(i), ok=True, source="test")

        threads = [threading.Thread(target=record, args=(i,)) for i in range(24)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert sorted(s.value for i in range(24) for s in store.samples(f"p{i}", 0)) == [float(i) for i in range(24)]
        clock.t += 60  # the lease is lost
        with pytest.raises(FencedError):
            store.record_sample("late", at=2000.0, value=1.0, ok=True, source="test")
        assert store._hist == []  # dropped, not queued for a later epoch
        assert store.samples("late", 0) == []
    finally:
        store.close()


def test_a_leader_frozen_inside_a_write_does_not_block_the_takeover(ha_pg_url: str) -> None:
    """PostgreSQL only (the fence's FOR SHARE row lock is PostgreSQL's; SQLite serialises writers on one
    host): an old leader frozen (SIGSTOP, a paused VM) inside a write transaction that passed the fence
    check would hold the lease row until it resumed, so no standby could take over. Its session is ended
    after IDLE_IN_TRANSACTION_TIMEOUT idle in the transaction; the takeover then goes through, and the frozen
    write is rolled back, never committed after the takeover."""
    from controller.store.database import IDLE_IN_TRANSACTION_TIMEOUT

    StateStore(ha_pg_url).close()  # migrated: the leader_lease table
    a_table, b_table = LeaseTable(ha_pg_url, "dc1"), LeaseTable(ha_pg_url, "dc1")
    a = Leadership(a_table, LeaseSettings(ttl=0.5, renew_every=0.2), holder="a", monotonic=FakeMonotonic())
    store_a = StateStore(ha_pg_url, fence=a.fence)
    try:
        assert a.try_acquire()
        frozen = store_a._write()
        _session, epoch = frozen.__enter__()  # the write passed the fence check (row FOR SHARE)...
        assert epoch == 1
        store_a_rows = store_a.count("events")
        _session.execute(text("INSERT INTO events (at, kind, message) VALUES (0, 'frozen', 'never committed')"))
        t0 = time.monotonic()
        got = None
        while got is None and time.monotonic() - t0 < 20:  # ...and its process never comes back
            time.sleep(0.5)
            try:
                got = b_table.try_acquire("b", ttl=30)
            except StateBusyError:  # statement timeout (3 s) while the frozen transaction holds the row
                got = None
        took = time.monotonic() - t0
        assert got is not None and got.epoch == 2 and got.holder == "b", f"no takeover after {took:.1f}s"
        limit = float(IDLE_IN_TRANSACTION_TIMEOUT.rstrip("s"))
        assert took < limit + 5, took  # ended by the idle timeout, then the next attempt (3 s statement cap)
        with pytest.raises(SQLAlchemyError):  # the frozen transaction's session is gone
            _session.execute(text("SELECT 1"))
        assert store_a.count("events") == store_a_rows
    finally:
        with suppress(SQLAlchemyError, StateBusyError):  # its connection was terminated: nothing to commit
            frozen.__exit__(None, None, None)
        store_a.close()
        a_table.close()
        b_table.close()
