"""The daemon's rounds over the whole fleet (controller/loop/rounds.py) on the fakes, with a controlled clock:
booting instances of several policies described in ONE call, a steady serving replica probed in the batch
with no thread and no journal write, a failed check still recorded by its step, a round's samples and
decisions written in one batch, a hung metric source that does not hold the round, and a policy whose
steps still run sitting the next round out."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

from controller.loop.edges import LoopOptions
from controller.loop.rounds import FleetRounds
from controller.loop.tick import PolicyRuntime
from controller.ports import Instance
from controller.store.models import ReplicaState
from controller.store.state import StateStore, sqlite_url
from policies.types import Decision, Direction, Fleet, Observation
from tests.controller.fakes import FakeMetrics, World, make_policy

S = ReplicaState
OPTIONS = LoopOptions(controller_id="dc1", evaluate_interval=0, step_interval=1, boot_timeout=60,
                      start_timeout=30, launch_timeout=30, orphan_grace=100)


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


class CountingProbe:
    """The probe with ``probe_many``, as the daemon's wiring has it: counts batches and single probes."""

    def __init__(self) -> None:
        self.healthy = True
        self.batches: list[int] = []
        self.singles = 0

    def probe(self, address: str, port: int, path: str, timeout: float) -> bool:
        self.singles += 1
        return self.healthy

    def probe_many(self, targets: Sequence[tuple[str, int, str, float]]) -> list[bool]:
        self.batches.append(len(targets))
        return [self.healthy for _ in targets]


@dataclass
class Env:
    clock: Clock
    store: StateStore
    world: World
    probe: CountingProbe
    rounds: FleetRounds
    runtimes: dict[str, PolicyRuntime]
    want: dict[str, int]
    gets: list[list[str]]

    def step(self, dt: float = 1.0) -> None:
        self.clock.t += dt
        self.rounds.step(self.runtimes, force_evaluate=True, timeout=None)

    def states(self, name: str) -> list[str]:
        return [r.state for r in self.store.live_replicas(name)]


@pytest.fixture
def env(tmp_path) -> Iterator[Env]:  # type: ignore[no-untyped-def]
    clock = Clock()
    store = StateStore(sqlite_url(tmp_path / "state.db"), clock=clock)
    world = World(clock)
    probe = CountingProbe()
    world.edges.health = probe
    gets: list[list[str]] = []

    class CountingCompute:  # the loop's view of the compute pool: its DescribeInstances-by-id calls counted
        def __getattr__(self, name: str) -> object:
            return getattr(world.compute, name)

        def get(self, ids: Sequence[str]) -> list[Instance]:
            gets.append(list(ids))
            return world.compute.get(ids)

    world.edges.compute = CountingCompute()  # type: ignore[assignment]
    want: dict[str, int] = {}

    def decide(policy: object, obs: Observation, fleet: Fleet, now: float) -> Decision:
        n = want.get(policy.name, 0)  # type: ignore[attr-defined]
        d = Direction.OUT if n > fleet.active else Direction.IN if n < fleet.active else Direction.HOLD
        return Decision(n, d, f"test wants {n}")

    runtimes = {name: PolicyRuntime(make_policy(name, workload__health={
        "path": "/", "interval": "1s", "timeout": "0.5s", "passes": 1, "failures": 2}), store=store,
        edges=world.edges, options=OPTIONS, decide=decide, clock=clock) for name in ("a", "b", "c")}
    rounds = FleetRounds(store, world.edges, OPTIONS, clock)
    e = Env(clock, store, world, probe, rounds, runtimes, want, gets)
    yield e
    rounds.close()
    store.close()


def serve_all(env: Env, n: int = 2) -> None:
    env.want.update(a=n, b=n, c=n)
    env.step()  # planned -> ... -> launched: booting
    env.step(dt=6)  # booted (the fake boots in 5 s): starting, container, first probe passes -> serving
    for name in env.runtimes:
        assert env.states(name) == [S.SERVING] * n, (name, env.states(name))


