"""The control loop on in-memory fakes of the ports, driven through the daemon's own step path (the sample and
step rounds of controller/loop/rounds.py): a replica's whole life, journaled; failure paths and timeouts at each
step; crash-resume without duplicate launches; the budget guard at launch time; the engine's rules (missing
data, replacing a failed replica inside the cooldown) on that path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from controller.errors import CapacityError, NotFoundError, TransientError
from controller.loop.budget import hourly_spend
from controller.loop.edges import LoopOptions
from controller.loop.rounds import FleetRounds
from controller.loop.steps import launch_spec
from controller.loop.tick import Decide, PolicyRuntime
from controller.ports import TAG_INTENT
from controller.store.models import IntentKind, IntentState, NodeImageRow, ReplicaState
from controller.store.state import StateStore, sqlite_url
from policies.types import Decision, Direction, Fleet, Observation
from tests.controller.fakes import World, make_policy

S = ReplicaState


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@dataclass
class Env:
    clock: Clock
    store: StateStore
    world: World
    rt: PolicyRuntime
    want: dict[str, int]
    rounds: FleetRounds

    def tick(self, dt: float = 1.0, times: int = 1) -> None:
        """``dt`` seconds later, one sample round and one step round that evaluates, as the daemon runs them."""
        for _ in range(times):
            self.clock.advance(dt)
            self.rounds.sample({"web": self.rt}, timeout=None)
            self.rounds.step({"web": self.rt}, force_evaluate=True, timeout=None)

    def restart(self) -> None:
        """A new controller process on the same journal and the same outside world."""
        self.rounds.close()
        self.rt = PolicyRuntime(self.rt.policy, store=self.store, edges=self.world.edges, options=OPTIONS,
                                decide=self.rt.decide, clock=self.clock)
        self.rounds = FleetRounds(self.store, self.world.edges, OPTIONS, self.clock)

    def close(self) -> None:
        self.rounds.close()
        self.store.close()

    def states(self) -> list[str]:
        return [r.state for r in self.store.live_replicas("web")]


OPTIONS = LoopOptions(controller_id="dc1", evaluate_interval=0, step_interval=1, boot_timeout=60,
                      start_timeout=30, launch_timeout=30, orphan_grace=100)


def make_env(tmp_path, engine: bool = False, **policy_overrides: object) -> Env:
    """The loop on the fakes. The decision is the test's ``want["n"]`` (the lifecycle under test, whatever the
    rules would say), or with ``engine`` the real ``policies.engine.decide`` on the fake metric's value."""
    clock = Clock()
    store = StateStore(sqlite_url(tmp_path / "state.db"), clock=clock)
    world = World(clock)
    want = {"n": 0}

    def wanted(policy: object, obs: Observation, fleet: Fleet, now: float) -> Decision:
        n = want["n"]
        d = Direction.OUT if n > fleet.active else Direction.IN if n < fleet.active else Direction.HOLD
        return Decision(n, d, f"test wants {n}")

    decide: Decide | None = None if engine else wanted
    rt = PolicyRuntime(make_policy(**policy_overrides), store=store, edges=world.edges, options=OPTIONS,
                       decide=decide, clock=clock)
    return Env(clock, store, world, rt, want, FleetRounds(store, world.edges, OPTIONS, clock))


@pytest.fixture
def env(tmp_path) -> Iterator[Env]:
    e = make_env(tmp_path)
    yield e
    e.close()


def serve_one(env: Env) -> None:
    env.want["n"] = 1
    env.tick()
    assert env.states() == [S.BOOTING]
    env.tick(dt=5)  # booted: starting, container up, first probe
    env.tick(dt=1)  # second probe passes -> healthy -> admitted
    assert env.states() == [S.SERVING]


