"""Fitting a policy's strategy parameters to a recorded load, for `burstctl tune` (controller/cli/tune.py)
and bench/decision_quality.py.

Time-ordered validation: the trace is cut at a moment (by default half-way); candidate parameters are
simulated on the part before it only, and the best is chosen there; both the policy as given and the tuned
one are then scored on the part after it, having run over the earlier part first (as the daemon would have
seen it) but counting only what happens from the cut on. Nothing from the held-back part reaches the fit.

The search is coordinate descent over a few values of each tunable field (``GRIDS``), one field at a time
from the policy's own values. A candidate is judged on the fitting part against issue 17's bar: no more
load unserved than HPA, at most half its launches; fewer of those broken first, then the lower penalized
cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from controller.errors import ConfigError
from controller.sim.simulator import Outcome, SimSettings, run_hpa, run_policy
from controller.sim.trace import Trace
from policies.model import Policy

__all__ = ["GRIDS", "Scores", "Trial", "TuneResult", "score", "split_trace", "tune", "with_params"]

# the values tried for each tunable field, by strategy type
GRIDS: dict[str, dict[str, tuple[Any, ...]]] = {
    "forecast": {"keep": (180.0, 300.0, 600.0, 1200.0), "level_halflife": (0.0, 300.0, 900.0),
                 "cycles": (1, 2, 3)},
    "target": {"target": (80.0, 90.0, 95.0, 100.0), "scale_in_window": (0.0, 300.0, 600.0, 1200.0)},
    "predictive": {"target": (80.0, 90.0, 95.0, 100.0), "scale_in_window": (0.0, 300.0, 600.0, 1200.0),
                   "lookahead": (120.0, 300.0, 600.0)},
}


LAUNCH_SHARE = 0.5  # at most this share of HPA's launches


@dataclass(frozen=True, slots=True)
class Trial:
    params: dict[str, Any]
    outcome: Outcome
    broken: int  # how many of the bar's two conditions the candidate breaks on the fitting part

    @property
    def feasible(self) -> bool:
        return self.broken == 0


@dataclass(frozen=True, slots=True)
class Scores:
    """The held-back part: the policy as given, the tuned one and HPA, each counted from ``split`` on."""

    before: Outcome
    after: Outcome
    hpa: Outcome


@dataclass(slots=True)
class TuneResult:
    split: float  # the cut: fitted on samples before it, scored from it on
    before: dict[str, Any]
    after: dict[str, Any]
    policy: Policy
    fit_hpa: Outcome
    trials: list[Trial] = field(default_factory=list)
    scores: Scores | None = None


def split_trace(trace: Trace, fraction: float, interval: float) -> tuple[Trace, float]:
    """(the part before the cut, the cut): at ``fraction`` of the trace's span, on an evaluation."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the fitting share must be between 0 and 1, got {fraction:g}")
    t0 = trace.times[0]
    split = t0 + round(fraction * (trace.end - t0) / interval) * interval
    n = sum(1 for t in trace.times if t < split)
    if n < 2 or n >= len(trace.times) - 1:
        raise ConfigError(f"{trace.name}: too short to split",
                          [(f"{trace.name}: {len(trace.times)} samples: too few to fit on one part and score on "
                            "another (record a longer history)")])
    return Trace.from_samples(trace.times[:n], trace.values[:n], trace.name), split


def with_params(policy: Policy, params: dict[str, Any]) -> Policy:
    data = policy.model_dump(mode="python")
    data["strategy"] = {**data["strategy"], **params}
    return Policy.model_validate(data)


def _current(policy: Policy, grid: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    return {name: getattr(policy.strategy, name) for name in grid}


def _better(a: Trial, b: Trial | None) -> bool:
    if b is None:
        return True
    if a.broken != b.broken:
        return a.broken < b.broken
    return a.outcome.penalized_cost < b.outcome.penalized_cost - 1e-9


def tune(policy: Policy, trace: Trace, s: SimSettings, fraction: float = 0.5) -> TuneResult:
    """Fit the strategy's parameters on the part of ``trace`` before the cut (see the module)."""
    kind = str(policy.strategy.type)
    if kind not in GRIDS:
        raise ConfigError(f"cannot tune a {kind} strategy",
                          [f"strategy type {kind}: tune fits {', '.join(GRIDS)} strategies"])
    grid = GRIDS[kind]
    fit_part, split = split_trace(trace, fraction, s.interval)
    fit_hpa = run_hpa(fit_part, s)

    def trial(params: dict[str, Any]) -> Trial:
        out = run_policy(with_params(policy, params), fit_part, s)
        broken = int(out.unserved_fraction > fit_hpa.unserved_fraction + 1e-12)
        broken += int(out.launches > LAUNCH_SHARE * fit_hpa.launches)
        return Trial(dict(params), out, broken)

    start = _current(policy, grid)
    tried: dict[tuple[tuple[str, Any], ...], Trial] = {}

    def run(params: dict[str, Any]) -> Trial:
        key = tuple(sorted(params.items()))
        if key not in tried:
            try:
                tried[key] = trial(params)
            except ValueError:  # a combination the model refuses (e.g. keep below boot)
                tried[key] = Trial(dict(params), _NEVER, 3)
        return tried[key]

    best = run(start)
    for name, values in grid.items():
        for v in values:
            t = run({**best.params, name: v})
            if t.outcome is not _NEVER and _better(t, best):
                best = t
    tuned = with_params(policy, best.params)
    return TuneResult(split, start, best.params, tuned, fit_hpa, list(tried.values()))


def score(result: TuneResult, original: Policy, trace: Trace, s: SimSettings) -> Scores:
    """Both policies and HPA on the held-back part (from the cut on, after running over the part before)."""
    scores = Scores(before=run_policy(original, trace, s, score_from=result.split),
                    after=run_policy(result.policy, trace, s, score_from=result.split),
                    hpa=run_hpa(trace, s, score_from=result.split))
    result.scores = scores
    return scores


_NEVER = Outcome(unserved_fraction=math.inf, overload_minutes=math.inf, instance_hours=math.inf, launches=0,
                 max_replicas=0, penalized_cost=math.inf)
