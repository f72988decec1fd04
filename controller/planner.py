"""From a decision to steps: how many replicas to launch and which to drain, after the policy's bounds,
step limits, cooldowns, minimum lifetime, the never-scale-in-on-missing-data rule and the budget guard.
Called by the per-policy tick (controller/tick.py). Pure: the caller passes ``now``, the fleet and a way to
read the replicas' sessions (called only when a scale-in is planned). Which replicas go is
``policies.scale_in.choose_scale_in``'s rule (one rule, one place; docs/replicas.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.budget import Holding, check_launch
from controller.state_models import ReplicaState
from policies import scale_in
from policies.types import Decision

__all__ = ["Plan", "PlanInput", "ReplicaView", "plan"]

Sessions = Callable[[], Mapping[str, int]]  # replica id -> active sessions on its load-balancer server


@dataclass(frozen=True, slots=True)
class ReplicaView:
    id: str
    state: str
    created_at: float


@dataclass(frozen=True, slots=True)
class PlanInput:
    decision: Decision
    active: Sequence[ReplicaView]  # replicas in ACTIVE_STATES
    holdings: Sequence[Holding]  # everything that costs money (see controller.budget)
    now: float
    observation_ok: bool = True
    paused: bool = False
    drain_all: bool = False  # policy removed or an operator drain: everything goes, now
    last_scale_out: float | None = None
    last_scale_in: float | None = None
    # the count the last scaling action aimed at: launching back up to it replaces failed replicas,
    # which is not a new scale-out and does not wait for the cooldown
    target: int | None = None
    # read only when a scale-in is planned (one load-balancer call); None or a missing id counts as 0
    sessions: Sessions | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    desired: int  # after clamping to replicas.min/max
    launch: int
    drain: tuple[str, ...]
    reason: str
    held: str | None = None  # why the plan does less than the decision asked (cooldown, budget, ...)


def _since(now: float, when: float | None) -> float:
    return float("inf") if when is None else now - when


def plan(policy: Any, pin: PlanInput) -> Plan:
    actual = len(pin.active)
    if pin.drain_all:
        ids = tuple(r.id for r in pin.active)
        return Plan(0, 0, ids, "drain everything (policy removed or operator drain)")
    desired = max(int(policy.replicas.min), min(int(policy.replicas.max), int(pin.decision.desired)))
    reason = pin.decision.reason
    if pin.paused:
        return Plan(desired, 0, (), reason, held="paused: no scaling until resumed")
    if desired > actual:
        wait = float(policy.cooldown.scale_out) - _since(pin.now, pin.last_scale_out)
        replacing = pin.target is not None and desired <= pin.target
        if wait > 0 and not replacing:
            return Plan(desired, 0, (), reason, held=f"scale-out cooldown: {wait:.0f}s left")
        wanted = min(desired - actual, int(policy.replicas.max_step_up))
        check = check_launch(policy, pin.holdings, wanted)
        held = check.reason
        if held is None and wanted < desired - actual:
            held = f"max_step_up {policy.replicas.max_step_up}"
        return Plan(desired, check.allowed, (), reason, held=held)
    if desired < actual:
        if not pin.observation_ok:
            return Plan(desired, 0, (), reason, held="metric missing or stale: never scale in on missing data")
        last_any = max((t for t in (pin.last_scale_out, pin.last_scale_in) if t is not None), default=None)
        wait = float(policy.cooldown.scale_in) - _since(pin.now, last_any)
        if wait > 0:
            return Plan(desired, 0, (), reason, held=f"scale-in cooldown: {wait:.0f}s left")
        count = min(actual - desired, int(policy.replicas.max_step_down))
        sessions = pin.sessions() if pin.sessions is not None else {}
        candidates = [scale_in.ReplicaView(r.id, launched_at=r.created_at, sessions=int(sessions.get(r.id, 0)),
                                           serving=r.state == ReplicaState.SERVING) for r in pin.active]
        # the last serving replica stays while the cloud still carries traffic (desired > 0)
        victims = scale_in.choose_scale_in(candidates, count, pin.now, float(policy.min_lifetime),
                                           keep_serving=1 if desired > 0 else 0)
        held = None
        if len(victims) < actual - desired:
            young = sum(1 for r in pin.active if pin.now - r.created_at < float(policy.min_lifetime))
            if len(victims) == count:
                held = f"max_step_down {policy.replicas.max_step_down}"
            elif young:
                held = f"min_lifetime {policy.min_lifetime:g}s: {young} replica(s) too young"
            else:
                held = "keeping the last serving replica while the cloud carries traffic"
        return Plan(desired, 0, victims, reason, held=held)
    return Plan(desired, 0, (), reason)