def test_full_life_is_journaled_and_leaves_nothing(env: Env) -> None:
    serve_one(env)
    [r] = env.store.live_replicas("web")
    launch = env.store.intents(replica_id=r.id, kind=IntentKind.LAUNCH)[0]
    assert launch.state == IntentState.DONE and launch.token == launch.id
    assert list(env.world.compute.by_token) == [launch.token]
    assert env.world.compute.instances[r.instance_id]["tags"][TAG_INTENT] == launch.id
    assert [s.name for s in env.world.lb.list("web")] == [f"dc1-web-{r.id}"]
    assert r.launching_at and r.booting_at and r.starting_at and r.healthy_at and r.serving_at
    env.want["n"] = 0
    env.tick(dt=61)  # scale-in cooldown (60s) passed: drain
    env.tick(dt=1.5)  # the drain settled, no sessions: remove, stop, release
    assert env.store.live_replicas("web") == []
    gone = env.store.replica(r.id)
    assert gone is not None and gone.state == S.GONE and gone.draining_at and gone.releasing_at
    assert env.world.compute.instances == {} and env.world.lb.servers == {} and env.world.runtime.containers == {}
    kinds = [i.kind for i in env.store.intents(replica_id=r.id)]
    assert kinds == ["launch", "start", "admit", "drain", "remove", "stop", "release"]
    assert env.store.intents(state=IntentState.PENDING) == []
    assert env.world.compute.launch_calls == 1


def test_a_launch_that_landed_before_a_crash_is_not_duplicated(env: Env, tmp_path) -> None:
    env.want["n"] = 1
    [(replica, intent)] = env.store.plan_replicas("web", 1, spec_hash="", reason="before the crash")
    # the old process called RunInstances and died before writing the outcome
    env.world.compute.launch(launch_spec(env.rt.policy, "dc1", replica.id, intent.id, ""), 1, intent.token)
    env.restart()
    env.tick()
    assert env.world.compute.created == 1 and env.world.compute.launch_calls == 2
    assert env.store.intent(intent.id).state == IntentState.DONE  # type: ignore[union-attr]
    assert len(env.store.live_replicas("web")) == 1


def test_transient_launch_error_retries_with_the_same_token(env: Env) -> None:
    env.world.compute.fail_next = [TransientError("Throttling.User")]
    env.want["n"] = 1
    env.tick()
    [r] = env.store.live_replicas("web")
    assert r.state == S.LAUNCHING
    [intent] = env.store.intents(replica_id=r.id, kind=IntentKind.LAUNCH)
    assert intent.state == IntentState.PENDING and intent.error == "Throttling.User"
    assert env.rt.errors and "Throttling" in env.rt.errors[0][1]
    env.tick()
    assert env.states() == [S.BOOTING] and env.world.compute.created == 1
    assert env.store.intent(intent.id).attempts == 2  # type: ignore[union-attr]


def test_sold_out_launch_fails_and_leaves_nothing(env: Env) -> None:
    env.world.compute.fail_next = [CapacityError("NoStock")]
    env.want["n"] = 1
    env.tick()
    [r] = env.store.replicas("web")
    assert r.state == S.GONE and "NoStock" in (r.failure or "")
    assert env.store.intents(replica_id=r.id, kind=IntentKind.LAUNCH)[0].state == IntentState.FAILED
    assert any(e.kind == "replica-failed" for e in env.store.events()[0])


def test_a_node_that_never_boots_is_released_and_replaced(env: Env) -> None:
    env.world.compute.never_boot = True
    env.want["n"] = 1
    env.tick()
    first = env.store.live_replicas("web")[0]
    env.tick(dt=61)  # boot timeout (60s): released; the next evaluation replaces it
    assert env.store.replica(first.id).state == S.GONE  # type: ignore[union-attr]
    assert first.instance_id not in env.world.compute.instances
    env.world.compute.never_boot = False
    env.tick(dt=1)
    live = env.store.live_replicas("web")
    assert len(live) == 1 and live[0].id != first.id


