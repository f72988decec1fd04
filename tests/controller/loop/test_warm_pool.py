"""The warm pool on the loop's own step path (controller/loop/warm_pool.py), on the in-memory fakes: a scale-in
stops drained nodes into the pool up to its size, a scale-out starts them before launching, nodes that should
go are released; and at every new step a process killed between the intent and the call, or between the call
and its outcome, leaves no stopped node forgotten or duplicated once the next process resumes."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterator

import pytest

from controller.loop.budget import check_launch, hourly_spend
from controller.loop.reconcile import Reconciler
from controller.loop.warm_pool import DEFAULT_DISK_PRICE, short_image
from controller.ports import TAG_CONTROLLER, TAG_INTENT, TAG_POLICY, InstanceState
from controller.store.models import IntentKind, IntentState, ReplicaState
from tests.controller.fakes import Killed
from tests.controller.loop.test_loop import OPTIONS, Env, make_env

S = ReplicaState
POOL = {"size": 1, "max_age": "1h"}


@pytest.fixture
def env(tmp_path) -> Iterator[Env]:
    e = make_env(tmp_path, warm_pool=POOL)
    yield e
    e.close()


def serve(env: Env, n: int) -> None:
    env.want["n"] = n
    env.tick()
    env.tick(dt=5)
    env.tick(dt=1)
    assert env.states() == [S.SERVING] * n


def scale_to_zero(env: Env) -> None:
    env.want["n"] = 0
    env.tick(dt=61)  # scale-in cooldown passed: drain
    env.tick(dt=1.5)  # settled: remove, stop the container, park or release


def stopped(env: Env) -> list[str]:
    return [i for i, d in env.world.compute.instances.items() if d.get("stopped") is not None]


def assert_pool_consistent(env: Env) -> None:
    """Every stopped instance is in the journal's pool exactly once, every pool row is a stopped instance,
    and no node is both in the pool and a live replica's."""
    pool = [row.id for row in env.store.warm_instances("web")]
    assert sorted(pool) == sorted(stopped(env)) and len(set(pool)) == len(pool)
    used = {r.instance_id for r in env.store.live_replicas("web") if r.instance_id}
    assert not used & set(pool)
    assert env.store.intents(state=IntentState.PENDING) == []


def test_scale_in_parks_up_to_size_and_scale_out_starts_them_first(env: Env) -> None:
    serve(env, 2)
    nodes = {r.instance_id for r in env.store.live_replicas("web")}
    scale_to_zero(env)
    assert env.store.live_replicas("web") == []
    [parked] = stopped(env)
    assert parked in nodes and len(env.world.compute.instances) == 1  # the other one was released
    assert env.world.compute.instances[parked]["mode"] == "StopCharging"
    [row] = env.store.warm_instances("web")
    assert row.id == parked and row.warm_spec_hash == "hash1" and row.warm_image and row.replica_id is None
    assert_pool_consistent(env)
    # the budget: the stopped node costs its disk, and holds no place under replicas.max
    held = env.rt.holdings()
    assert hourly_spend(env.rt.policy, held) == pytest.approx(DEFAULT_DISK_PRICE)
    assert check_launch(env.rt.policy, held, 10).allowed == env.rt.policy.replicas.max
    launches = env.world.compute.launch_calls
    serve(env, 2)
    assert env.world.compute.start_calls == 1 and env.world.compute.launch_calls == launches + 1
    live = env.store.live_replicas("web")
    assert parked in {r.instance_id for r in live} and stopped(env) == [] and env.store.warm_instances("web") == []
    woken = next(r for r in live if r.instance_id == parked)
    kinds = [i.kind for i in env.store.intents(replica_id=woken.id)]
    assert kinds == ["launch", "wake", "start", "admit"]
    launch = env.store.intents(replica_id=woken.id, kind=IntentKind.LAUNCH)[0]
    assert '"woke"' in (launch.outcome or "")
    events = env.store.events(limit=200)[0]
    assert {"park", "wake"} <= {e.kind for e in events}
    [park] = [e.message for e in events if e.kind == "park"]
    assert f"image {short_image(row.warm_image)} on its disk" in park, park


@pytest.mark.parametrize("reference,shown", [
    ("10.214.7.1:5000/acme/shop@sha256:4efc466e52633f9801a42a69cd529e8820c7703c569f0126007f5eee5298ccd5",
     "acme/shop@sha256:4efc466e5263"),
    ("registry.cn-hangzhou.aliyuncs.com/team/api@sha256:" + "ab" * 32, "team/api@sha256:abababababab"),
    ("team/api@sha256:" + "cd" * 32, "team/api@sha256:cdcdcdcdcdcd"),
    ("acme/shop:2.3", "acme/shop:2.3"),
])
def test_an_event_names_an_image_by_repository_and_short_digest(reference: str, shown: str) -> None:
    assert short_image(reference) == shown


