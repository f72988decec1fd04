"""Table-driven tests of policies.engine.decide with a fixed ``now``: each strategy, and the rules the
engine applies on top (bounds, floors, steps, cooldowns, lifetimes, missing data, pause)."""

from __future__ import annotations

import pytest

from policies.engine import decide, history_span
from policies.types import Direction, Fleet, Observation
from tests.policies.enginekit import NOW, policy, samples

THRESHOLD = {"type": "threshold", "scale_out_above": 75, "scale_in_below": 40, "sustained_out": "2m",
             "sustained_in": "10m", "step_out": 2, "step_in": 1}
OLD = (NOW - 3600,)  # launch time of a replica past its minimum lifetime


def obs(value: float | None, history: list[float] = (), age: float = 5.0, **kw) -> Observation:  # type: ignore[assignment]
    return Observation(value=value, age=age, source="workload_cpu", history=samples(list(history), end=NOW - age), **kw)


@pytest.mark.parametrize("name,value,history,fleet,desired,reason", [
    ("sustained above: step out", 82.1, [80, 81, 85], Fleet(active=1, ready=1, launched_at=OLD), 3,
     "workload_cpu 82.1% > 75% for 2m5s; +2"),
    ("above, not yet for long enough", 82.1, [60, 81], Fleet(active=1, ready=1, launched_at=OLD), 1,
     "workload_cpu 82.1% > 75% for 1m5s of the 2m required"),
    ("a dip inside the window restarts the count", 90, [90, 90, 70, 90], Fleet(active=0), 0,
     "for 1m5s of the 2m required"),
    ("between the lines: hold", 50, [50] * 20, Fleet(active=3, ready=3, launched_at=OLD * 3), 3,
     "workload_cpu 50.0% is between 40% and 75%"),
    ("sustained below: step in", 20, [20] * 11, Fleet(active=3, ready=3, launched_at=OLD * 3), 2,
     "workload_cpu 20.0% < 40% for 10m5s; -1"),
    ("below but not for 10m", 20, [20] * 5, Fleet(active=3, ready=3, launched_at=OLD * 3), 3,
     "of the 10m required"),
    ("nothing to remove", 10, [10] * 20, Fleet(active=0), 0, "no cloud replicas to remove"),
])
def test_threshold(name, value, history, fleet, desired, reason):
    d = decide(policy(strategy=THRESHOLD), obs(value, history), fleet, NOW)
    assert d.desired == desired, d.reason
    assert reason in d.reason
    assert d.direction == (Direction.OUT if desired > fleet.active else Direction.IN if desired < fleet.active
                           else Direction.HOLD)


def test_threshold_reason_gives_percent_only_for_cpu_metrics():
    """HAProxy sessions and a query's value are not percentages: an ops user reading
    ``haproxy:web:sessions 0.0% < 2%`` would take the lines for a utilisation."""
    haproxy = {"source": "haproxy", "haproxy": {"socket": "/run/haproxy.sock", "backend": "web"}}
    seen = Observation(value=7.5, age=5.0, source="haproxy:web:sessions", history=samples([8, 9, 7], end=NOW - 5))
    d = decide(policy(strategy=dict(THRESHOLD, scale_out_above=6, scale_in_below=2), metric=haproxy), seen,
               Fleet(active=0), NOW)
    assert "haproxy:web:sessions 7.5 > 6 for 2m5s; +2" in d.reason, d.reason
    cpu = decide(policy(strategy=THRESHOLD, metric={"source": "host_cpu"}), obs(82.1, [80, 81, 85]), Fleet(active=0),
                 NOW)
    assert "82.1% > 75%" in cpu.reason