def test_booting_instances_of_every_policy_are_described_in_one_call(env: Env) -> None:
    env.want.update(a=2, b=2, c=2)
    env.step()
    assert all(env.states(name) == [S.BOOTING, S.BOOTING] for name in env.runtimes)
    assert env.gets == []  # a replica just launched waits for the next round's batched boot check
    env.step(dt=6)
    assert len(env.gets) == 1 and len(env.gets[0]) == 6  # one DescribeInstances for the 6 booting instances
    assert all(env.states(name) == [S.SERVING, S.SERVING] for name in env.runtimes)


def test_a_steady_serving_replica_costs_no_thread_and_no_write(env: Env) -> None:
    serve_all(env)
    before = {r.id: r.updated_at for r in env.store.live_replicas()}
    env.probe.batches.clear()
    env.probe.singles = 0
    env.step(dt=2)  # every health check is due again
    assert env.probe.batches == [6] and env.probe.singles == 0  # all six in one batch
    assert env.rounds._stepping == {}  # no policy had a step to run
    assert {r.id: r.updated_at for r in env.store.live_replicas()} == before  # nothing written


def test_a_failed_check_is_recorded_by_the_replicas_step(env: Env) -> None:
    serve_all(env)
    env.probe.healthy = False
    env.step(dt=2)
    assert {r.health_failures for r in env.store.live_replicas()} == {1}
    env.step(dt=2)  # the second failure in a row: drained
    assert all(S.DRAINING in env.states(name) for name in env.runtimes)


def test_a_round_writes_its_samples_and_decisions_and_a_hung_source_does_not_hold_it(env: Env) -> None:
    release = threading.Event()

    class Hung(FakeMetrics):
        def query(self, window: float) -> Observation:
            release.wait(10)
            return super().query(window)

    env.runtimes["b"]._metrics = Hung()
    try:
        env.rounds.sample(env.runtimes, timeout=0.3)  # a and c answer; b hangs past the round
        assert env.store.count("samples") == 2
        env.rounds.sample(env.runtimes, timeout=0.3)  # b's sample is still running: it sits this one out
        assert env.store.count("samples") == 4
    finally:
        release.set()
    env.rounds._sampling["b"].result(timeout=5)
    assert env.store.count("samples") == 5  # b's late sample is written on its own
    env.step()
    assert env.store.count("decisions") == 3


def test_a_policy_whose_steps_still_run_sits_the_next_round_out(env: Env) -> None:
    gate = threading.Event()
    plain_start = env.world.runtime.start

    def slow_start(*args, **kwargs):  # type: ignore[no-untyped-def]
        gate.wait(10)
        return plain_start(*args, **kwargs)

    def last_decided(name: str) -> float:
        row = env.store.last_decision(name)
        assert row is not None
        return row.at

    env.want.update(a=1)
    env.step()
    env.world.runtime.start = slow_start  # type: ignore[method-assign]
    try:
        env.clock.t += 6
        env.rounds.step(env.runtimes, force_evaluate=True, timeout=0.2)  # a's container start hangs
        assert "a" in env.rounds._stepping
        busy_since = last_decided("a")
        env.want.update(b=1)
        env.step()  # a sits out (no evaluation, no step) while b goes on
        assert env.states("b") == [S.BOOTING]
        assert env.states("a") == [S.STARTING] and last_decided("a") == busy_since
    finally:
        gate.set()
    env.rounds._stepping["a"].result(timeout=5)
    env.step()
    assert last_decided("a") == env.clock.t and env.states("a") == [S.SERVING]


def test_the_daemons_batched_probe_checks_real_http_endpoints() -> None:
    """``probe_many`` of the daemon's wiring against real HTTP servers on 127.0.0.1: an answering one passes,
    a 500 and a closed port fail, in the order asked."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from controller.wiring import _HttpProbe
    from tests.support.net import free_port

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ok" else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None: ...

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        closed = free_port()
        targets = [("127.0.0.1", port, "/ok", 1.0), ("127.0.0.1", port, "/bad", 1.0),
                   ("127.0.0.1", closed, "/ok", 1.0), ("127.0.0.1", port, "/ok", 0.5)]
        assert _HttpProbe().probe_many(targets) == [True, False, False, True]
        assert _HttpProbe().probe("127.0.0.1", port, "/ok", 1.0) is True
    finally:
        server.shutdown()
        server.server_close()