def test_container_that_never_turns_healthy_is_stopped_and_released(env: Env) -> None:
    env.world.health.healthy = False
    env.want["n"] = 1
    env.tick()
    env.tick(dt=5)
    [r] = env.store.live_replicas("web")
    assert r.state == S.STARTING and r.container_id
    env.tick(dt=31)
    assert env.store.replica(r.id).state == S.GONE  # type: ignore[union-attr]
    assert env.world.runtime.containers == {} and r.instance_id not in env.world.compute.instances


def engine_serves_one(env: Env) -> None:
    """With the real engine (threshold 75/40, step 1): 90% adds one replica, 50% holds while it comes up."""
    env.world.metrics.value = 90.0
    env.tick()
    env.world.metrics.value = 50.0
    env.tick(dt=5)
    env.tick(dt=1)
    assert env.states() == [S.SERVING]


def test_unhealthy_serving_replica_is_drained_and_replaced_inside_the_cooldown(tmp_path) -> None:
    env = make_env(tmp_path, engine=True)
    try:
        engine_serves_one(env)
        replica_fails_and_is_replaced(env)
    finally:
        env.close()


def replica_fails_and_is_replaced(env: Env) -> None:
    [r] = env.store.live_replicas("web")
    env.world.health.healthy = False
    env.tick(dt=1)
    assert env.store.replica(r.id).health_failures == 1  # type: ignore[union-attr]
    env.world.health.healthy = True  # one pass resets the count
    env.tick(dt=1)
    assert env.store.replica(r.id).health_failures == 0  # type: ignore[union-attr]
    env.world.health.healthy = False
    env.tick(dt=1)
    env.tick(dt=1)  # second failure: drained
    env.tick(dt=1.5)
    assert env.store.replica(r.id).state == S.GONE  # type: ignore[union-attr]
    # the load rises (its capacity is gone): 12.5 s after the scale-out, inside its 30 s cooldown, the engine
    # replaces the failed replica (the last target was 1), and goes no further than that target
    env.world.metrics.value = 90.0
    env.tick(dt=1)
    assert [x.state for x in env.store.live_replicas("web")] == [S.BOOTING]
    last = env.store.last_decision("web")
    assert last is not None and "replacing failed replicas" in last.reason, last
    env.tick(dt=1)
    assert len(env.store.live_replicas("web")) == 1
    last = env.store.last_decision("web")
    assert last is not None and "scale-out cooldown" in last.reason, last


def test_a_failed_replica_on_an_unreachable_node_is_released_after_its_stop_timeout(tmp_path) -> None:
    """A node that dies after admission (Docker Engine or network gone): its replica fails its health checks,
    the stop cannot reach the node, and the instance is released once drain.stop_timeout (5 s) has passed,
    not after the boot timeout as well (60 s): until then it holds the only place under replicas.max 1."""
    env = make_env(tmp_path, replicas={"min": 0, "max": 1, "max_step_up": 1, "max_step_down": 1})
    try:
        serve_one(env)
        [r] = env.store.live_replicas("web")
        env.world.health.healthy = False
        env.world.runtime.unreachable.add(str(r.instance_id))
        env.tick(dt=1, times=3)  # two failed probes: drained; removed (no sessions): stopping, unreachable
        assert env.store.replica(r.id).state == S.STOPPING  # type: ignore[union-attr]
        assert [x.id for x in env.store.live_replicas("web")] == [r.id]  # replicas.max 1: no replacement yet
        env.tick(dt=1, times=6)  # past the stop timeout: released anyway
        assert env.store.replica(r.id).state == S.GONE  # type: ignore[union-attr]
        assert r.instance_id not in env.world.compute.instances
        assert any(e.kind == "stop-skipped" for e in env.store.events()[0])
        env.tick(dt=1)  # the next evaluation replaces it
        assert [x.state for x in env.store.live_replicas("web")] == [S.BOOTING]
    finally:
        env.store.close()


