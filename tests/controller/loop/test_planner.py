"""Planning: from a decision (every scaling rule already applied by ``policies.engine.decide``) to launches
and drains: the budget guard, which replicas go, paused and drain-everything, the drift roll."""

from __future__ import annotations

from controller.loop.budget import Holding
from controller.loop.planner import PlanInput, ReplicaView, plan
from policies.types import Decision, Direction
from tests.controller.fakes import make_policy

NOW = 10_000.0


def views(*states_and_ages: tuple[str, float]) -> list[ReplicaView]:
    return [ReplicaView(f"r{i}", s, NOW - age) for i, (s, age) in enumerate(states_and_ages)]


def pin(desired: int, active: list[ReplicaView], direction: Direction = Direction.OUT, **kw: object) -> PlanInput:
    holdings = [Holding(v.id) for v in active]
    return PlanInput(decision=Decision(desired, direction, "test"), active=active, holdings=holdings, now=NOW,
                     **kw)  # type: ignore[arg-type]


def test_launches_what_the_decision_wants_within_replicas_max_and_the_budget() -> None:
    p = make_policy()
    assert plan(p, pin(2, [])).launch == 2  # the rules were decide's: no cooldown or step limit here
    out = plan(p, pin(10, []))  # a decision above replicas.max (a bug elsewhere) still never overspends
    assert out.launch == 4 and "replicas.max" in (out.held or "")


def test_budget_limits_launches() -> None:
    p = make_policy(budget={"max_per_hour": 1.3, "prices": {"ecs.c6.large": 0.62, "ecs.c5.large": 0.55}})
    out = plan(p, pin(4, views(("serving", 100))))
    assert out.launch == 1 and "budget" in (out.held or "")


def test_scale_in_prefers_replicas_not_serving_and_respects_min_lifetime() -> None:
    p = make_policy(min_lifetime="300s", replicas={"min": 0, "max": 4, "max_step_down": 4})
    active = views(("serving", 1000), ("serving", 100), ("booting", 20), ("booting", 400))
    out = plan(p, pin(0, active, Direction.IN))
    # the booting one old enough first, then the serving one old enough; r1 and r2 are too young. (The
    # planner's own rule used to drain r2 too: min_lifetime now binds replicas not serving yet as well, the
    # order docs/replicas.md documents and policies.scale_in implements.)
    assert out.drain == ("r3", "r0")
    assert "min_lifetime" in (out.held or "") and "2 replica(s)" in (out.held or "")


def test_scale_in_drains_the_least_busy_then_the_youngest() -> None:
    p = make_policy(min_lifetime="60s", replicas={"min": 0, "max": 6, "max_step_down": 2})
    active = views(("serving", 1000), ("serving", 900), ("serving", 800), ("serving", 700))
    busy = {"r0": 0, "r1": 5, "r2": 1, "r3": 0}
    calls: list[int] = []

    def sessions() -> dict[str, int]:
        calls.append(1)
        return busy

    out = plan(p, pin(1, active, Direction.IN, sessions=sessions))
    assert out.drain == ("r3", "r0", "r2")  # idle ones youngest first, then the least busy; r1 (5) stays
    assert out.held is None and calls == [1]
    # no scale-in planned: the load balancer is not asked
    plan(p, pin(4, active, Direction.HOLD, sessions=sessions))
    assert calls == [1]


def test_scale_in_keeps_the_last_serving_replica_while_the_cloud_carries_traffic() -> None:
    p = make_policy(replicas={"min": 1, "max": 4, "max_step_down": 4})
    active = views(("serving", 1000), ("starting", 900), ("serving", 800))
    out = plan(p, pin(1, active, Direction.IN, sessions=lambda: {"r0": 3, "r2": 0}))
    assert out.drain == ("r1", "r2")  # not serving first, then the idle one; r0 carries the traffic
    out = plan(p, pin(1, views(("serving", 1000), ("serving", 800)), Direction.IN))
    assert out.drain == ("r1",)
    # scaling to zero: the last serving replica goes too
    p0 = make_policy(replicas={"min": 0, "max": 4, "max_step_down": 4})
    assert set(plan(p0, pin(0, active, Direction.IN)).drain) == {"r0", "r1", "r2"}


def test_paused_and_drain_all() -> None:
    p = make_policy()
    active = views(("serving", 1), ("launching", 1))
    assert plan(p, pin(4, active, paused=True)).launch == 0
    out = plan(p, pin(4, active, drain_all=True))
    assert out.launch == 0 and set(out.drain) == {"r0", "r1"}


def test_drift_roll_steps() -> None:
    p = make_policy(replicas={"min": 0, "max": 3, "max_step_up": 2, "max_step_down": 2})

    def stale(*states: str) -> list[ReplicaView]:
        return [ReplicaView(f"r{i}", s, NOW - 100 - i, stale=(i < 2)) for i, s in enumerate(states)]

    # steady at the target, two stale: a surge of one with the new spec (no cooldown or target change)
    out = plan(p, pin(2, stale("serving", "serving"), Direction.HOLD, target=2, spec_hash="abcdef123456789"))
    assert out.roll and out.launch == 1 and out.drain == () and "to spec abcdef123456" in out.reason
    # the surge is not serving yet: wait, and its extra place does not count as a reason to scale in
    out = plan(p, pin(2, stale("serving", "serving", "starting"), Direction.IN, target=2))
    assert not out.roll and out.drain == () and out.launch == 0 and "waiting" in (out.held or "")
    # the surge serves: one stale replica goes, the least busy
    out = plan(p, pin(2, stale("serving", "serving", "serving"), Direction.HOLD, target=2,
                      sessions=lambda: {"r0": 3, "r1": 0}))
    assert out.roll and out.drain == ("r1",) and out.launch == 0
    # at replicas.max: drain one stale first (the repair launch brings the new spec), unless one is leaving
    full = make_policy(replicas={"min": 0, "max": 2, "max_step_up": 2, "max_step_down": 2})
    out = plan(full, pin(2, stale("serving", "serving"), Direction.HOLD, target=2))
    assert out.roll and out.launch == 0 and len(out.drain) == 1
    out = plan(full, pin(2, stale("serving", "serving"), Direction.HOLD, target=2, leaving=1))
    assert not out.roll and out.drain == () and "leaving" in (out.held or "")
    # nothing stale: no roll
    assert not plan(p, pin(2, views(("serving", 100), ("serving", 100)), Direction.HOLD, target=2)).roll
