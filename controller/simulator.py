"""A simulated clock and fleet that replay a load trace through the real decision engine
(`policies.engine.decide`) and through the two reference rules (HPA and step scaling).

Used by `burstctl simulate` (controller/commands/simulate.py) and the benchmarks in bench/. The model
(issue 2, item 6): demand holds between trace samples; on-prem serves up to X load units; a cloud replica
adds Y once it has booted, ``boot_delay`` after its launch, and bills per second from launch to release;
the policy sees utilisation 100 * demand / (X + Y * ready) and is evaluated every ``interval``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from controller.simtrace import Trace
from policies.engine import decide
from policies.types import Fleet, Observation

__all__ = [
    "Outcome",
    "Report",
    "SimSettings",
    "Timeline",
    "criteria_failures",
    "default_settings",
    "oracle_instance_hours",
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


def default_settings(trace: Trace, onprem: float | None = None, replica: float | None = None,
                     boot_delay: float = 120.0, interval: float = 60.0, penalty: float = 10.0) -> SimSettings:
    """X defaults to the trace's 75th percentile, Y to X / 10."""
    x = trace.percentile(75.0) if onprem is None else onprem
    y = x / 10.0 if replica is None else replica
    return SimSettings(x, y, boot_delay, interval, penalty)


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


# A rule sees (now, utilisation, demand, launch times of the active replicas, ready count) and returns
# the desired replica count; the loop below carries it out.
Rule = Callable[[float, float, float, list[float], int], int]


def _simulate(trace: Trace, s: SimSettings, rule: Rule, *, min_lifetime: float = 0.0,
              record: bool = False, reasons: list[str] | None = None) -> Outcome:
    """Run ``rule`` every ``interval`` over the trace and integrate service and cost exactly."""
    times, values = trace.times, trace.values
    X, Y, boot, dt = s.onprem_capacity, s.replica_capacity, s.boot_delay, s.interval
    t0, t_end = times[0], trace.end
    n_samples = len(times)
    launched: list[float] = []  # launch times of active replicas, ascending
    ih_seconds = 0.0
    unserved = overload = demand_total = 0.0
    launches = started = max_active = 0
    timeline = Timeline() if record else None
    si = 0  # index of the sample in force
    t = t0
    while t < t_end:
        while si + 1 < n_samples and times[si + 1] <= t:
            si += 1
        d = values[si]
        ready = bisect_right(launched, t - boot)
        u = 100.0 * d / (X + Y * ready)
        want = rule(t, u, d, launched, ready)
        active = len(launched)
        if want > active:
            launched.extend([t] * (want - active))
            launches += 1
            started += want - active
        elif want < active:
            for _ in range(active - want):
                # the youngest replica old enough to leave; booting ones carry nothing, so they go first
                k = bisect_right(launched, t - min_lifetime) - 1
                if k < 0:
                    break
                ih_seconds += t - launched.pop(k)
        active = len(launched)
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
            span = seg_end - a
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
    for lt in launched:  # what is left is released when the trace ends
        ih_seconds += t_end - lt
    instance_hours = ih_seconds / 3600.0
    unserved_rh = unserved / (Y * 3600.0)
    return Outcome(
        unserved_fraction=unserved / demand_total if demand_total > 0 else 0.0,
        overload_minutes=overload / 60.0,
        instance_hours=instance_hours,
        launches=launches,
        max_replicas=max_active,
        penalized_cost=instance_hours + s.unserved_penalty * unserved_rh,
        replicas_launched=started,
        timeline=timeline,
    )


def run_policy(policy: Any, trace: Trace, s: SimSettings, *, record: bool = False) -> Outcome:
    """The policy, through the same ``policies.engine.decide`` the daemon calls."""
    samples: list[tuple[float, float]] = []  # (time, utilisation) at each evaluation
    ready_changes: list[tuple[float, int]] = []
    state: dict[str, float | None] = {"out": None, "in": None}
    reasons: list[str] | None = [] if record else None
    source = str(policy.metric.source)

    def rule(now: float, u: float, d: float, launched: list[float], ready: int) -> int:
        # samples are taken at evaluations, so a change recorded now maps every sample to the right count
        if not ready_changes or ready_changes[-1][1] != ready:
            ready_changes.append((now, ready))
        # the whole record is passed as it is (the engine bisects to the windows it reads): copying or
        # wrapping it every step would cost more than the decision
        obs = Observation(value=u, age=0.0, source=source, history=samples)
        fleet = Fleet(active=len(launched), ready=ready, last_scale_out=state["out"], last_scale_in=state["in"],
                      launched_at=tuple(launched),
                      ready_history=ready_changes)
        decision = decide(policy, obs, fleet, now)
        samples.append((now, u))
        if decision.desired > len(launched):
            state["out"] = now
        elif decision.desired < len(launched):
            state["in"] = now
        if reasons is not None:
            reasons.append(f"{decision.direction.value} {decision.desired}: {decision.reason}")
        return decision.desired

    return _simulate(trace, s, rule, min_lifetime=float(policy.min_lifetime), record=record, reasons=reasons)


def run_hpa(trace: Trace, s: SimSettings, *, record: bool = False) -> Outcome:
    """Kubernetes HPA on pooled capacity: desired = ceil((demand / 0.8 - X) / Y), scaling in only to the
    highest desired value of the last 5 minutes."""
    X, Y = s.onprem_capacity, s.replica_capacity
    recent: list[tuple[float, int]] = []

    def rule(now: float, u: float, d: float, launched: list[float], ready: int) -> int:
        want = max(0, math.ceil((d / HPA_TARGET - X) / Y - 1e-9))
        recent.append((now, want))
        while recent and recent[0][0] <= now - HPA_STABILISATION:
            recent.pop(0)
        active = len(launched)
        if want >= active:
            return want
        return min(active, max(w for _, w in recent))

    return _simulate(trace, s, rule, record=record)


def run_step(trace: Trace, s: SimSettings, *, record: bool = False) -> Outcome:
    """AWS simple scaling: +1 above 80% utilisation, -1 below 40%, 300 s cooldown after each action."""
    last = [-math.inf]

    def rule(now: float, u: float, d: float, launched: list[float], ready: int) -> int:
        active = len(launched)
        if now - last[0] < STEP_COOLDOWN:
            return active
        if u > STEP_OUT_ABOVE:
            last[0] = now
            return active + 1
        if u < STEP_IN_BELOW and active > 0:
            last[0] = now
            return active - 1
        return active

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
    return Report(policy=run_policy(policy, trace, s, record=record), hpa=run_hpa(trace, s, record=record),
                  step=run_step(trace, s, record=record), oracle_instance_hours=oracle_instance_hours(trace, s),
                  settings=s, steps=steps)


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