def test_drain_waits_for_sessions_then_is_forced_at_its_timeout(env: Env) -> None:
    serve_one(env)
    [r] = env.store.live_replicas("web")
    env.world.lb.sessions_of[r.server_name] = 3  # type: ignore[index]
    env.want["n"] = 0
    env.tick(dt=61)
    assert env.states() == [S.DRAINING]
    assert env.world.lb.servers[("web", r.server_name)].state == "drain"
    env.tick(dt=5)
    assert env.states() == [S.DRAINING]
    env.tick(dt=16)  # 21s > drain.timeout 20s
    assert env.states() == []
    assert any(e.kind == "drain-forced" for e in env.store.events()[0])


def test_drain_finishes_as_soon_as_sessions_end(env: Env) -> None:
    serve_one(env)
    [r] = env.store.live_replicas("web")
    env.world.lb.sessions_of[r.server_name] = 2  # type: ignore[index]
    env.want["n"] = 0
    env.tick(dt=61)
    env.world.lb.sessions_of[r.server_name] = 0  # type: ignore[index]
    env.tick(dt=1)
    assert env.states() == [] and not any(e.kind == "drain-forced" for e in env.store.events()[0])


def test_budget_guard_at_launch_stops_a_runaway_plan(tmp_path) -> None:
    env = make_env(tmp_path, budget={"max_per_hour": 1.3, "prices": {"ecs.c6.large": 0.62, "ecs.c5.large": 0.55}})
    try:
        # a "bug elsewhere": four replicas planned straight into the journal, bypassing the planner (which
        # then holds: the decision wants the four there are)
        env.store.plan_replicas("web", 4, spec_hash="", reason="runaway")
        env.want["n"] = 4
        env.tick(dt=0)
        assert env.world.compute.created == 2
        failed = [r for r in env.store.replicas("web") if r.state == S.GONE]
        assert len(failed) == 2 and all("budget guard" in (r.failure or "") for r in failed)
    finally:
        env.close()


def test_missing_metric_never_scales_in(tmp_path) -> None:
    env = make_env(tmp_path, engine=True)
    try:
        engine_serves_one(env)
        env.world.metrics.value = None  # the source fails: hold, past the scale-in cooldown
        env.tick(dt=61)
        assert env.states() == [S.SERVING]
        last = env.store.last_decision("web")
        assert last is not None and "missing" in last.reason and last.desired == 1
        env.world.metrics.value = 10.0  # back, and low: the scale-in the reading now supports
        env.tick(dt=1)
        assert env.states() == [S.DRAINING]
    finally:
        env.close()


def test_paused_policy_does_not_scale(env: Env) -> None:
    env.store.save_policy("web", paused=True)
    env.want["n"] = 2
    env.tick()
    assert env.states() == []
    env.store.save_policy("web", paused=False)
    env.tick()
    assert len(env.states()) == 2


def test_operator_drain_and_removed_policy_drain_everything(env: Env) -> None:
    serve_one(env)
    env.store.save_policy("web", drain_requested=True)
    env.tick(dt=1)  # no cooldown, no min_lifetime for an operator drain
    env.tick(dt=1.5)
    assert env.states() == []
    env.store.save_policy("web", drain_requested=False)
    env.tick(dt=31)
    assert len(env.states()) == 1
    env.rt.removed = True
    env.tick(dt=10)
    env.tick(dt=10)
    assert env.states() == [] and env.world.compute.instances == {}


def test_after_a_restart_steps_in_progress_get_their_full_timeout(env: Env) -> None:
    env.world.compute.never_boot = True
    env.want["n"] = 1
    env.tick()
    assert env.states() == [S.BOOTING]
    env.clock.advance(300)  # the controller was down for longer than the boot timeout (60s)
    env.world.compute.never_boot = False
    env.restart()
    env.tick(dt=0)
    assert env.states() == [S.STARTING]  # looked at, found booted: not failed on sight
    assert env.world.compute.created == 1


