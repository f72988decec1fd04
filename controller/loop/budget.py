"""The budget guard: how many launches a policy may make without exceeding its hourly spend cap or its
replica maximum. Called by the planner (controller/loop/planner.py) and again by the launch step
(controller/loop/lifecycle.py) right before ComputePool.launch, so no bug elsewhere can overspend. Pure.

What counts is everything that costs or may cost money: every replica not yet gone (including those being
drained or released, whose instances still run), every pending launch intent, and every instance the journal
records as not released; a stopped node of the warm pool at its disks' price, outside ``replicas.max``. A replica whose instance type is not known yet is priced at the most expensive
type the policy may launch, because the compute pool may fall back to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["BudgetCheck", "Holding", "check_launch", "hourly_spend", "per_node", "price_of"]


@dataclass(frozen=True, slots=True)
class Holding:
    """One thing that costs (or is about to cost) money: keyed so the same replica is counted once."""

    key: str  # the replica id, or "instance:<id>" / "intent:<id>" when no replica is known
    instance_type: str | None = None  # None: not launched yet (worst-case price)
    price_per_hour: float | None = None  # the actual price when the cloud reported one
    # replicas_per_node > 1: the instance this replica runs on (replicas on one instance pay for it once),
    # and whether another replica may still join it (all its replicas on their way in or serving)
    instance_id: str | None = None
    joinable: bool = False
    # a stopped node of the warm pool: costs its disks only (``price_per_hour`` is that price), holds no
    # replica place
    warm: bool = False


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    allowed: int
    spend_per_hour: float  # current run rate of what is held
    held: int
    reason: str | None  # why fewer than wanted were allowed


def _policy_prices(policy: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in policy.budget.prices.items()}


def price_of(policy: Any, holding: Holding) -> float:
    """Hourly price of one holding; unknown types at the worst price the policy could launch."""
    if holding.warm:
        return holding.price_per_hour or 0.0
    prices = _policy_prices(policy)
    worst = max((prices.get(t, 0.0) for t in policy.cloud.instance_types), default=0.0)
    if holding.price_per_hour is not None:
        # the cloud's own figure, but never below the policy's, which ops budget with
        return max(holding.price_per_hour, prices.get(holding.instance_type or "", 0.0))
    if holding.instance_type is None:
        return worst
    return prices.get(holding.instance_type, worst)


def _dedupe(holdings: Iterable[Holding]) -> list[Holding]:
    seen: dict[str, Holding] = {}
    for h in holdings:
        prev = seen.get(h.key)
        # keep the most specific record of the same thing (a known type beats a planned one)
        if prev is None or (prev.instance_type is None and h.instance_type is not None):
            seen[h.key] = h
    return list(seen.values())


def per_node(policy: Any) -> int:
    """``workload.replicas_per_node``: replicas (containers) on each cloud instance."""
    workload = getattr(policy, "workload", None)
    return max(1, int(getattr(workload, "replicas_per_node", 1) or 1))


def _nodes(policy: Any, held: list[Holding]) -> tuple[float, int]:
    """Run rate of the instances the holdings occupy or will, and the free replica places on them.

    One replica per node: every holding is an instance of its own (its price; no free place). With
    ``replicas_per_node`` N > 1, replicas on one instance pay for it once; replicas not placed yet first take
    the free places of joinable instances, the rest need new instances of N places each, at the worst price.
    """
    n = per_node(policy)
    if n == 1:
        return sum(price_of(policy, h) for h in held), 0
    nodes: dict[str, list[Holding]] = {}
    unplaced = 0
    spend = 0.0
    for h in held:
        if h.instance_id is not None:
            nodes.setdefault(h.instance_id, []).append(h)
        elif h.warm or h.key.startswith("instance:"):  # no live replica runs on it: it costs, nobody joins it
            spend += price_of(policy, h)
        else:
            unplaced += 1
    free = 0
    for hs in nodes.values():
        spend += max(price_of(policy, h) for h in hs)
        if all(h.joinable for h in hs):
            free += max(0, n - len(hs))
    placed = min(free, unplaced)
    free -= placed
    new_nodes = -(-(unplaced - placed) // n)  # ceil
    spend += new_nodes * price_of(policy, Holding(key="new"))
    return spend, free + new_nodes * n - (unplaced - placed)


def hourly_spend(policy: Any, holdings: Iterable[Holding]) -> float:
    return _nodes(policy, _dedupe(holdings))[0]


def check_launch(policy: Any, holdings: Iterable[Holding], wanted: int, *, new_instance: bool = False) -> BudgetCheck:
    """How many of ``wanted`` new replicas fit under ``replicas.max`` and ``budget.max_per_hour``.

    With ``replicas_per_node`` > 1 new replicas first fill free places on instances held (free of charge) and
    then need new instances; ``new_instance``: the caller is about to launch one (the launch step), so free
    places elsewhere do not pay for it."""
    held = _dedupe(holdings)
    spend, free = _nodes(policy, held)
    if new_instance:
        free = 0
    worst = price_of(policy, Holding(key="new"))
    cap = float(policy.budget.max_per_hour)
    by_count = max(0, int(policy.replicas.max) - sum(not h.warm for h in held))
    # a tiny epsilon so that exactly reaching the cap (0.62 * 3 = 1.86) is allowed despite float rounding
    by_money = free + per_node(policy) * max(0, int((cap - spend + 1e-9) // worst)) if worst > 0 else by_count
    allowed = max(0, min(wanted, by_count, by_money))
    reason = None
    if allowed < wanted:
        if by_money < min(wanted, by_count):
            reason = (f"budget: {len(held)} held cost {spend:.2f}/h, a launch costs up to {worst:.2f}/h, "
                      f"cap {cap:.2f}/h")
        else:
            reason = f"replicas.max {policy.replicas.max} reached ({len(held)} held, including leaving and in-flight)"
    return BudgetCheck(allowed=allowed, spend_per_hour=spend, held=len(held), reason=reason)