@pytest.mark.parametrize("name,replicas,cooldown,fleet,value,desired,reason", [
    ("step limit up", {"max_step_up": 1}, {}, Fleet(active=2, ready=2, launched_at=OLD * 2), 95, 3,
     "+1 (step limit 1)"),
    ("max caps the step", {"max": 3}, {}, Fleet(active=2, ready=2, launched_at=OLD * 2), 95, 3,
     "+1 (replicas.max 3)"),
    ("at max: hold", {"max": 2}, {}, Fleet(active=2, ready=2, launched_at=OLD * 2), 95, 2, "holding at replicas.max 2"),
    ("scale-out cooldown", {}, {}, Fleet(active=2, ready=2, launched_at=OLD * 2, last_scale_out=NOW - 30), 95, 2,
     "scale-out cooldown, 1m30s of 2m left"),
    ("scale-in cooldown after a scale-out", {}, {}, Fleet(active=2, ready=2, launched_at=OLD * 2,
                                                         last_scale_out=NOW - 300), 10, 2,
     "scale-in cooldown, 5m of 10m left"),
    ("scale-in cooldown after a scale-in", {}, {}, Fleet(active=2, ready=2, launched_at=OLD * 2,
                                                        last_scale_in=NOW - 540), 10, 2,
     "scale-in cooldown, 1m of 10m left"),
    ("scale-in past its cooldown", {}, {}, Fleet(active=2, ready=2, launched_at=OLD * 2,
                                                last_scale_in=NOW - 601), 10, 0, "; -2"),
    ("young replicas stay", {}, {}, Fleet(active=2, ready=2, launched_at=(NOW - 300, NOW - 200)), 10, 2,
     "every replica is younger than min_lifetime 10m"),
    ("replicas.min holds the floor", {"min": 2}, {}, Fleet(active=2, ready=2, launched_at=OLD * 2), 10, 2,
     "holding at the replicas.min 2"),
    ("below replicas.min: raised at once", {"min": 3}, {}, Fleet(active=0), 50, 3, "replicas.min 3 sets 3"),
    ("above a lowered max: cut at once", {"max": 1}, {}, Fleet(active=4, ready=4, launched_at=OLD * 4), 50, 1,
     "replicas.max 1"),
    # issue 16's example: the last target 2, one active (one failed), 10 s into a 30 s scale-out cooldown
    ("a failed replica is replaced inside the cooldown", {}, {"scale_out": "30s"},
     Fleet(active=1, ready=1, launched_at=OLD, last_scale_out=NOW - 10, target=2), 95, 2,
     "+1 (replacing failed replicas up to the last target 2: no cooldown, more waits for the scale-out cooldown"),
    ("beyond the last target waits for the cooldown", {}, {"scale_out": "30s"},
     Fleet(active=2, ready=2, launched_at=OLD * 2, last_scale_out=NOW - 10, target=2), 95, 2,
     "scale-out cooldown, 20s of 30s left"),
    ("a replacement keeps to the step limit", {"max_step_up": 1}, {"scale_out": "30s"},
     Fleet(active=1, ready=1, launched_at=OLD, last_scale_out=NOW - 10, target=4), 95, 2, "step limit 1"),
    ("no replacement when the strategy wants no more", {}, {"scale_out": "30s"},
     Fleet(active=1, ready=1, launched_at=OLD, last_scale_out=NOW - 10, target=2), 50, 1, "between 40% and 75%"),
])
def test_engine_rules(name, replicas, cooldown, fleet, value, desired, reason):
    strategy = dict(THRESHOLD, sustained_out="0s", sustained_in="0s", step_out=5, step_in=5)
    p = policy(strategy=strategy, replicas=replicas, cooldown=cooldown)
    d = decide(p, obs(value, [value] * 3), fleet, NOW)
    assert d.desired == desired, d.reason
    assert reason in d.reason