def test_a_launch_that_keeps_failing_transiently_times_out(env: Env) -> None:
    env.world.compute.fail_next = [TransientError("ServiceUnavailable")] * 10
    env.want["n"] = 1
    env.tick()
    env.tick(dt=10)
    [r] = env.store.live_replicas("web")
    assert r.state == S.LAUNCHING
    env.tick(dt=25)  # 35s > launch timeout 30s
    gone = env.store.replica(r.id)
    assert gone is not None and gone.state == S.GONE and "ServiceUnavailable" in (gone.failure or "")
    assert env.world.compute.created == 0


def test_a_container_started_without_its_outcome_is_still_stopped(env: Env) -> None:
    env.world.health.healthy = False  # it never turns healthy: start timeout, then the stop path
    env.want["n"] = 1
    env.tick()
    env.tick(dt=5)
    [r] = env.store.live_replicas("web")
    assert r.container_id
    env.store.transition(r.id, None, container_id=None)  # as if the start's outcome was lost in a crash
    env.tick(dt=31)
    assert env.store.replica(r.id).state == S.GONE  # type: ignore[union-attr]
    assert env.world.runtime.containers == {}  # found by its replica label and removed


def test_scale_in_drains_the_least_busy_replica_read_from_the_load_balancer(tmp_path) -> None:
    env = make_env(tmp_path, replicas={"min": 0, "max": 4, "max_step_up": 2, "max_step_down": 2})
    try:
        env.want["n"] = 2
        env.tick()
        env.tick(dt=5)
        env.tick(dt=1)
        assert env.states() == [S.SERVING, S.SERVING]
        # both launched at once: without sessions the tie goes to the lower id, so make that one busy
        busy, idle = sorted(env.store.live_replicas("web"), key=lambda r: r.id)
        env.world.lb.sessions_of[busy.server_name] = 4  # type: ignore[index]
        lists = env.world.lb.lists
        env.tick(dt=1)  # no scale-in planned: the backend is not listed for sessions
        assert env.world.lb.lists == lists
        env.want["n"] = 1
        env.tick(dt=61)
        # the least busy goes first (docs/replicas.md), read with one listing of the backend
        assert env.store.replica(idle.id).state == S.DRAINING  # type: ignore[union-attr]
        assert env.store.replica(busy.id).state == S.SERVING  # type: ignore[union-attr]
        assert env.world.lb.lists == lists + 1
    finally:
        env.close()


def test_captured_secret_env_values_are_registered_for_redaction(env: Env, monkeypatch) -> None:
    from controller import service
    from controller.ports import WorkloadSpec

    secret = "s3cr3t-value-of-the-workload"
    spec = WorkloadSpec(image="127.0.0.1:5002/team/web@sha256:" + "b" * 64, env={"TOKEN": secret, "PLAIN": "visible"},
                        secret_env=frozenset({"TOKEN"}), spec_hash="hash2")
    monkeypatch.setattr(env.world.edges.workloads, "capture", lambda policy, image: spec)
    service.forget_secrets()
    try:
        assert service.redact(f"env TOKEN={secret}") == f"env TOKEN={secret}"
        assert env.rt.workload() is spec
        assert service.redact(f"env TOKEN={secret} PLAIN=visible") == "env TOKEN=*** PLAIN=visible"
    finally:
        service.forget_secrets()


