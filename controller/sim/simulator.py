"""A simulated clock and fleet that replay a load trace through the daemon's decision path and through the
two reference rules (HPA and step scaling).

Used by `burstctl simulate` (controller/cli/simulate.py) and the benchmarks in bench/. The model
(issue 2, item 6): demand holds between trace samples; on-prem serves up to X load units; a cloud replica
adds Y once it has booted, ``boot_delay`` after its launch, stops serving when it is drained and is gone
``drain_time`` later, and bills per second from launch to gone; the policy's metric reads what its source
would read there (``metric_view``: utilisation 100 * demand / (X + Y * ready) for a CPU metric, the demand
itself for HAProxy sessions) and is evaluated every ``interval``. The policy runs exactly what the
daemon's evaluation runs (``policies.engine.decide``, then ``controller.loop.planner.plan``: the budget guard and
the choice of the replicas that go, then the cooldown marks and target the daemon journals);
tests/controller/sim/test_sim_matches_daemon.py holds the two side by side, step by step.
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from controller.loop.budget import Holding
from controller.loop.planner import PlanInput, ReplicaView, plan, target_after
from controller.loop.warm_pool import DEFAULT_DISK_PRICE
from controller.sim.trace import Trace
from controller.store.models import ReplicaState as S
from policies.engine import decide, history_span
from policies.history import History
from policies.types import Fleet, Observation

__all__ = [
    "MetricView",
    "Outcome",
    "PolicyStepper",
    "Report",
    "SimFleet",
    "SimSettings",
    "Step",
    "Timeline",
    "criteria_failures",
    "default_settings",
    "metric_view",
    "oracle_instance_hours",
    "policy_steps",
    "run_hpa",
    "run_policy",
    "run_step",
    "simulate",
]

# Baseline constants, as issue 2 defines them
HPA_TARGET = 0.8
HPA_STABILISATION = 300.0
STEP_OUT_ABOVE = 80.0
STEP_IN_BELOW = 40.0
STEP_COOLDOWN = 300.0


@dataclass(frozen=True, slots=True)
class SimSettings:
    onprem_capacity: float  # X, load units served on-prem
    replica_capacity: float  # Y, load units per ready cloud replica
    boot_delay: float = 120.0
    interval: float = 60.0
    unserved_penalty: float = 10.0
    # a drained replica's way out (sessions end, container stops, instance released): it bills and holds
    # budget until then
    drain_time: float = 30.0
    # boot delay per source (docs/decisions.md "Warm pool and baked images"): ``boot_delay`` is a stock node's
    # (VM boot, Docker installed, image pulled); a baked image's node (None: no baked image) and a warm node
    # started from the pool (StartInstances, image on its disk) serve sooner
    baked_boot: float | None = None
    warm_boot: float = 40.0
    # the policy's warm pool (warm_pool.size, max_age) and a stopped node's price against a running one's
    warm_size: int = 0
    warm_max_age: float = 86400.0
    disk_fraction: float = 0.05


def default_settings(trace: Trace, onprem: float | None = None, replica: float | None = None,
                     boot_delay: float = 120.0, interval: float = 60.0, penalty: float = 10.0,
                     drain_time: float = 30.0) -> SimSettings:
    """X defaults to the trace's 75th percentile, Y to X / 10."""
    x = trace.percentile(75.0) if onprem is None else onprem
    y = x / 10.0 if replica is None else replica
    return SimSettings(x, y, boot_delay, interval, penalty, drain_time)


@dataclass(slots=True)
class Timeline:
    """One point per evaluation, for plots and reports."""

    t: list[float] = field(default_factory=list)
    demand: list[float] = field(default_factory=list)
    capacity: list[float] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Outcome:
    unserved_fraction: float
    overload_minutes: float
    instance_hours: float
    launches: int  # scale-out actions (one launch call, however many replicas it starts)
    max_replicas: int
    penalized_cost: float
    replicas_launched: int = 0  # replicas started over the run
    warm_starts: int = 0  # replicas started on a warm node of the pool
    warm_node_hours: float = 0.0  # stopped nodes kept in the pool, billed at their disks' price
    timeline: Timeline | None = None

    def as_dict(self) -> dict[str, float | int]:
        d = asdict(self)
        d.pop("timeline")
        return d


@dataclass(slots=True)
class Report:
    policy: Outcome
    hpa: Outcome
    step: Outcome
    oracle_instance_hours: float
    settings: SimSettings
    steps: int


