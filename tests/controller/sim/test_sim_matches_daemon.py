"""The simulator's decisions compared with the daemon's, step by step: the daemon's real step path (the
sample and step rounds of controller/loop/rounds.py, the journal on SQLite, ``PolicyRuntime.evaluate``, the planner,
the lifecycle, with the in-memory cloud, nodes and load balancer of tests/controller/fakes.py on a virtual
clock) and ``burstctl simulate``'s engine (controller/sim/simulator.py) replay the same two days of each shared
trace with the shipped web.yaml (its forecast strategy, the predictive one it shipped with before, and a
threshold strategy on HAProxy backend sessions), and
must decide the same desired count, launch the same number of replicas and drain the same replicas (by launch
time) at every evaluation. The forecast's remembered fits are forgotten before each side runs, so the daemon
fits its own.

The timing is the simulator's model made real: evaluations every 60 s, step rounds every 30 s; a node boots
90 s after its launch, so its replica serves from that round and the evaluation 120 s after the launch is the
first to count it (the simulator's ``boot_delay`` 120 s); a drained replica is gone at the next round, 30 s
later (``drain_time`` 30 s). The daemon's metric reads the demand and the capacity of on-prem plus the servers
in its load balancer that are not draining, through the simulator's own ``metric_view`` of the policy
(utilisation 100 * demand / capacity for a CPU metric, the demand itself for sessions), as the simulator
reads them with its ready replicas.

Subsampling (to stay fast in CI): every evaluation round runs, but the step round between two evaluations
runs only while some live replica is not serving yet or is leaving; with every replica serving, that round
would only probe healthy replicas (a pass changes nothing). The health check's passes are set to 1 (the
boot delay stands for the whole way in).
"""

from __future__ import annotations

import tempfile
from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.loop.edges import LoopOptions
from controller.loop.rounds import FleetRounds
from controller.loop.tick import PolicyRuntime
from controller.sim.simulator import SimSettings, Step, default_settings, metric_view, policy_steps
from controller.sim.trace import Trace, load_trace
from controller.store.models import ReplicaState
from controller.store.state import StateStore, sqlite_url
from policies import forecast
from policies.loader import load_policies
from policies.model import Policy
from policies.types import Observation
from tests.controller.fakes import FakeLB, World

ROOT = Path(__file__).resolve().parents[3]
WEB = ROOT / "deploy/policies.d/web.yaml"
TRACES = sorted(Path("/work/shared/traces").glob("*.csv"))
DAYS = 2
EVALUATE, STEP, NODE_BOOT, DRAIN = 300.0, 150.0, 150.0, 150.0
BOOT = NODE_BOOT + STEP  # serving from the round at NODE_BOOT, counted by the next evaluation


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class TraceMetric:
    """The metric the simulator's policy sees, read from the daemon's world: the trace's demand now and the
    capacity of on-prem plus the serving servers in the load balancer, through the policy's metric view
    (utilisation for a CPU metric, the demand itself for HAProxy sessions)."""

    def __init__(self, trace: Trace, s: SimSettings, lb: FakeLB, clock: Clock, policy: Policy) -> None:
        self.trace, self.s, self.lb, self.clock = trace, s, lb, clock
        self.view, _ = metric_view(policy)

    def query(self, window: float) -> Observation:
        demand = self.trace.values[max(0, bisect_right(self.trace.times, self.clock()) - 1)]
        ready = sum(1 for srv in self.lb.servers.values() if srv.state != "drain")
        value = self.view(demand, self.s.onprem_capacity + self.s.replica_capacity * ready)
        return Observation(value=value, age=0.0, source="trace")

    def close(self) -> None: ...


PREDICTIVE = {"type": "predictive", "target": 95, "onprem_replicas": 10, "tolerance": 0, "scale_in_window": 300,
              "season": [3600, 86400], "cycles": 3, "lookahead": 300}


def web_policy(strategy: dict[str, Any] | None = None) -> Policy:
    """The shipped web.yaml with tighter limits, so that on these two days every rule binds many times: the
    budget (6 replicas' worth, below replicas.max 8, with leaving replicas still holding it), the step limits,
    both cooldowns and min_lifetime (docs/decisions.md); and about a third of the replicas the shipped limits
    start, which keeps the test fast."""
    policy = load_policies([str(WEB)]).policies["web"]
    data = policy.model_dump(mode="json")
    data["workload"]["health"]["passes"] = 1
    data["replicas"].update(max=8, max_step_up=3, max_step_down=2)
    data["cooldown"] = {"scale_out": 600, "scale_in": 900}
    data["min_lifetime"] = 1200
    data["budget"]["max_per_hour"] = 4.0
    if strategy is not None:
        data["strategy"] = strategy
    return Policy.model_validate(data)


def busiest_days(trace: Trace) -> Trace:
    """The ``DAYS`` days of the trace around its highest sample (the slice with the most to decide)."""
    times, values = trace.times, trace.values
    peak = times[max(range(len(values)), key=values.__getitem__)]
    start = max(times[0], min(peak - DAYS * 86400 / 2, trace.end - DAYS * 86400))
    i, j = bisect_right(times, start) - 1, bisect_right(times, start + DAYS * 86400)
    i = max(0, i)
    return Trace.from_samples(list(times[i:j]), list(values[i:j]), trace.name)