def test_drift_rolls_every_replica_to_the_new_spec_one_at_a_time(tmp_path) -> None:
    from controller.ports import WorkloadSpec

    env = make_env(tmp_path, replicas={"min": 0, "max": 3, "max_step_up": 2, "max_step_down": 2})
    try:
        env.want["n"] = 2
        for dt in (1, 5, 1):
            env.tick(dt=dt)
        assert env.states() == [S.SERVING, S.SERVING]
        old = {r.id for r in env.store.live_replicas("web")}
        assert {r.spec_hash for r in env.store.live_replicas("web")} == {"hash1"}
        new = WorkloadSpec(image="127.0.0.1:5002/team/web@sha256:" + "c" * 64, env={"V": "2"}, spec_hash="hash2")
        env.world.edges.workloads.capture = lambda policy, image: new  # type: ignore[method-assign]
        env.rt.refresh_workload()  # what the replicate job does: the on-prem workload changed
        serving_low = 2
        for _ in range(40):
            env.tick(dt=1)
            live = env.store.live_replicas("web")
            serving = [r for r in live if r.state == S.SERVING]
            serving_low = min(serving_low, len(serving))
            assert len([r for r in live if r.state in (S.PLANNED, S.REPLICATING, S.LAUNCHING, S.BOOTING, S.STARTING,
                                                       S.HEALTHY, S.SERVING)]) <= 3  # a surge of one, within max
            if len(serving) == 2 and all(r.spec_hash == "hash2" for r in live):
                break
        live = env.store.live_replicas("web")
        assert [r.state for r in live] == [S.SERVING, S.SERVING] and {r.spec_hash for r in live} == {"hash2"}
        assert not old & {r.id for r in live} and serving_low == 2  # never below the wanted count
        rolls = [e for e in env.store.events(limit=500)[0] if e.kind == "roll"]
        assert len(rolls) == 4 and all("to spec hash2" in e.message for e in rolls)  # 2 surges, 2 drains
        assert env.world.compute.launch_calls == 4
    finally:
        env.close()


# ---------------------------------------------------------------------- several replicas per instance


def per_node_env(tmp_path, **overrides: object) -> Env:
    policy = {"workload__replicas_per_node": 2,
              "replicas": {"min": 0, "max": 6, "max_step_up": 6, "max_step_down": 6}, **overrides}
    return make_env(tmp_path, **policy)


def by_instance(env: Env) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in env.store.live_replicas("web"):
        out.setdefault(r.instance_id or "-", []).append(r.state)
    return out


def test_replicas_per_node_packs_replicas_onto_shared_instances(tmp_path) -> None:
    env = per_node_env(tmp_path)
    try:
        env.want["n"] = 3
        env.tick()  # two groups: each first replica launches, the others wait for its instance
        assert env.world.compute.launch_calls == 2 and env.world.compute.created == 2
        env.tick(dt=5)
        env.tick(dt=1, times=3)
        assert env.states() == [S.SERVING] * 3
        assert sorted(len(v) for v in by_instance(env).values()) == [1, 2]
        # every replica has a container and a server of its own, on distinct host ports of its node
        endpoints = {(c.address, c.port) for c in env.world.runtime.containers.values()}
        assert len(env.world.runtime.containers) == 3 and len(endpoints) == 3
        assert len(env.world.lb.list("web")) == 3
        placed = [e for e in env.store.events(limit=200)[0] if e.kind == "place"]
        assert len(placed) == 1
        # a fourth replica takes the free place: no launch, no new instance
        env.want["n"] = 4
        env.tick(dt=31)  # past the scale-out cooldown
        env.tick(dt=1, times=3)
        assert env.world.compute.created == 2 and env.world.compute.launch_calls == 2
        assert sorted(len(v) for v in by_instance(env).values()) == [2, 2]
        assert env.states() == [S.SERVING] * 4
        # the budget counts instances: two of them at the policy's price, not four replicas
        assert hourly_spend(env.rt.policy, env.rt.holdings()) == pytest.approx(2 * 0.62)
    finally:
        env.close()


