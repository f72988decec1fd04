"""The decision engine: ``decide(policy, observation, fleet, now) -> Decision``. The daemon's tick and the
simulator (`controller/sim/simulator.py`) both call it; it is pure (no clock, no I/O, no logging), so the same
inputs always give the same decision.

Order of the rules (docs/decisions.md):
1. a paused fleet holds;
2. the bounds ``[max(replicas.min, scheduled floor), replicas.max]`` are always met: they override
   everything below (a floor is reached in one decision, a lowered max is followed at once);
3. a missing or stale reading holds (never a scale-in on data we do not have);
4. the strategy proposes a size; a scale-out then waits for ``cooldown.scale_out`` (except a replacement:
   back up to ``fleet.target`` after replicas failed) and is cut to ``max_step_up``; a scale-in waits for
   ``cooldown.scale_in`` after any change, is cut to ``max_step_down``, and removes only replicas at least
   ``min_lifetime`` old.

This is the only place these rules live: after it, the daemon (controller/loop/planner.py) only checks the budget,
chooses which replicas go and rolls stale replicas, and the simulator runs that same code.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from policies import forecast, predictive, target, threshold
from policies.schedule import floor_at
from policies.series import Series
from policies.sizing import Proposal
from policies.strategy_config import (
    ForecastStrategy,
    PredictiveStrategy,
    ScheduleWindow,
    TargetStrategy,
    ThresholdStrategy,
)
from policies.types import Decision, Direction, Fleet, Observation
from policies.units import format_duration as _format_duration

__all__ = ["decide", "history_span"]

# reasons name the same few durations every tick; formatting them is pure, so remember the answers
format_duration = lru_cache(maxsize=1024)(_format_duration)


def history_span(policy: Any) -> float:
    """Seconds of ``observation.history`` (and ``fleet.ready_history``) the policy's strategy reads. The
    daemon keeps at least this much; less only makes the strategy more cautious or blind to seasons."""
    cfg = policy.strategy
    if isinstance(cfg, ThresholdStrategy):
        span = max(cfg.sustained_out, cfg.sustained_in)
    elif isinstance(cfg, ForecastStrategy):
        # the fit reads back from the last refit; the level, five half-lives
        span = (cfg.refit + cfg.fit_window + cfg.cycles * max(cfg.seasons, default=0.0) + 300.0
                + 5 * cfg.level_halflife)
    else:
        span = max(cfg.scale_in_window, 5 * cfg.smoothing, cfg.spare.window if cfg.spare else 0.0)
        if isinstance(cfg, PredictiveStrategy):
            span = max(span, max(cfg.season) * cfg.cycles + cfg.scale_in_window)
    return float(span) + 2 * float(policy.metric.window)


def _floor_why(floor: int, window: ScheduleWindow) -> str:
    return f"scheduled floor {floor} ({','.join(window.days)} {window.start}-{window.end} {window.timezone})"


def _decision(desired: int, active: int, reason: str, details: dict[str, float | str]) -> Decision:
    direction = Direction.OUT if desired > active else Direction.IN if desired < active else Direction.HOLD
    return Decision(desired=desired, direction=direction, reason=reason, details=details)


def _unusable_reason(observation: Observation, stale_after: float, label: str) -> str | None:
    if not observation.ok or observation.value is None:
        return f"no usable {label} reading ({observation.error or 'no value'})"
    if not math.isfinite(observation.value):
        return f"no usable {label} reading (value {observation.value})"
    if not observation.age <= stale_after:
        return (f"the {label} reading is {format_duration(observation.age)} old "
                f"(stale after {format_duration(stale_after)})")
    return None


def _propose(policy: Any, observation: Observation, fleet: Fleet, now: float, label: str) -> Proposal:
    cfg = policy.strategy
    value = float(observation.value)  # type: ignore[arg-type]  # usable was checked by the caller
    onprem = 0.0 if isinstance(cfg, ThresholdStrategy) else cfg.onprem_replicas
    series = Series(observation.history, now - observation.age, value, fleet.ready_history, fleet.ready, onprem)
    if isinstance(cfg, ThresholdStrategy):
        unit = "%" if policy.metric.source in ("host_cpu", "workload_cpu") else ""
        return threshold.propose(cfg, series, fleet.active, label, now, unit)
    if isinstance(cfg, TargetStrategy):
        return target.propose(cfg, series, fleet.active, label)
    if isinstance(cfg, ForecastStrategy):
        return forecast.propose(cfg, series, fleet.active, label, forecast.refit_phase(policy.name, cfg.refit))
    return predictive.propose(cfg, series, fleet.active, label)


def decide(policy: Any, observation: Observation, fleet: Fleet, now: float) -> Decision:
    """The number of cloud replicas the policy wants now, which way that moves the fleet, and why."""
    active = fleet.active
    bounds = policy.replicas
    label = str(observation.source or policy.metric.source)
    if fleet.paused:
        return _decision(active, active, f"paused by an operator: holding {active}", {})
    floor, window = floor_at(policy.schedule, now)
    lo = min(max(bounds.min, floor), bounds.max)
    hi = bounds.max
    details: dict[str, float | str] = {"min": lo, "max": hi}
    lo_why = (_floor_why(floor, window) if window is not None and floor > bounds.min
              else f"replicas.min {bounds.min}")

    unusable = _unusable_reason(observation, float(policy.metric.stale_after), label)
    if unusable is not None:
        details["held"] = "no data"
        if active < lo:
            return _decision(lo, active, f"{unusable}; +{lo - active} to reach the {lo_why}", details)
        if active > hi:
            return _decision(hi, active, f"{unusable}; -{active - hi} to come down to replicas.max {hi}", details)
        return _decision(active, active, f"{unusable}: holding {active}, a missing reading never scales in",
                         details)

    prop = _propose(policy, observation, fleet, now, label)
    details.update(prop.details)
    details["proposed"] = prop.desired
    raw, reason = prop.desired, prop.reason
    desired = active

    if raw > active:
        since = now - fleet.last_scale_out if fleet.last_scale_out is not None else math.inf
        cool = float(policy.cooldown.scale_out)
        # replicas failed since the last scaling action aimed at ``target``: launching back up to it is a
        # replacement, which does not wait for the scale-out cooldown
        last_target = fleet.target if fleet.target is not None else 0
        replacing = last_target > active
        if active >= hi:
            reason += f"; holding at replicas.max {hi}"
        elif since < cool and not replacing:
            reason += f"; scale-out cooldown, {format_duration(cool - since)} of {format_duration(cool)} left"
        else:
            step = bounds.max_step_up
            cap = min(active + step, hi)
            if since < cool:  # replacing: no further than the last target until the cooldown is over
                cap = min(cap, last_target)
            desired = min(raw, cap)
            limits = []
            if since < cool:
                limits.append(f"replacing failed replicas up to the last target {last_target}: no cooldown")
                if raw > desired and desired == last_target:
                    limits.append(f"more waits for the scale-out cooldown, {format_duration(cool - since)} left")
            if desired == active + step and raw > desired:
                limits.append(f"step limit {step}")
            if desired == hi and raw > desired:
                limits.append(f"replicas.max {hi}")
            reason += f"; +{desired - active}" + (f" ({', '.join(limits)})" if limits else "")
    elif raw < active:
        last_change = max((t for t in (fleet.last_scale_in, fleet.last_scale_out) if t is not None), default=None)
        since = now - last_change if last_change is not None else math.inf
        cool = float(policy.cooldown.scale_in)
        lifetime = float(policy.min_lifetime)
        # replicas the caller gave no launch time for are taken as old enough (the daemon lists them all)
        eligible = sum(1 for t in fleet.launched_at if now - t >= lifetime) + max(0, active - len(fleet.launched_at))
        if active <= lo:
            reason += f"; holding at the {lo_why}"
        elif since < cool:
            reason += f"; scale-in cooldown, {format_duration(cool - since)} of {format_duration(cool)} left"
        elif eligible == 0:
            reason += f"; every replica is younger than min_lifetime {format_duration(lifetime)}"
        else:
            step = bounds.max_step_down
            cut = min(active - raw, step, eligible, active - lo)
            desired = active - cut
            limits = []
            if cut == step and active - raw > cut:
                limits.append(f"step limit {step}")
            if cut == eligible and active - raw > cut and eligible < step:
                limits.append(f"{eligible} past min_lifetime {format_duration(lifetime)}")
            if cut == active - lo and raw < lo:
                limits.append(lo_why)
            reason += f"; -{cut}" + (f" ({', '.join(limits)})" if limits else "")

    if desired < lo:
        reason += f"; {lo_why} sets {lo}"
        desired = lo
    elif desired > hi:
        reason += f"; replicas.max {hi}"
        desired = hi
    return _decision(desired, active, reason, details)
