"""Threshold scaling with hysteresis: step out when utilisation stays above one line, step in when it
stays below a lower one, each for its own sustained-for window. Called by `policies.engine.decide`; pure."""

from __future__ import annotations

from collections.abc import Callable

from policies.series import Series
from policies.sizing import Proposal
from policies.strategy_config import ThresholdStrategy
from policies.units import format_duration

__all__ = ["held_for", "propose"]


def held_for(series: Series, now: float, holds: Callable[[float], bool], enough: float) -> float:
    """How long (seconds up to ``now``) every sample has satisfied ``holds``; the walk back stops once
    ``enough`` is proven, so a long history costs nothing."""
    i = len(series) - 1
    if not holds(series.value(i)):
        return 0.0
    since = series.time(i)
    while i > 0 and now - since < enough:
        i -= 1
        if not holds(series.value(i)):
            break
        since = series.time(i)
    return max(0.0, now - since)


def propose(cfg: ThresholdStrategy, series: Series, active: int, label: str, now: float,
            unit: str = "%") -> Proposal:
    """``unit`` follows each figure in the reason: ``%`` for a CPU metric, nothing for HAProxy sessions or
    a query's value (``haproxy:web:sessions 7.5 > 6``, not ``7.5% > 6%``)."""
    u = series.now_value
    above, below = cfg.scale_out_above, cfg.scale_in_below
    details: dict[str, float | str] = {"value": round(u, 3)}
    if u > above:
        held = held_for(series, now, lambda v: v > above, cfg.sustained_out)
        details["held"] = round(held, 1)
        what = f"{label} {u:.1f}{unit} > {above:g}{unit} for {format_duration(held)}"
        if held >= cfg.sustained_out:
            return Proposal(active + cfg.step_out, what, details)
        return Proposal(active, f"{what} of the {format_duration(cfg.sustained_out)} required", details)
    if u < below:
        held = held_for(series, now, lambda v: v < below, cfg.sustained_in)
        details["held"] = round(held, 1)
        what = f"{label} {u:.1f}{unit} < {below:g}{unit} for {format_duration(held)}"
        if active == 0:
            return Proposal(0, f"{what}; no cloud replicas to remove", details)
        if held >= cfg.sustained_in:
            return Proposal(max(0, active - cfg.step_in), what, details)
        return Proposal(active, f"{what} of the {format_duration(cfg.sustained_in)} required", details)
    return Proposal(active, f"{label} {u:.1f}{unit} is between {below:g}{unit} and {above:g}{unit}", details)