class SimFleet:
    """The simulated cloud fleet with the lifecycle's timing: a replica launched at ``t`` serves from
    ``t + boot_delay``; a drained one stops serving at once (the load balancer stops sending it requests) but
    is on its way out, still billing and holding budget, until ``t + drain_time``. Bills per second from
    launch to gone."""

    def __init__(self, s: SimSettings, t_end: float, count_from: float = -math.inf) -> None:
        self.boot, self.drain_time, self.t_end = s.boot_delay, s.drain_time, t_end
        self.cold_boot = s.boot_delay if s.baked_boot is None else s.baked_boot
        self.warm_boot, self.warm_size, self.warm_max_age = s.warm_boot, s.warm_size, s.warm_max_age
        # the warm pool: (stopped at, launched at) of each stopped node; and each active replica's true launch
        self.pool: list[tuple[float, float]] = []
        self.born: dict[str, float] = {}
        self.warm_starts = 0
        self.disk_seconds = 0.0
        self.count_from = count_from  # bills and launches before this time are not counted
        self.launched: list[float] = []  # launch times of the active replicas, ascending
        self.ids: list[str] = []  # their ids, in the same order
        self.leaving: list[tuple[float, str]] = []  # (gone at, id) of drained replicas, ascending
        self.ih_seconds = 0.0
        self.launches = self.started = 0
        self.version = 0  # moves whenever the active or leaving set changes
        self._next = 0

    def ready(self, t: float) -> int:
        return bisect_right(self.launched, t - self.boot)

    def leaving_at(self, t: float) -> list[tuple[float, str]]:
        """Drained replicas still on their way out at ``t`` (gone at ``t`` itself counts as still there: the
        daemon's round evaluates before it advances)."""
        while self.leaving and self.leaving[0][0] < t:
            self.leaving.pop(0)
            self.version += 1
        return self.leaving

    def launch(self, count: int, t: float) -> None:
        """A replica booting in less than ``boot_delay`` (a baked or a warm node) is kept as if launched that
        much earlier, so ``ready`` stays one bisection; its billing still starts at ``t``."""
        for _ in range(count):
            self._next += 1
            boot = self.warm_boot if self._take_warm(t) else self.cold_boot
            shifted = t - (self.boot - boot)
            k = bisect_right(self.launched, shifted)
            rid = f"r{self._next:07d}"
            self.launched.insert(k, shifted)
            self.ids.insert(k, rid)
            self.born[rid] = t
        if t >= self.count_from:
            self.launches += 1
            self.started += count
        self.version += 1

    def drain(self, ids: Sequence[str], t: float) -> None:
        gone = min(t + self.drain_time, self.t_end)
        for rid in ids:
            k = self.ids.index(rid)
            self.launched.pop(k)
            self.ids.pop(k)
            insort(self.leaving, (gone, rid))
            born = self.born.pop(rid, t)
            self.ih_seconds += self._counted(born, gone)  # billed from the true launch, not the shifted one
            if len(self.pool) < self.warm_size and gone - born < self.warm_max_age and gone < self.t_end:
                self.pool.append((gone, born))  # stopped into the pool once drained
        self.version += 1

    def scale_to(self, want: int, t: float, min_lifetime: float = 0.0) -> None:
        """The baselines' own way: launch up to ``want``, or drain the youngest replicas old enough."""
        active = len(self.launched)
        if want > active:
            self.launch(want - active, t)
        elif want < active:
            k = bisect_right(self.launched, t - min_lifetime)
            self.drain(self.ids[max(0, k - (active - want)):k], t)

    def _counted(self, start: float, end: float) -> float:
        """The seconds of [start, end] that count: those from ``count_from`` on (a held-back part's score)."""
        return max(0.0, end - max(start, self.count_from))

    def _take_warm(self, t: float) -> bool:
        """Start a node of the pool at ``t`` if one is stopped and young enough; expired ones are released."""
        kept = []
        for stopped, born in self.pool:
            if t - born >= self.warm_max_age:
                self.disk_seconds += self._counted(stopped, born + self.warm_max_age)
            else:
                kept.append((stopped, born))
        self.pool = kept
        for i, (stopped, _born) in enumerate(self.pool):
            if stopped <= t:
                self.disk_seconds += self._counted(stopped, t)
                del self.pool[i]
                self.warm_starts += 1
                return True
        return False

    def finish(self) -> None:
        for lt, rid in zip(self.launched, self.ids, strict=True):  # what is left is released when the trace ends
            self.ih_seconds += self._counted(self.born.get(rid, lt), self.t_end)
        for stopped, born in self.pool:
            self.disk_seconds += self._counted(stopped, min(self.t_end, born + self.warm_max_age))
        self.pool = []