def test_replicas_per_node_scale_in_empties_whole_instances_and_releases_each_once(tmp_path) -> None:
    env = per_node_env(tmp_path)
    try:
        env.want["n"] = 4
        env.tick()
        env.tick(dt=5)
        env.tick(dt=1, times=3)
        assert env.states() == [S.SERVING] * 4 and len(env.world.compute.instances) == 2
        env.want["n"] = 2
        env.tick(dt=61)  # the two replicas of one instance go together (docs/replicas.md)
        draining = [r for r in env.store.live_replicas("web") if r.state == S.DRAINING]
        assert len(draining) == 2 and len({r.instance_id for r in draining}) == 1
        env.tick(dt=1.5, times=3)
        assert env.states() == [S.SERVING, S.SERVING]
        assert len(env.world.compute.instances) == 1  # that instance is released, the other one serves on
        [kept] = env.world.compute.instances
        assert {r.instance_id for r in env.store.live_replicas("web")} == {kept}
        env.want["n"] = 0
        env.tick(dt=61)
        env.tick(dt=1.5, times=3)
        assert env.store.live_replicas("web") == [] and env.world.compute.instances == {}
        assert env.world.runtime.containers == {} and env.world.lb.servers == {}
        outcomes = [json.loads(i.outcome or "{}") for i in env.store.intents(kind=IntentKind.RELEASE)]
        released = [iid for o in outcomes for iid in o.get("released", [])]
        # each instance released exactly once, by the last replica on it; the others left it
        assert sorted(released) == sorted({r.instance_id for r in env.store.replicas("web")})
        assert sum(1 for o in outcomes if o.get("kept_for")) == 2
        assert env.store.intents(state=IntentState.PENDING) == []
    finally:
        env.close()


def test_replicas_per_node_budget_counts_instances_not_replicas(tmp_path) -> None:
    # room for one instance (0.62/h at the worst price): two replicas on it, not one
    env = per_node_env(tmp_path, budget={"max_per_hour": 0.7, "prices": {"ecs.c6.large": 0.62, "ecs.c5.large": 0.55}})
    try:
        env.want["n"] = 4
        env.tick()
        env.tick(dt=5)
        env.tick(dt=1, times=3)
        assert env.states() == [S.SERVING, S.SERVING]
        assert env.world.compute.created == 1
        env.tick(dt=31)  # past the scale-out cooldown: the budget still holds it at one instance
        decision = env.store.last_decision("web")
        assert decision is not None and "budget" in decision.reason, decision
        assert env.world.compute.created == 1 and len(env.store.live_replicas("web")) == 2
    finally:
        env.close()


# ---------------------------------------------------------------------- Docker health


def test_a_workload_healthcheck_gates_admission_and_evicts_on_docker_unhealthy(env: Env) -> None:
    """With a HEALTHCHECK in the workload, a check passes only when HTTP answers AND Docker says healthy:
    no admission while Docker says 'starting', and a serving replica Docker calls 'unhealthy' is drained."""
    env.world.workloads.healthcheck = {"Test": ["CMD", "true"], "Interval": 1_000_000_000}
    env.want["n"] = 1
    env.tick()
    env.tick(dt=5)
    env.tick(dt=1, times=3)  # HTTP passes every time; Docker still says "starting"
    assert env.states() == [S.STARTING] and env.world.lb.servers == {}
    env.world.runtime.set_health("healthy")
    env.tick(dt=1, times=2)
    assert env.states() == [S.SERVING]
    env.world.runtime.set_health("unhealthy")
    env.tick(dt=1, times=2)  # two failures (health.failures 2): out of traffic
    [r] = env.store.live_replicas("web")
    assert r.state in (S.DRAINING, S.STOPPING, S.RELEASING) and "health check failures" in (r.failure or "")


@pytest.mark.parametrize("weight", [None, 5])
def test_a_replica_joins_with_the_policys_weight_or_the_load_balancers_default(tmp_path, weight) -> None:
    """traffic.haproxy.weight reaches the load balancer; without it the server carries none, and the
    HAProxy adapter gives it the on-prem servers' weight (tests/adapters/test_haproxy.py)."""
    e = make_env(tmp_path, traffic={"haproxy": {"socket": "/run/haproxy.sock", "backend": "web", "weight": weight}})
    try:
        serve_one(e)
        [server] = e.world.lb.servers.values()
        assert server.weight == weight
    finally:
        e.store.close()


