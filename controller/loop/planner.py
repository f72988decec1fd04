"""From a decision to steps: how many of the replicas ``policies.engine.decide`` wants the budget guard
lets launch, which replicas go on a scale-in (``policies.scale_in.choose_scale_in``'s order, docs/replicas.md),
and the drift roll's next step. Every scaling rule (bounds, floors, cooldowns, step limits, min_lifetime's
count, missing data, replacements) is ``decide``'s alone (docs/decisions.md); this is what runs after it, in
the daemon (controller/loop/tick.py ``PolicyRuntime.evaluate``) and in the simulator (controller/sim/simulator.py)
alike. Pure: the caller passes ``now``, the fleet and a way to read the replicas' sessions (called only
when a scale-in is planned).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.loop.budget import Holding, check_launch, per_node
from controller.store.models import ReplicaState
from policies import scale_in
from policies.types import Decision

__all__ = ["Plan", "PlanInput", "ReplicaView", "plan", "roll_surplus", "target_after"]

Sessions = Callable[[], Mapping[str, int]]  # replica id -> active sessions on its load-balancer server


@dataclass(frozen=True, slots=True)
class ReplicaView:
    id: str
    state: str
    created_at: float
    # started with a spec whose hash differs from the workload's current one: a drift roll replaces it
    stale: bool = False
    instance_id: str | None = None  # the instance it runs on (replicas_per_node > 1: its mates go together)


@dataclass(frozen=True, slots=True)
class PlanInput:
    decision: Decision
    active: Sequence[ReplicaView]  # replicas in ACTIVE_STATES
    holdings: Sequence[Holding]  # everything that costs money (see controller.loop.budget)
    now: float
    paused: bool = False
    drain_all: bool = False  # policy removed or an operator drain: everything goes, now
    # the count the last scaling action aimed at (a drift roll's surge replica is the one above it)
    target: int | None = None
    # read only when a scale-in is planned (one load-balancer call); None or a missing id counts as 0
    sessions: Sessions | None = None
    spec_hash: str = ""  # the workload's current spec hash (named in roll reasons)
    leaving: int = 0  # replicas draining/stopping/releasing (they still count against max and the budget)


@dataclass(frozen=True, slots=True)
class Plan:
    desired: int  # after clamping to replicas.min/max
    launch: int
    drain: tuple[str, ...]
    reason: str
    held: str | None = None  # why the plan does less than the decision asked (cooldown, budget, ...)
    # a drift roll step (docs/daemon.md): a surge launch or the drain of a stale replica; not a scaling action,
    # so it moves neither the cooldowns nor the target
    roll: bool = False


def roll_surplus(active: Sequence[ReplicaView], target: int | None) -> int:
    """1 while a drift roll's surge replica is up beside the stale one it replaces (the fleet is one above
    the count the last scaling aimed at); decisions and plans count the fleet without it."""
    if target is None or not any(r.stale for r in active):
        return 0
    return 1 if len(active) > target else 0


def plan(policy: Any, pin: PlanInput) -> Plan:
    """Carry out a decision: the launches the budget allows, or the replicas to drain, or a drift roll's
    next step. ``decide`` already applied every scaling rule; nothing here second-guesses its count."""
    surplus = roll_surplus(pin.active, pin.target)
    actual = len(pin.active) - surplus
    if pin.drain_all:
        ids = tuple(r.id for r in pin.active)
        return Plan(0, 0, ids, "drain everything (policy removed or operator drain)")
    desired = int(pin.decision.desired)
    reason = pin.decision.reason
    if pin.paused:  # decide holds a paused fleet; a drift roll waits too
        return Plan(desired, 0, (), reason, held="paused: no scaling until resumed")
    if desired > actual:
        check = check_launch(policy, pin.holdings, desired - actual)
        return Plan(desired, check.allowed, (), reason, held=check.reason)
    if desired < actual:
        sessions = pin.sessions() if pin.sessions is not None else {}
        shared = per_node(policy) > 1
        candidates = [scale_in.ReplicaView(r.id, launched_at=r.created_at, sessions=int(sessions.get(r.id, 0)),
                                           serving=r.state == ReplicaState.SERVING,
                                           node=r.instance_id if shared else None) for r in pin.active]
        # the last serving replica stays while the cloud still carries traffic (desired > 0)
        victims = scale_in.choose_scale_in(candidates, actual - desired, pin.now, float(policy.min_lifetime),
                                           keep_serving=1 if desired > 0 else 0)
        held = None
        if len(victims) < actual - desired:
            young = sum(1 for r in pin.active if pin.now - r.created_at < float(policy.min_lifetime))
            if young:
                held = f"min_lifetime {policy.min_lifetime:g}s: {young} replica(s) too young"
            else:
                held = "keeping the last serving replica while the cloud carries traffic"
        return Plan(desired, 0, victims, reason, held=held)
    return _roll(policy, pin, desired, surplus) or Plan(desired, 0, (), reason)


def target_after(p: Plan, actual: int) -> int:
    """The count a scaling action aims at (``PolicyState.target``, ``Fleet.target``): the fleet without a
    roll's surge, plus the launches, minus the drains. The daemon journals it; the simulator keeps it."""
    return max(0, actual + p.launch - len(p.drain))


def _roll(policy: Any, pin: PlanInput, desired: int, surplus: int) -> Plan | None:
    """The next step of a drift roll, once the fleet is where the decision wants it: a surge of one with the
    new spec; once every replica serves, the drain of one stale replica; at replicas.max or the budget,
    the drain of one stale replica first (the repair launch then brings the new spec)."""
    stale = [r for r in pin.active if r.stale]
    if not stale:
        return None
    new = pin.spec_hash[:12]
    if any(r.state != ReplicaState.SERVING for r in pin.active):
        return Plan(desired, 0, (), pin.decision.reason, held=f"rolling to spec {new}: waiting for replicas to serve")
    views = [scale_in.ReplicaView(r.id, launched_at=r.created_at) for r in stale]
    sessions = pin.sessions() if pin.sessions is not None else {}
    views = [scale_in.ReplicaView(v.id, v.launched_at, sessions=int(sessions.get(v.id, 0))) for v in views]
    [victim] = scale_in.choose_scale_in(views, 1, pin.now, 0.0, keep_serving=0)
    if surplus:
        return Plan(desired, 0, (victim,), f"rolling replica {victim} to spec {new}: its replacement serves",
                    roll=True)
    if len(pin.active) < int(policy.replicas.max) and check_launch(policy, pin.holdings, 1).allowed >= 1:
        return Plan(desired, 1, (), f"rolling replica {victim} to spec {new}: starting its replacement", roll=True)
    if pin.leaving:  # a replica on its way out still holds a place under max/the budget: wait for it
        return Plan(desired, 0, (), pin.decision.reason,
                    held=f"rolling to spec {new}: waiting for a leaving replica to free its place")
    return Plan(desired, 0, (victim,), f"rolling replica {victim} to spec {new}: at replicas.max or the budget, "
                "draining it before its replacement starts", roll=True)