def test_step_down_limit_and_lifetime_count():
    strategy = dict(THRESHOLD, sustained_in="0s", step_in=10)
    fleet = Fleet(active=6, ready=6, launched_at=OLD * 5 + (NOW - 60,))
    d = decide(policy(strategy=strategy, replicas={"max_step_down": 3}), obs(10, [10]), fleet, NOW)
    assert (d.desired, d.direction) == (3, Direction.IN)
    assert "-3 (step limit 3)" in d.reason
    d = decide(policy(strategy=strategy, replicas={"max_step_down": 10}), obs(10, [10]), fleet, NOW)
    assert d.desired == 1  # the young one stays
    assert "5 past min_lifetime 10m" in d.reason


@pytest.mark.parametrize("name,observation,reason", [
    ("source failed", Observation(value=None, age=0, source="workload_cpu", ok=False, error="docker: timeout"),
     "no usable workload_cpu reading (docker: timeout)"),
    ("stale", Observation(value=5.0, age=400, source="workload_cpu"), "reading is 6m40s old (stale after 3m)"),
    ("not a number", Observation(value=float("nan"), age=1, source="workload_cpu"), "no usable workload_cpu reading"),
])
def test_missing_or_stale_data_holds(name, observation, reason):
    fleet = Fleet(active=3, ready=3, launched_at=OLD * 3)
    for strategy in (THRESHOLD, {"type": "target", "target": 60}, {"type": "predictive", "target": 60}):
        d = decide(policy(strategy=strategy), observation, fleet, NOW)
        assert (d.desired, d.direction) == (3, Direction.HOLD)
        assert reason in d.reason and "never scales in" in d.reason


def test_missing_data_still_reaches_the_floor():
    p = policy(replicas={"min": 2})
    d = decide(p, Observation(value=None, age=0, ok=False, error="down"), Fleet(active=0), NOW)
    assert (d.desired, d.direction) == (2, Direction.OUT)


def test_paused_holds_whatever_the_load():
    fleet = Fleet(active=2, ready=2, launched_at=OLD * 2, paused=True)
    for value in (0.0, 99.0):
        d = decide(policy(strategy=dict(THRESHOLD, sustained_out="0s", sustained_in="0s")), obs(value, [value] * 20),
                   fleet, NOW)
        assert (d.desired, d.direction) == (2, Direction.HOLD)
        assert d.reason.startswith("paused")


@pytest.mark.parametrize("name,value,history,fleet,desired,reason", [
    # on-prem is worth 10 replicas; 90% of (10 + 2) = 10.8 replica-units; at 60% that needs 18 - 10 = 8
    ("out to the target", 90, [90], Fleet(active=2, ready=2, launched_at=OLD * 2), 6,
     "workload_cpu 90.0% = load 10.8 replica-units needs 8 at target 60%; +4 (step limit 4)"),
    ("right at target", 60, [60] * 5, Fleet(active=2, ready=2, launched_at=OLD * 2), 2, "2 is right at target 60%"),
    ("a recent peak keeps the fleet", 30, [30, 30, 90, 30], Fleet(active=8, ready=8, launched_at=OLD * 8), 8,
     "keeping 8: the load was"),
    ("a real fall: scale in", 30, [30] * 12, Fleet(active=8, ready=8, launched_at=OLD * 8), 6,
     "highest load over the last 10m is 5.4, 0 suffice at target 60%; -2 (step limit 2)"),
])
def test_target(name, value, history, fleet, desired, reason):
    strategy = {"type": "target", "target": 60, "onprem_replicas": 10, "tolerance": 0}
    d = decide(policy(strategy=strategy), obs(value, history), fleet, NOW)
    assert d.desired == desired, d.reason
    assert reason in d.reason


def test_target_uses_the_ready_count_each_sample_was_taken_with():
    # 50% with 10 ready is 10 replica-units of load; the same 50% with 0 ready was only 5
    strategy = {"type": "target", "target": 50, "onprem_replicas": 10, "tolerance": 0, "scale_in_window": "5m"}
    hist = samples([50.0] * 8, end=NOW - 5)
    with_history = Fleet(active=10, ready=10, launched_at=OLD * 10,
                         ready_history=((NOW - 3600, 0), (NOW - 150, 10)))
    d = decide(policy(strategy=strategy, replicas={"max_step_down": 20}),
               Observation(value=25.0, age=5, history=hist), with_history, NOW)
    # highest load in the last 5m: 50% of (10 + 10) = 10 units at 50% needs 10 replicas: keep them all
    assert d.desired == 10, d.reason