def test_a_node_image_baked_for_the_spec_is_launched_and_forgotten_once_it_is_gone(env: Env) -> None:
    """`burstctl bake` recorded an image for the workload's spec hash (and the policy's base image): launches
    boot it instead of cloud.image_id. An image deleted outside the controller (InvalidImageId.NotFound) fails
    that launch once and is forgotten: the replacement boots cloud.image_id."""
    serve_one(env)
    [first] = env.store.live_replicas("web")
    base = env.rt.policy.cloud.image_id
    assert env.world.compute.instances[first.instance_id]["image"] == base  # nothing baked yet
    env.store.record_node_image(NodeImageRow(image_id="m-baked0001", policy="web", spec_hash=first.spec_hash,
                                             workload_image="reg/web@sha256:1", base_image_id=base,
                                             created_at=env.clock()))
    env.store.record_node_image(NodeImageRow(image_id="m-otherbase", policy="web", spec_hash=first.spec_hash,
                                             workload_image="reg/web@sha256:1", base_image_id="other_base.vhd",
                                             created_at=env.clock() + 1))  # newer, from another base: not used
    env.want["n"] = 2
    env.tick()
    [second] = [r for r in env.store.live_replicas("web") if r.id != first.id]
    assert env.world.compute.instances[second.instance_id]["image"] == "m-baked0001"
    assert any("baked image m-baked0001" in e.message for e in env.store.events()[0] if e.kind == "launch")
    # the image is deleted in the console: the next launch fails on it, and the one after boots the base image
    env.world.compute.fail_next = [NotFoundError("The specified ImageId does not exist.",
                                                 code="InvalidImageId.NotFound")]
    env.want["n"] = 3
    env.tick()
    failed = [r for r in env.store.replicas("web") if r.state == S.GONE]
    assert len(failed) == 1 and "InvalidImageId.NotFound" in (failed[0].failure or "")
    assert env.store.baked_image("web", first.spec_hash, base) is None
    env.tick(dt=61, times=2)  # the replacement, after the failed launch
    third = [r for r in env.store.live_replicas("web") if r.id not in (first.id, second.id)]
    assert third and third[0].instance_id and env.world.compute.instances[third[0].instance_id]["image"] == base


def test_the_audit_log_records_an_image_copy_that_changed_something(env: Env) -> None:
    """The replicate job checks the cloud copy every intervals.replicate (5m by default); a check that found the
    same image there is a debug line, not 288 events a day. A new digest, or blobs copied again (the cloud
    registry lost them), is an event."""
    from controller.ports import CopyResult

    answers = iter([CopyResult(digest="sha256:" + "a" * 64, copied_blobs=4),
                    CopyResult(digest="sha256:" + "a" * 64, copied_blobs=0, skipped_blobs=4),
                    CopyResult(digest="sha256:" + "a" * 64, copied_blobs=0, skipped_blobs=4),
                    CopyResult(digest="sha256:" + "a" * 64, copied_blobs=1, skipped_blobs=3),
                    CopyResult(digest="sha256:" + "b" * 64, copied_blobs=0, skipped_blobs=4)])
    env.world.edges.registry.replicate = lambda src, dst, platforms=None, progress=None: next(answers)  # type: ignore[method-assign]
    for _ in range(5):
        env.rt.refresh_workload()
    copies = [e.message for e in sorted(env.store.events(limit=100)[0], key=lambda e: e.id) if e.kind == "replicate"]
    assert len(copies) == 3, copies
    assert "(4 blobs copied, 0 present" in copies[0] and "(1 blobs copied, 3 present" in copies[1]
    assert "@sha256:bbbbbbbbbbbb" in copies[2]