# A rule sees (now, utilisation, demand, the fleet) and launches or drains through the fleet.
Rule = Callable[[float, float, float, SimFleet], None]


def _simulate(trace: Trace, s: SimSettings, rule: Rule, *, record: bool = False,
              reasons: list[str] | None = None, score_from: float = -math.inf) -> Outcome:
    """Run ``rule`` every ``interval`` over the trace and integrate service and cost exactly; with
    ``score_from``, the rule runs from the start but only what happens from then on is counted (a held-back
    part scored after the rule has seen the history before it)."""
    times, values = trace.times, trace.values
    X, Y, boot, dt = s.onprem_capacity, s.replica_capacity, s.boot_delay, s.interval
    t0, t_end = times[0], trace.end
    n_samples = len(times)
    fleet = SimFleet(s, t_end, score_from)
    launched = fleet.launched
    unserved = overload = demand_total = 0.0
    max_active = 0
    timeline = Timeline() if record else None
    si = 0  # index of the sample in force
    t = t0
    while t < t_end:
        while si + 1 < n_samples and times[si + 1] <= t:
            si += 1
        d = values[si]
        ready = bisect_right(launched, t - boot)
        u = 100.0 * d / (X + Y * ready)
        rule(t, u, d, fleet)
        active = len(launched)
        if t >= score_from:
            max_active = max(max_active, active)
        # integrate to the next evaluation, split where demand or capacity changes
        b = min(t + dt, t_end)
        a = t
        j = si
        while a < b:
            seg_end = b
            if j + 1 < n_samples and times[j + 1] < seg_end:
                seg_end = times[j + 1]
            ready = bisect_right(launched, a - boot)
            if ready < active:
                next_ready = launched[ready] + boot
                seg_end = min(seg_end, next_ready)
            dd = values[j]
            cap = X + Y * ready
            span = seg_end - a if a >= score_from else max(0.0, seg_end - score_from)
            demand_total += dd * span
            if dd > cap:
                unserved += (dd - cap) * span
                overload += span
            a = seg_end
            if j + 1 < n_samples and times[j + 1] <= a:
                j += 1
        if timeline is not None:
            timeline.t.append(t)
            timeline.demand.append(d)
            timeline.capacity.append(X + Y * bisect_right(launched, t - boot))
            timeline.replicas.append(active)
            if reasons is not None:
                timeline.reasons.append(reasons[-1] if reasons else "")
        t += dt
    fleet.finish()
    instance_hours = fleet.ih_seconds / 3600.0
    unserved_rh = unserved / (Y * 3600.0)
    return Outcome(
        unserved_fraction=unserved / demand_total if demand_total > 0 else 0.0,
        overload_minutes=overload / 60.0,
        instance_hours=instance_hours,
        launches=fleet.launches,
        max_replicas=max_active,
        penalized_cost=instance_hours + s.unserved_penalty * unserved_rh
        + s.disk_fraction * fleet.disk_seconds / 3600.0,
        replicas_launched=fleet.started,
        warm_starts=fleet.warm_starts,
        warm_node_hours=fleet.disk_seconds / 3600.0,
        timeline=timeline,
    )


@dataclass(frozen=True, slots=True)
class Step:
    """One evaluation of the policy in the simulator: what it decided and what the planner did."""

    t: float
    desired: int
    launch: int
    drain: tuple[float, ...]  # launch times of the replicas drained (ids are the simulator's own)


MetricView = Callable[[float, float], float]


def metric_view(policy: Any) -> tuple[MetricView, str]:
    """What the policy's metric reads from the demand now and the capacity serving it (X + Y * ready
    replicas), and the words for it. The trace is in load units, on-prem serves X of them, a replica Y:

    - ``host_cpu``, ``workload_cpu``: the on-prem share of the demand over on-prem's capacity, in percent;
      the load balancer spreads the demand by capacity, so that is 100 * demand / (X + Y * ready);
    - ``haproxy`` ``sessions``: the backend's current sessions, which replicas spread and do not lower: the
      demand itself (the trace is in sessions);
    - ``haproxy`` ``queue``: what waits beyond the servers' capacity, demand - (X + Y * ready), at least 0;
    - ``prometheus``: a query's value is whatever the query computes; taken as utilisation, as a query of
      the on-prem servers' load share would read.
    """
    metric = policy.metric
    if metric.source == "haproxy" and metric.haproxy is not None:
        if metric.haproxy.stat == "queue":
            return (lambda demand, capacity: max(0.0, demand - capacity)), "queue: demand - (X + Y * ready)"
        return (lambda demand, capacity: demand), "sessions: the demand itself"
    return (lambda demand, capacity: 100.0 * demand / capacity), "utilisation: 100 * demand / (X + Y * ready)"