def test_spare_while_volatile():
    strategy = {"type": "target", "target": 100, "onprem_replicas": 10, "tolerance": 0,
                "spare": {"window": "30m", "per_stdev": 1, "max": 3}}
    calm = decide(policy(strategy=strategy), obs(100, [100] * 30), Fleet(), NOW)
    jumpy = decide(policy(strategy=strategy), obs(100, [100, 140, 80, 150, 90] * 6), Fleet(), NOW)
    assert calm.desired == 0
    assert jumpy.desired == 3 and "spare" in jumpy.reason


def test_predictive_provisions_a_recorded_rise_before_it_is_due():
    # an hourly pattern: 40% for 55 minutes then 95% for 5; now is 3 minutes before the next rise
    strategy = {"type": "predictive", "target": 80, "onprem_replicas": 10, "tolerance": 0, "season": "1h",
                "cycles": 3, "lookahead": "5m", "scale_in_window": "5m"}
    pattern = [40.0] * 55 + [95.0] * 5
    values = (pattern * 4)[:233]  # the last (current) minute is minute 52 of the hour
    history = samples(values[:-1], end=NOW)
    fleet = Fleet(active=0)
    d = decide(policy(strategy=strategy, replicas={"max_step_up": 20}),
               Observation(value=40.0, age=0, history=history), fleet, NOW)
    # 95% of on-prem = 9.5 units, at 80% needs 11.9 -> 2 replicas, before the load arrives
    assert d.desired == 2, d.reason
    assert "(+5.5 recorded rise within 5m in each of the last 3 1h seasons) needs 2 at target 80%" in d.reason
    target_only = {k: v for k, v in strategy.items() if k not in ("season", "cycles", "lookahead")}
    reactive = decide(policy(strategy=target_only | {"type": "target"}),
                      Observation(value=40.0, age=0, history=history), fleet, NOW)
    assert reactive.desired == 0


def test_predictive_ignores_a_rise_seen_in_one_cycle_only():
    strategy = {"type": "predictive", "target": 80, "onprem_replicas": 10, "tolerance": 0, "season": "1h",
                "cycles": 3, "lookahead": "5m"}
    quiet = [40.0] * 60
    once = [40.0] * 55 + [95.0] * 5
    values = (quiet + quiet + once + quiet)[:233]
    d = decide(policy(strategy=strategy), Observation(value=40.0, age=0, history=samples(values[:-1])),
               Fleet(), NOW)
    assert d.desired == 0, d.reason


def test_predictive_without_enough_history_is_target_tracking():
    strategy = {"type": "predictive", "target": 60, "onprem_replicas": 10, "tolerance": 0, "season": "1d"}
    d = decide(policy(strategy=strategy), obs(90, [90]), Fleet(active=2, ready=2, launched_at=OLD * 2), NOW)
    assert d.desired == 6 and "recorded" not in d.reason


def test_history_span_covers_what_each_strategy_reads():
    assert history_span(policy(strategy=THRESHOLD)) >= 600
    assert history_span(policy(strategy={"type": "predictive", "target": 60, "season": ["1h", "1d"],
                                         "cycles": 3})) >= 3 * 86400


def test_same_inputs_same_decision():
    p = policy(strategy={"type": "predictive", "target": 70, "season": "1h"})
    o = obs(88, [50, 60, 70, 80] * 60)
    f = Fleet(active=3, ready=2, launched_at=(NOW - 9000, NOW - 700, NOW - 30))
    assert len({repr(decide(p, o, f, NOW)) for _ in range(5)}) == 1
