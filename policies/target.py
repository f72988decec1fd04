"""Target tracking: size the fleet so the pooled utilisation sits at the policy's target. Called by
`policies.engine.decide`; pure."""

from __future__ import annotations

from policies.series import Series
from policies.sizing import Proposal, size
from policies.strategy_config import TargetStrategy

__all__ = ["propose"]


def propose(cfg: TargetStrategy, series: Series, active: int, label: str) -> Proposal:
    return size(cfg, series, active, label)
