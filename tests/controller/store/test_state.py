"""The state store on SQLite and on the real PostgreSQL: migrations, the journal, replicas, instances,
events, policy state, pruning, fencing, and a locked database surfacing as StateBusyError."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from controller.errors import FencedError, NotFoundError, StateBusyError
from controller.ports import Instance, InstanceState
from controller.store import migrations
from controller.store.models import IntentKind, IntentState, ReplicaState
from controller.store.state import StateStore, sqlite_url


def test_migrations_apply_once_and_reopen_is_a_no_op(state_url: str) -> None:
    first = StateStore(state_url)
    assert first.schema_version() == migrations.LATEST
    first.record_event("test", "survives reopen")
    first.close()
    again = StateStore(state_url)
    try:
        assert again.schema_version() == migrations.LATEST
        events, _ = again.events()
        assert [e.message for e in events] == ["survives reopen"]
    finally:
        again.close()


def test_plan_creates_replica_and_launch_intent_atomically(store: StateStore) -> None:
    [(replica, intent)] = store.plan_replicas("web", 1, spec_hash="h1", reason="load 90 > 75")
    assert replica.state == ReplicaState.PLANNED and replica.planned_at is not None
    assert intent.kind == IntentKind.LAUNCH and intent.token == intent.id and intent.replica_id == replica.id
    pending = store.intents(policy="web", state=IntentState.PENDING)
    assert [i.id for i in pending] == [intent.id]
    assert len(intent.id) <= 64 and intent.id.isascii()


def test_pending_intent_is_reused_after_a_restart(state_url: str) -> None:
    s1 = StateStore(state_url)
    [(replica, launch)] = s1.plan_replicas("web", 1, spec_hash="h", reason="r")
    got = s1.step_intent(replica, IntentKind.LAUNCH)
    assert got.id == launch.id and got.attempts == 1
    s1.close()  # "crash" before the outcome is recorded
    s2 = StateStore(state_url)
    try:
        again = s2.step_intent(replica, IntentKind.LAUNCH)
        assert again.id == launch.id and again.token == launch.token and again.attempts == 2
    finally:
        s2.close()


def test_complete_and_fail_move_the_replica_in_the_same_transaction(store: StateStore) -> None:
    [(_replica, launch)] = store.plan_replicas("web", 1, spec_hash="h", reason="r")
    moved = store.complete(launch.id, outcome={"instances": ["i-1"]}, to=ReplicaState.BOOTING, instance_id="i-1")
    assert moved is not None and moved.state == ReplicaState.BOOTING and moved.instance_id == "i-1"
    assert moved.booting_at is not None and moved.state_since == moved.booting_at
    done = store.intent(launch.id)
    assert done is not None and done.state == IntentState.DONE and '"i-1"' in (done.outcome or "")
    start = store.step_intent(moved, IntentKind.START, target="i-1")
    assert start.id != launch.id
    failed = store.fail(start.id, "pull failed: manifest unknown", to=ReplicaState.RELEASING, failure="pull failed")
    assert failed is not None and failed.state == ReplicaState.RELEASING and failed.failure == "pull failed"
    assert store.intent(start.id).state == IntentState.FAILED  # type: ignore[union-attr]
    # a new step after a failed one gets a fresh intent
    assert store.step_intent(failed, IntentKind.START).id != start.id
    with pytest.raises(NotFoundError):
        store.complete("nope")


def test_note_error_keeps_the_intent_pending(store: StateStore) -> None:
    [(_replica, launch)] = store.plan_replicas("web", 1, spec_hash="h", reason="r")
    store.note_error(launch.id, "Throttling.User")
    row = store.intent(launch.id)
    assert row is not None and row.state == IntentState.PENDING and row.error == "Throttling.User"


def test_replica_queries_by_policy_and_state(store: StateStore) -> None:
    a = store.plan_replicas("web", 2, spec_hash="h", reason="r")
    store.plan_replicas("api", 1, spec_hash="h", reason="r")
    store.transition(a[0][0].id, ReplicaState.GONE)
    assert len(store.replicas("web")) == 2
    assert [r.id for r in store.live_replicas("web")] == [a[1][0].id]
    assert len(store.replicas(states=[ReplicaState.PLANNED])) == 2


def test_instances_are_recorded_and_released(store: StateStore) -> None:
    inst = Instance(id="i-abc", state=InstanceState.PENDING, instance_type="ecs.c6.large", zone="z1",
                    private_ip=None, tags={}, created_at=100.0, price_per_hour=0.62)
    store.record_instance(inst, policy="web", replica_id="r1", intent_id="l1")
    store.record_instance(Instance(id="i-abc", state=InstanceState.RUNNING, instance_type="ecs.c6.large",
                                   zone="z1", private_ip="127.0.1.5", tags={}), policy="web", replica_id=None,
                          intent_id=None)
    [row] = store.instances("web")
    assert row.state == "running" and row.private_ip == "127.0.1.5" and row.replica_id == "r1"
    assert row.price_per_hour == 0.62 and row.created_at == 100.0
    store.mark_released(["i-abc", "i-unknown"])
    assert store.instances("web") == []
    assert store.instances("web", live=False)[0].released_at is not None


def test_events_page_newest_first_with_a_cursor(store: StateStore) -> None:
    for i in range(5):
        store.record_event("launch", f"m{i}", policy="web" if i % 2 == 0 else "api", details={"i": i})
    page, cursor = store.events(limit=2)
    assert [e.message for e in page] == ["m4", "m3"] and cursor is not None
    page2, cursor2 = store.events(limit=2, cursor=cursor)
    assert [e.message for e in page2] == ["m2", "m1"]
    page3, cursor3 = store.events(limit=2, cursor=cursor2)
    assert [e.message for e in page3] == ["m0"] and cursor3 is None
    web, _ = store.events(policy="web")
    assert [e.message for e in web] == ["m4", "m2", "m0"]


def test_policy_state_flags(store: StateStore) -> None:
    store.save_policy("web", spec='{"name": "web"}', source_file="/p/web.yaml")
    store.save_policy("web", paused=True, last_scale_out=12.5)
    row = store.policy_state("web")
    assert row is not None and row.paused and row.last_scale_out == 12.5 and row.spec == '{"name": "web"}'
    assert [p.policy for p in store.policy_states()] == ["web"]
    with pytest.raises(AttributeError):
        store.save_policy("web", no_such_flag=True)


def test_decisions_and_samples(store: StateStore) -> None:
    store.record_decision("web", value=90.0, desired=2, actual=0, direction="out", reason="90 > 75")
    store.record_decision("web", value=20.0, desired=0, actual=2, direction="in", reason="20 < 40")
    last = store.last_decision("web")
    assert last is not None and last.direction == "in" and last.desired == 0
    for t in (10.0, 20.0, 30.0):
        store.record_sample("web", at=t, value=t, ok=True, source="haproxy", replicas=1)
    assert [s.at for s in store.samples("web", since=15.0)] == [20.0, 30.0]
    assert [s.at for s in store.samples("web", since=0.0, limit=2)] == [10.0, 20.0]
    store.record_sample("api", at=25.0, value=None, ok=False, source="haproxy", capacity=4.0, replicas=2)
    # the status process's window: every policy, by id, the newest `limit`, oldest first
    rows = store.sample_rows(after=0, since=15.0, limit=10)
    assert [(r[1], r[2], r[3], r[4], r[5]) for r in rows] == [
        ("web", 20.0, 20.0, None, 1), ("web", 30.0, 30.0, None, 1), ("api", 25.0, None, 4.0, 2)]
    assert store.sample_rows(after=0, since=0.0, limit=2) == rows[-2:]
    assert store.sample_rows(after=rows[-1][0], since=0.0, limit=10) == []


def test_prune_keeps_pending_intents_and_live_replicas() -> None:
    now = [1000.0]
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        store = StateStore(sqlite_url(f"{d}/s.db"), clock=lambda: now[0])
        try:
            [(live, pending)] = store.plan_replicas("web", 1, spec_hash="h", reason="r")
            [(old, launch)] = store.plan_replicas("web", 1, spec_hash="h", reason="r")
            store.complete(launch.id, to=ReplicaState.GONE)
            store.record_event("x", "old")
            store.record_sample("web", at=1000.0, value=1.0, ok=True, source="s")
            now[0] = 5000.0
            counts = store.prune(before=2000.0)
            assert counts["replicas"] == 1 and counts["intents"] == 1 and counts["events"] == 1
            assert counts["samples"] == 1
            assert store.replica(live.id) is not None and store.intent(pending.id) is not None
            assert store.replica(old.id) is None
        finally:
            store.close()


def test_prune_keeps_samples_as_long_as_the_strategies_read_them(state_url: str) -> None:
    # a forecast policy reads about 15 days of samples: the daemon's gc keeps them past the 7-day retention
    now = [30 * 86400.0]
    store = StateStore(state_url, clock=lambda: now[0])
    try:
        for day in (1, 10, 20, 29):
            store.record_sample("web", at=day * 86400.0, value=float(day), ok=True, source="s")
        counts = store.prune(before=now[0] - 7 * 86400.0, samples_before=now[0] - 16 * 86400.0)
        assert counts["samples"] == 2
        assert [s.value for s in store.samples("web", since=0.0)] == [20.0, 29.0]
        assert store.prune(before=now[0] - 7 * 86400.0)["samples"] == 1  # without it: the 7 days
    finally:
        store.close()


def test_fence_hook_guards_every_write_and_stamps_intents(state_url: str) -> None:
    leader = {"token": 7, "ok": True}

    def fence(_session: object) -> int:
        if not leader["ok"]:
            raise FencedError("lease lost")
        return int(leader["token"])

    store = StateStore(state_url, fence=fence)
    try:
        [(_, intent)] = store.plan_replicas("web", 1, spec_hash="h", reason="r")
        assert intent.fence == 7
        leader["ok"] = False
        with pytest.raises(FencedError):
            store.plan_replicas("web", 1, spec_hash="h", reason="r")
        with pytest.raises(FencedError):
            store.record_event("x", "y")
        assert len(store.replicas("web")) == 1  # the fenced write left nothing behind
    finally:
        store.close()


def test_locked_sqlite_database_is_state_busy(tmp_path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(sqlite_url(path), busy_timeout=0.2)
    other = sqlite3.connect(str(path), isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StateBusyError, match="locked"):
            store.record_event("x", "blocked")
        other.execute("ROLLBACK")
        store.record_event("x", "after the lock")  # and it resumes
        assert [e.message for e in store.events()[0]] == ["after the lock"]
    finally:
        other.close()
        store.close()


def test_concurrent_writers_from_threads(state_url: str) -> None:
    store = StateStore(state_url)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(20):
                store.record_event("t", f"{n}-{i}", policy=f"p{n}")
                store.plan_replicas(f"p{n}", 1, spec_hash="h", reason="r")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert store.count("events") == 80 and store.count("replicas") == 80
    finally:
        store.close()


def test_events_after_follows_oldest_first(store: StateStore) -> None:
    assert store.events_after() == ([], None)
    for i in range(5):
        store.record_event("k", f"m{i}")
    latest, cur = store.events_after(limit=2)
    assert [e.message for e in latest] == ["m3", "m4"] and cur == latest[-1].id
    first = store.events()[0][-1].id
    page, _cur2 = store.events_after(cursor=first, limit=3)
    assert [e.message for e in page] == ["m1", "m2", "m3"]
    tail, cur3 = store.events_after(cursor=latest[-1].id, limit=3)
    assert tail == [] and cur3 == latest[-1].id


def test_status_rows_are_what_the_per_policy_reads_give(store: StateStore) -> None:
    """``status_rows`` (the status endpoint's one read for every policy) against the per-policy reads it
    replaced: live replicas (not gone), live instances (not released, orphans included), flags, pending
    launches, and the latest decision of each policy."""
    web = store.plan_replicas("web", 3, spec_hash="h", reason="r")
    [(api_replica, api_launch)] = store.plan_replicas("api", 1, spec_hash="h", reason="r")
    serving = store.complete(web[0][1].id, to=ReplicaState.BOOTING, instance_id="i-1")
    assert serving is not None
    store.transition(serving.id, ReplicaState.SERVING)
    store.complete(web[1][1].id, to=ReplicaState.BOOTING, instance_id="i-2")
    store.transition(web[2][0].id, ReplicaState.GONE)
    for iid, replica in (("i-1", serving.id), ("i-2", web[1][0].id), ("i-orphan", None), ("i-old", None)):
        store.record_instance(Instance(id=iid, state=InstanceState.RUNNING, instance_type="ecs.c6.large", zone="z1",
                                       private_ip="127.0.1.9", tags={}, created_at=50.0, price_per_hour=0.62,
                                       spot=iid == "i-2"), policy="web", replica_id=replica, intent_id=None)
    store.mark_released(["i-old"])
    store.save_policy("web", paused=True)
    store.save_policy("api", drain_requested=True)
    store.save_policy("idle")
    for desired in (1, 3, 2):
        store.record_decision("web", value=80.0, desired=desired, actual=1, direction="out", reason=f"to {desired}",
                              details={"n": desired})

    store.record_decision("unsaved", value=1.0, desired=1, actual=0, direction="out", reason="no row yet")

    rows = store.status_rows(["web", "api", "idle", "unsaved"])

    for name in ("web", "api", "idle"):
        live = store.live_replicas(name)
        assert sorted((r.id, r.state, r.instance_id, r.booting_at) for r in rows.replicas.get(name, [])) == \
            sorted((r.id, r.state, r.instance_id, r.booting_at) for r in live)
        assert sorted((i.id, i.replica_id, i.zone, i.instance_type, i.private_ip, i.spot, i.price_per_hour,
                       i.created_at) for i in rows.instances.get(name, [])) == \
            sorted((i.id, i.replica_id, i.zone, i.instance_type, i.private_ip, i.spot, i.price_per_hour,
                    i.created_at) for i in store.instances(name))
        ps = store.policy_state(name)
        assert ps is not None and rows.flags[name] == (ps.paused, ps.drain_requested, ps.removed)
        assert sorted(rows.costing(name)[0]) == sorted(store.costing(name)[0])
        assert sorted(rows.costing(name)[1]) == sorted(store.costing(name)[1])
        last = store.last_decision(name)
        got = rows.decisions.get(name)
        assert (got is None) == (last is None)
        if got is not None and last is not None:
            assert (got.desired, got.direction, got.reason, got.at, got.details) == \
                (last.desired, last.direction, last.reason, last.at, last.details)
    assert sorted(r.state for r in rows.replicas["web"]) == ["booting", "serving"]  # the gone one is not live
    assert {i.id for i in rows.instances["web"]} == {"i-1", "i-2", "i-orphan"}  # released i-old is not
    assert rows.decisions["web"].desired == 2 and "idle" not in rows.decisions
    assert rows.flags["web"][0] and rows.flags["api"][1]
    assert rows.costing("api")[1] == [(api_launch.id, api_replica.id)]  # a pending launch costs
    assert rows.decisions["unsaved"].reason == "no row yet"  # a policy without a policy_state row yet