class PolicyStepper:
    """The daemon's decision path on the simulated fleet, one evaluation at a time: ``policies.engine.decide``
    on the fleet's facts, then ``controller.loop.planner.plan`` (the budget guard, which replicas go), then what
    the daemon journals after an action (cooldown marks, the target). ``steps`` records each evaluation."""

    def __init__(self, policy: Any, s: SimSettings, *, record_steps: bool = False,
                 reasons: list[str] | None = None) -> None:
        self.policy, self.s = policy, s
        # (time, metric value) at each evaluation: the span the strategy reads, kept as the daemon keeps it
        self.samples = History(max(3600.0, history_span(policy)))
        self.ready_changes: list[tuple[float, int]] = []
        self.last_out: float | None = None
        self.last_in: float | None = None
        self.target: int | None = None
        self.reasons = reasons
        self.steps: list[Step] | None = [] if record_steps else None
        self.source = str(policy.metric.source)
        self.view, _ = metric_view(policy)
        self._views: tuple[int, int, list[ReplicaView]] = (-1, -1, [])
        self._holdings: tuple[int, list[Holding]] = (-1, [])

    def _replica_views(self, fleet: SimFleet, ready: int) -> list[ReplicaView]:
        version, was_ready, views = self._views
        if version != fleet.version or was_ready != ready:  # PERF: rebuilt only when the fleet changed
            views = [ReplicaView(rid, S.SERVING if k < ready else S.BOOTING, at)
                     for k, (at, rid) in enumerate(zip(fleet.launched, fleet.ids, strict=True))]
            self._views = (fleet.version, ready, views)
        return views

    def _held(self, fleet: SimFleet) -> list[Holding]:
        version, holdings = self._holdings
        if version != fleet.version:  # every replica not gone yet holds budget, at the worst price
            holdings = [Holding(key=rid) for rid in fleet.ids] + [Holding(key=rid) for _, rid in fleet.leaving]
            self._holdings = (fleet.version, holdings)
        return holdings

    def __call__(self, now: float, u: float, d: float, fleet: SimFleet) -> None:
        ready = fleet.ready(now)
        # samples are taken at evaluations, so a change recorded now maps every sample to the right count
        if not self.ready_changes or self.ready_changes[-1][1] != ready:
            self.ready_changes.append((now, ready))
        leaving = fleet.leaving_at(now)
        active = len(fleet.launched)
        # as the daemon's runtime: the reading goes in (the span is pruned), the engine gets a view of the
        # samples before it (no copy; the engine bisects to the windows it reads)
        value = self.view(d, self.s.onprem_capacity + self.s.replica_capacity * ready)
        self.samples.append(now, value)
        obs = Observation(value=value, age=0.0, source=self.source, history=self.samples.view(before=now))
        facts = Fleet(active=active, ready=ready, draining=len(leaving), last_scale_out=self.last_out,
                      last_scale_in=self.last_in, launched_at=tuple(fleet.launched), target=self.target,
                      ready_history=self.ready_changes)
        decision = decide(self.policy, obs, facts, now)
        p = plan(self.policy, PlanInput(decision=decision, active=self._replica_views(fleet, ready),
                                        holdings=self._held(fleet), now=now, target=self.target,
                                        leaving=len(leaving)))
        drained = tuple(fleet.launched[fleet.ids.index(rid)] for rid in p.drain)
        if p.launch:
            fleet.launch(p.launch, now)
        if p.drain:
            fleet.drain(p.drain, now)
        if (p.launch or p.drain) and not p.roll:  # as the daemon journals a scaling action
            self.target = target_after(p, active)
            if p.launch:
                self.last_out = now
            else:
                self.last_in = now
        if self.reasons is not None:
            held = f" (held: {p.held})" if p.held else ""
            self.reasons.append(f"{decision.direction.value} {p.desired}: {p.reason}{held}")
        if self.steps is not None:
            self.steps.append(Step(now, p.desired, p.launch, tuple(sorted(drained))))


def run_policy(policy: Any, trace: Trace, s: SimSettings, *, record: bool = False,
               score_from: float = -math.inf) -> Outcome:
    """The policy through the daemon's decision path (``PolicyStepper``)."""
    reasons: list[str] | None = [] if record else None
    return _simulate(trace, s, PolicyStepper(policy, s, reasons=reasons), record=record, reasons=reasons,
                     score_from=score_from)