def test_nodes_that_should_go_are_released(env: Env) -> None:
    serve(env, 1)
    scale_to_zero(env)
    assert len(stopped(env)) == 1
    # a new workload spec: the node's disk carries the old one
    env.rt._workload = dataclasses.replace(env.rt.workload(), spec_hash="hash2")
    env.tick()
    assert env.world.compute.instances == {} and env.store.warm_instances("web") == []
    assert any(e.kind == "warm-expired" and "old workload spec" in e.message for e in env.store.events()[0])
    env.rt._workload = None
    serve(env, 1)
    scale_to_zero(env)
    env.tick(dt=3600)  # past max_age (counted from the launch)
    assert env.world.compute.instances == {} and env.store.warm_instances("web") == []
    serve(env, 1)
    scale_to_zero(env)
    env.rt.removed = True  # the policy file is gone
    env.tick()
    assert env.world.compute.instances == {} and env.store.warm_instances("web") == []


def test_the_pool_shrinks_to_a_smaller_size(tmp_path) -> None:
    env = make_env(tmp_path, warm_pool={"size": 2})
    try:
        serve(env, 2)
        scale_to_zero(env)
        assert len(stopped(env)) == 2
        env.rt.replace_policy(env.rt.policy.model_copy(update={"warm_pool": env.rt.policy.warm_pool.model_copy(
            update={"size": 1})}))
        env.tick()
        assert len(stopped(env)) == 1 and len(env.world.compute.instances) == 1
        assert_pool_consistent(env)
    finally:
        env.close()


def test_a_failed_replica_or_a_pool_of_zero_releases(tmp_path) -> None:
    env = make_env(tmp_path)  # no warm_pool: the default size 0
    try:
        serve(env, 1)
        scale_to_zero(env)
        assert env.world.compute.instances == {} and env.world.compute.stop_calls == 0
    finally:
        env.close()


@pytest.mark.parametrize("when", ["before the call", "after the call"])
def test_a_kill_during_the_park_leaves_one_stopped_node_in_the_pool(env: Env, when: str) -> None:
    serve(env, 1)
    [r] = env.store.live_replicas("web")
    if when == "before the call":
        env.world.compute.fail_next = [Killed("killed before StopInstances")]
    else:
        env.world.compute.crash_after_call = True
    scale_to_zero(env)
    [intent] = env.store.intents(replica_id=r.id, kind=IntentKind.PARK)
    assert intent.state == IntentState.PENDING and env.store.warm_instances("web") == []
    env.world.compute.crash_after_call = False
    env.restart()
    env.tick()
    assert env.store.intent(intent.id).state == IntentState.DONE  # type: ignore[union-attr]
    assert stopped(env) == [r.instance_id] and env.world.compute.launch_calls == 1
    assert env.store.replica(r.id).state == S.GONE  # type: ignore[union-attr]
    assert_pool_consistent(env)


@pytest.mark.parametrize("when", ["before the call", "after the call"])
def test_a_kill_during_the_wake_neither_loses_nor_duplicates_the_node(env: Env, when: str) -> None:
    serve(env, 1)
    scale_to_zero(env)
    [node] = stopped(env)
    launches = env.world.compute.launch_calls
    if when == "before the call":
        env.world.compute.fail_next = [Killed("killed before StartInstances")]
    else:
        env.world.compute.crash_after_call = True
    env.want["n"] = 1
    env.tick()
    [r] = env.store.live_replicas("web")
    assert r.state == S.LAUNCHING
    [wake] = env.store.intents(replica_id=r.id, kind=IntentKind.WAKE)
    assert wake.state == IntentState.PENDING and wake.target == node
    env.world.compute.crash_after_call = False
    env.restart()
    # a reconcile in between: the node (running again or still stopped) is the journal's, not an orphan
    report = Reconciler(env.store, env.world.edges, OPTIONS, env.clock).run({"web": env.rt})
    assert report.orphans_waiting == [] and report.orphans_released == []
    env.tick()
    env.tick(dt=5)
    env.tick(dt=1)
    [r] = env.store.live_replicas("web")
    assert r.state == S.SERVING and r.instance_id == node
    assert env.world.compute.launch_calls == launches and list(env.world.compute.instances) == [node]
    assert env.store.warm_instances("web") == []
    assert_pool_consistent(env)


