"""The budget guard: how many launches a policy may make without exceeding its hourly spend cap or its
replica maximum. Called by the planner (controller/planner.py) and again by the launch step
(controller/lifecycle.py) right before ComputePool.launch, so no bug elsewhere can overspend. Pure.

What counts is everything that costs or may cost money: every replica not yet gone (including those being
drained or released, whose instances still run), every pending launch intent, and every instance the journal
records as not released. A replica whose instance type is not known yet is priced at the most expensive
type the policy may launch, because the compute pool may fall back to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["BudgetCheck", "Holding", "check_launch", "hourly_spend", "price_of"]


@dataclass(frozen=True, slots=True)
class Holding:
    """One thing that costs (or is about to cost) money: keyed so the same replica is counted once."""

    key: str  # the replica id, or "instance:<id>" / "intent:<id>" when no replica is known
    instance_type: str | None = None  # None: not launched yet (worst-case price)
    price_per_hour: float | None = None  # the actual price when the cloud reported one


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


def hourly_spend(policy: Any, holdings: Iterable[Holding]) -> float:
    return sum(price_of(policy, h) for h in _dedupe(holdings))


def check_launch(policy: Any, holdings: Iterable[Holding], wanted: int) -> BudgetCheck:
    """How many of ``wanted`` new launches fit under ``replicas.max`` and ``budget.max_per_hour``."""
    held = _dedupe(holdings)
    spend = sum(price_of(policy, h) for h in held)
    worst = price_of(policy, Holding(key="new"))
    cap = float(policy.budget.max_per_hour)
    by_count = max(0, int(policy.replicas.max) - len(held))
    # a tiny epsilon so that exactly reaching the cap (0.62 * 3 = 1.86) is allowed despite float rounding
    by_money = max(0, int((cap - spend + 1e-9) // worst)) if worst > 0 else by_count
    allowed = max(0, min(wanted, by_count, by_money))
    reason = None
    if allowed < wanted:
        if by_money < min(wanted, by_count):
            reason = (f"budget: {len(held)} held cost {spend:.2f}/h, a launch costs up to {worst:.2f}/h, "
                      f"cap {cap:.2f}/h")
        else:
            reason = f"replicas.max {policy.replicas.max} reached ({len(held)} held, including leaving and in-flight)"
    return BudgetCheck(allowed=allowed, spend_per_hour=spend, held=len(held), reason=reason)