def policy_steps(policy: Any, trace: Trace, s: SimSettings) -> list[Step]:
    """Every evaluation's decision and plan over the trace (what tests compare with the daemon's rounds)."""
    stepper = PolicyStepper(policy, s, record_steps=True)
    _simulate(trace, s, stepper)
    return stepper.steps or []


def run_hpa(trace: Trace, s: SimSettings, *, record: bool = False, score_from: float = -math.inf) -> Outcome:
    """Kubernetes HPA on pooled capacity: desired = ceil((demand / 0.8 - X) / Y), scaling in only to the
    highest desired value of the last 5 minutes."""
    X, Y = s.onprem_capacity, s.replica_capacity
    recent: list[tuple[float, int]] = []

    def rule(now: float, u: float, d: float, fleet: SimFleet) -> None:
        want = max(0, math.ceil((d / HPA_TARGET - X) / Y - 1e-9))
        recent.append((now, want))
        while recent and recent[0][0] <= now - HPA_STABILISATION:
            recent.pop(0)
        active = len(fleet.launched)
        fleet.scale_to(want if want >= active else min(active, max(w for _, w in recent)), now)

    return _simulate(trace, s, rule, record=record, score_from=score_from)


def run_step(trace: Trace, s: SimSettings, *, record: bool = False) -> Outcome:
    """AWS simple scaling: +1 above 80% utilisation, -1 below 40%, 300 s cooldown after each action."""
    last = [-math.inf]

    def rule(now: float, u: float, d: float, fleet: SimFleet) -> None:
        active = len(fleet.launched)
        if now - last[0] < STEP_COOLDOWN:
            return
        if u > STEP_OUT_ABOVE:
            last[0] = now
            fleet.scale_to(active + 1, now)
        elif u < STEP_IN_BELOW and active > 0:
            last[0] = now
            fleet.scale_to(active - 1, now)

    return _simulate(trace, s, rule, record=record)


def oracle_instance_hours(trace: Trace, s: SimSettings) -> float:
    """The least instance-hours that serve all demand with perfect foresight: ceil((demand - X) / Y)
    replicas at every moment."""
    X, Y = s.onprem_capacity, s.replica_capacity
    times, values = trace.times, trace.values
    total = 0.0
    for i, d in enumerate(values):
        end = times[i + 1] if i + 1 < len(times) else trace.end
        total += max(0, math.ceil((d - X) / Y - 1e-9)) * (end - times[i])
    return total / 3600.0


def simulate(policy: Any, trace: Trace, s: SimSettings, *, record: bool = False) -> Report:
    """The policy, both baselines and the oracle over one trace."""
    steps = max(0, math.ceil((trace.end - trace.times[0]) / s.interval))
    base = replace(s, warm_size=0)  # the baselines have no warm pool (they boot from the same image)
    return Report(policy=run_policy(policy, trace, s, record=record), hpa=run_hpa(trace, base, record=record),
                  step=run_step(trace, base, record=record), oracle_instance_hours=oracle_instance_hours(trace, s),
                  settings=s, steps=steps)


def with_warm_pool(s: SimSettings, policy: Any) -> SimSettings:
    """``s`` with the policy's warm pool (size, max_age) and its stopped node's price against the policy's
    cheapest instance type."""
    warm = getattr(policy, "warm_pool", None)
    if warm is None:
        return s
    prices = [float(v) for v in policy.budget.prices.values()] or [1.0]
    disk = float(warm.disk_price) if warm.disk_price is not None else DEFAULT_DISK_PRICE
    return replace(s, warm_size=int(warm.size), warm_max_age=float(warm.max_age), disk_fraction=disk / min(prices))


def criteria_failures(report: Report) -> list[str]:
    """Issue 2's bar for a shipped policy, as failures (empty: passed): a lower penalized cost than
    HPA, no more launches than HPA, and neither baseline better on both unserved demand and
    instance-hours."""
    p, failures = report.policy, []
    if not p.penalized_cost < report.hpa.penalized_cost:
        failures.append(f"penalized_cost {p.penalized_cost:.1f} is not below hpa's {report.hpa.penalized_cost:.1f}")
    if p.launches > report.hpa.launches:
        failures.append(f"{p.launches} launches, more than hpa's {report.hpa.launches}")
    for name, b in (("hpa", report.hpa), ("step", report.step)):
        if b.unserved_fraction < p.unserved_fraction and b.instance_hours < p.instance_hours:
            failures.append(f"dominated by {name}: unserved {b.unserved_fraction:.4f} < {p.unserved_fraction:.4f} "
                            f"and instance-hours {b.instance_hours:.1f} < {p.instance_hours:.1f}")
    return failures