def test_a_kill_during_an_expiry_releases_the_node_once(env: Env) -> None:
    serve(env, 1)
    scale_to_zero(env)
    [node] = stopped(env)
    env.world.compute.crash_after_call = True
    env.tick(dt=3600)  # expired: DeleteInstances done, the outcome never written
    [expire] = env.store.intents(kind=IntentKind.EXPIRE)
    assert expire.state == IntentState.PENDING and env.world.compute.instances == {}
    assert [row.id for row in env.store.warm_instances("web")] == [node]
    env.world.compute.crash_after_call = False
    env.restart()
    env.tick()
    assert env.store.intent(expire.id).state == IntentState.DONE  # type: ignore[union-attr]
    assert env.store.warm_instances("web") == [] and env.store.instance(node).released_at  # type: ignore[union-attr]
    assert_pool_consistent(env)


def test_reconcile_keeps_the_pool_and_releases_a_stopped_stranger(env: Env) -> None:
    serve(env, 1)
    scale_to_zero(env)
    [node] = stopped(env)
    # a stopped instance with our tags that the journal never heard of (its intent unknown)
    compute = env.world.compute
    compute.instances["i-stranger"] = {"type": "ecs.c6.large", "zone": "cn-hangzhou-h", "ip": "127.0.1.99",
                                       "created": env.clock(), "image": "img", "stopped": env.clock(),
                                       "tags": {TAG_CONTROLLER: "dc1", TAG_POLICY: "web", TAG_INTENT: "l-unknown"}}
    rec = Reconciler(env.store, env.world.edges, OPTIONS, env.clock)
    report = rec.run({"web": env.rt})
    assert report.orphans_waiting == ["i-stranger"] and node not in report.orphans_waiting
    env.clock.advance(OPTIONS.orphan_grace + 1)
    report = rec.run({"web": env.rt})
    assert report.orphans_released == ["i-stranger"] and stopped(env) == [node]
    assert compute._inst(node).state == InstanceState.STOPPED
    assert [row.id for row in env.store.warm_instances("web")] == [node]


def test_status_shows_the_pool_with_its_ages(env: Env) -> None:
    from controller.status.report import StatusReport

    serve(env, 1)
    scale_to_zero(env)
    env.clock.advance(120)
    st = StatusReport._policy(env.rt, env.store.status_rows(["web"]), env.clock())
    assert st.warm_pool.size == 1 and st.warm_pool.warm == 1
    [node] = st.warm_pool.nodes
    assert node.id == stopped(env)[0] and node.stopped_seconds >= 120 and node.age_seconds > node.stopped_seconds
    assert [i.state for i in st.instances] == ["warm"]
    assert st.spend_per_hour == pytest.approx(DEFAULT_DISK_PRICE)


def test_an_operator_drain_parks_and_size_zero_then_releases(env: Env) -> None:
    """`burstctl drain` is a clean scale-in: the node is parked (docs/daemon.md "The warm pool"); setting the
    pool's size to 0 is how ops release it too."""
    serve(env, 1)
    env.store.save_policy("web", drain_requested=True)
    env.tick(dt=1)  # no cooldown, no min_lifetime for an operator drain
    env.tick(dt=1.5)
    assert env.store.live_replicas("web") == [] and len(stopped(env)) == 1
    assert_pool_consistent(env)
    env.rt.replace_policy(env.rt.policy.model_copy(update={"warm_pool": env.rt.policy.warm_pool.model_copy(
        update={"size": 0})}))
    env.tick()
    assert env.world.compute.instances == {} and env.store.warm_instances("web") == []


@pytest.mark.parametrize("seed", range(8))
def test_parallel_parks_never_overfill_the_pool(tmp_path, seed: int) -> None:
    """Eight replicas scale in at once, their steps in parallel, with random delays in StopInstances and in the
    read of the pool: the pool ends at its size exactly. Before the park's outcome was committed under the pool
    lock, a park completing between another check's two reads was missed, and 12 of 15 seeds overfilled it."""
    rng = random.Random(seed)
    env = make_env(tmp_path, warm_pool={"size": 2, "max_age": "1h"},
                   replicas={"min": 0, "max": 8, "max_step_up": 8, "max_step_down": 8})
    try:
        real_stop, real_pool = env.world.compute.stop, env.store.warm_instances

        def slow_stop(ids, *, charging=False):  # type: ignore[no-untyped-def]
            time.sleep(rng.uniform(0, 0.01))
            return real_stop(ids, charging=charging)

        def slow_pool(policy):  # type: ignore[no-untyped-def]
            found = real_pool(policy)
            time.sleep(rng.uniform(0, 0.01))
            return found

        env.world.compute.stop = slow_stop  # type: ignore[method-assign]
        env.store.warm_instances = slow_pool  # type: ignore[method-assign]
        serve(env, 8)
        scale_to_zero(env)
        assert len(stopped(env)) == 2 and len(env.world.compute.instances) == 2, env.world.compute.instances
        assert_pool_consistent(env)
    finally:
        env.close()
