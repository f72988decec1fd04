"""Property tests (hypothesis) of the decision engine's invariants, over every strategy type:
never below the floor or above max, never a scale-in inside its cooldown or on missing/stale data,
step limits respected, min_lifetime respected, scheduled floors met, and the same inputs give the
same decision."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.engine import decide
from policies.schedule import floor_at
from policies.types import Direction, Fleet, Observation
from tests.policies.enginekit import NOW, policy

STRATEGIES = [
    {"type": "threshold", "scale_out_above": 70, "scale_in_below": 30, "sustained_out": "2m", "sustained_in": "5m",
     "step_out": 3, "step_in": 2},
    {"type": "threshold", "scale_out_above": 60, "scale_in_below": 50, "sustained_out": "0s", "sustained_in": "0s",
     "step_out": 50, "step_in": 50},
    {"type": "target", "target": 70, "onprem_replicas": 10, "tolerance": 0},
    {"type": "target", "target": 90, "onprem_replicas": 4, "scale_in_window": "0s", "smoothing": "2m",
     "spare": {"window": "20m", "per_stdev": 2, "max": 3}},
    {"type": "predictive", "target": 80, "onprem_replicas": 10, "season": ["10m", "30m"], "cycles": 2,
     "lookahead": "3m", "scale_in_window": "2m"},
    {"type": "forecast", "onprem_replicas": 10, "seasons": ["1h"], "cycles": 1, "fit_window": "30m",
     "refit": "10m", "keep": "3m", "level_halflife": "2m"},
    {"type": "forecast", "onprem_replicas": 4, "seasons": [], "fit_window": "20m", "refit": "5m", "penalty": 3},
]
SCHEDULES = [
    [],
    [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "end": "24:00", "min": 3}],
    [{"days": ["tue"], "start": "22:00", "end": "02:00", "min": 5, "timezone": "UTC"},
     {"days": ["wed"], "start": "06:00", "end": "07:00", "min": 2, "timezone": "Asia/Shanghai"}],
]


@st.composite
def cases(draw):
    strategy = STRATEGIES[draw(st.integers(0, len(STRATEGIES) - 1))]
    lo = draw(st.integers(0, 4))
    hi = draw(st.integers(lo, 12))
    schedule = [w for w in SCHEDULES[draw(st.integers(0, len(SCHEDULES) - 1))] if w["min"] <= hi]
    p = policy(strategy=strategy, schedule=schedule,
               replicas={"min": lo, "max": hi, "max_step_up": draw(st.integers(1, 6)),
                         "max_step_down": draw(st.integers(1, 6))},
               cooldown={"scale_out": draw(st.sampled_from(["0s", "1m", "3m"])),
                         "scale_in": draw(st.sampled_from(["0s", "2m", "10m"]))},
               min_lifetime=draw(st.sampled_from(["0s", "5m", "10m"])))
    now = NOW + draw(st.integers(0, 7 * 86400))
    active = draw(st.integers(0, 14))
    launched = tuple(sorted(now - draw(st.integers(0, 3600)) for _ in range(active)))
    ready = draw(st.integers(0, active))
    n = draw(st.integers(0, 80))
    values = draw(st.lists(st.floats(0, 200, allow_nan=False), min_size=n, max_size=n))
    step = draw(st.sampled_from([30.0, 60.0]))
    age = draw(st.floats(0, 400))
    history = tuple((now - age - (n - i) * step, v) for i, v in enumerate(values))
    ready_history = tuple((now - (k + 1) * 300.0, draw(st.integers(0, 14))) for k in reversed(range(draw(st.integers(0, 3)))))
    value = draw(st.one_of(st.none(), st.floats(0, 300, allow_nan=False), st.just(math.nan)))
    ok = draw(st.booleans()) if value is not None else False
    obs = Observation(value=value, age=age, source="cpu", ok=ok, error=None if ok else "down", history=history)
    fleet = Fleet(active=active, ready=ready, launched_at=launched,
                  last_scale_out=draw(st.one_of(st.none(), st.floats(now - 1200, now))),
                  last_scale_in=draw(st.one_of(st.none(), st.floats(now - 1200, now))),
                  ready_history=ready_history, paused=draw(st.integers(0, 9)) == 0)
    return p, obs, fleet, now


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_invariants(case):
    p, obs, fleet, now = case
    d = decide(p, obs, fleet, now)
    active = fleet.active
    assert isinstance(d.desired, int) and d.reason
    assert d.direction == (Direction.OUT if d.desired > active else Direction.IN if d.desired < active
                           else Direction.HOLD)
    if fleet.paused:
        assert d.desired == active
        return
    floor, _ = floor_at(p.schedule, now)
    lo = min(max(p.replicas.min, floor), p.replicas.max)
    # the bounds always hold (a floor, or a lowered max, is reached in one decision)
    assert lo <= d.desired <= p.replicas.max
    within = lo <= active <= p.replicas.max
    usable = obs.usable and math.isfinite(obs.value) and obs.age <= p.metric.stale_after
    if d.desired < active and within:
        # a scale-in: only on good data, outside its cooldown, never more than the step, only old replicas
        assert usable, d.reason
        changes = [t for t in (fleet.last_scale_in, fleet.last_scale_out) if t is not None]
        assert not changes or now - max(changes) >= p.cooldown.scale_in, d.reason
        assert active - d.desired <= p.replicas.max_step_down
        old = sum(1 for t in fleet.launched_at if now - t >= p.min_lifetime)
        assert active - d.desired <= old
    if d.desired > active and within:
        assert d.desired - active <= p.replicas.max_step_up
        assert usable
        assert fleet.last_scale_out is None or now - fleet.last_scale_out >= p.cooldown.scale_out
    if not usable and within:
        assert d.desired == active
    # deterministic
    assert decide(p, obs, fleet, now) == d