def daemon_steps(policy: Policy, trace: Trace, s: SimSettings, db: Path) -> list[Step]:
    t0 = trace.times[0]
    clock = Clock(t0)
    store = StateStore(sqlite_url(db), clock=clock)
    world = World(clock)
    world.compute.boot_delay = NODE_BOOT
    metric = TraceMetric(trace, s, world.lb, clock, policy)
    world.edges.metrics = lambda p: metric
    options = LoopOptions(controller_id="dc1", sample_interval=EVALUATE, evaluate_interval=EVALUATE,
                          step_interval=STEP, boot_timeout=600, start_timeout=300, launch_timeout=300)
    runtimes = {"web": PolicyRuntime(policy, store=store, edges=world.edges, options=options, clock=clock)}
    rounds = FleetRounds(store, world.edges, options, clock)
    desired: list[tuple[float, int]] = []
    try:
        t = t0
        while t < trace.end:
            clock.t = t
            rounds.sample(runtimes, timeout=None)
            rounds.step(runtimes, timeout=None)  # evaluates: EVALUATE has passed since the last one
            decision = store.last_decision("web")
            assert decision is not None and decision.at == t
            desired.append((t, decision.desired))
            clock.t = t + STEP
            if any(r.state != ReplicaState.SERVING for r in store.live_replicas("web")):
                rounds.step(runtimes, timeout=None)  # does not evaluate: not due
            t += s.interval
        replicas = store.replicas("web")
        assert all(r.failure is None for r in replicas), [r.failure for r in replicas if r.failure]
    finally:
        rounds.close()
        store.close()
    return [Step(at, want, sum(1 for r in replicas if r.created_at == at),
                 tuple(sorted(r.created_at for r in replicas if r.draining_at == at)))
            for at, want in desired]


def sessions_policy(onprem_capacity: float) -> Policy:
    """web.yaml on HAProxy backend sessions with a threshold strategy, its lines where this trace's on-prem
    capacity X puts them (out above 1.2 X, in below X: on both traces' busiest days that launches and drains
    many times): a metric that replicas do not lower."""
    policy = web_policy({"type": "threshold", "scale_out_above": round(1.2 * onprem_capacity, 3),
                         "scale_in_below": round(onprem_capacity, 3), "sustained_out": 300,
                         "sustained_in": 900, "step_out": 2, "step_in": 1})
    data = policy.model_dump(mode="json")
    data["metric"] = {"source": "haproxy", "window": 60, "haproxy": {"socket": "/run/haproxy.sock",
                                                                      "backend": "web", "stat": "sessions"}}
    return Policy.model_validate(data)


@pytest.fixture(scope="module", params=["forecast", "predictive", "haproxy-sessions"])
def policy(request: pytest.FixtureRequest) -> Policy | str:
    if request.param == "haproxy-sessions":
        return request.param  # its lines depend on the trace: made in the test
    return web_policy(None if request.param == "forecast" else PREDICTIVE)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    """The journal's SQLite file, in memory-backed /dev/shm when there is one: the same SQLite, without the
    disk's fsync per journal commit (thousands of them here)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path / "state.db"
        return
    with tempfile.TemporaryDirectory(dir=shm) as d:
        yield Path(d) / "state.db"


def first_difference(sim: list[Step], daemon: list[Step]) -> str:
    for k, (a, b) in enumerate(zip(sim, daemon, strict=False)):
        if a != b:
            context = "\n".join(f"  {x}\n  {y}" for x, y in zip(sim[max(0, k - 3):k + 1], daemon[max(0, k - 3):k + 1],
                                                                 strict=False))
            return f"evaluation {k} differs (simulator first, daemon second):\n{context}"
    return f"{len(sim)} simulator steps, {len(daemon)} daemon steps"


@pytest.fixture(params=[p.name for p in TRACES])
def trace(request: pytest.FixtureRequest) -> Iterator[Trace]:
    yield busiest_days(load_trace(str(Path("/work/shared/traces") / request.param)))


def test_the_simulators_decisions_match_the_daemons_step_by_step(policy: Any, trace: Trace, db: Path) -> None:
    s = default_settings(trace, boot_delay=BOOT, interval=EVALUATE, drain_time=DRAIN)
    if policy == "haproxy-sessions":
        policy = sessions_policy(s.onprem_capacity)
    forecast.clear_cache()
    sim = policy_steps(policy, trace, s)
    forecast.clear_cache()
    daemon = daemon_steps(policy, trace, s, db)
    assert len(sim) == len(daemon) >= DAYS * 86400 // EVALUATE
    # the slice must exercise the rules, or matching proves little
    assert sum(1 for x in sim if x.launch) >= 5 and sum(1 for x in sim if x.drain) >= 5, trace.name
    assert sim == daemon, first_difference(sim, daemon)


def test_the_shipped_traces_are_there() -> None:
    assert len(TRACES) >= 2, "the real traces live in /work/shared/traces"
