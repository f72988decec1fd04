"""Fleet sizing shared by target tracking and predictive: how many replicas a load needs, the scale-in
level that waits for a real fall, and a spare while the load is volatile. Called by `target.py` and
`predictive.py`; pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

from policies.series import Series
from policies.strategy_config import Spare, _Reactive
from policies.units import format_duration as _format_duration

__all__ = ["Proposal", "replicas_for", "scale_in_load", "size", "spare_replicas"]

format_duration = lru_cache(maxsize=256)(_format_duration)


@dataclass(frozen=True, slots=True)
class Proposal:
    """What a strategy would like, before the engine applies bounds, steps, cooldowns and lifetimes."""

    desired: int
    reason: str
    details: dict[str, float | str] = field(default_factory=dict)


def replicas_for(load: float, target: float, onprem: float) -> int:
    """Cloud replicas needed so ``load`` (replica units) runs at ``target`` (fraction) of the pool."""
    need = load / target - onprem
    # a hair of slack so 6.0000000001 (float noise) does not buy a seventh replica
    return max(0, math.ceil(need - 1e-6))


def spare_replicas(spare: Spare | None, series: Series) -> tuple[int, float]:
    """(spare replicas, standard deviation of the load over the spare window)."""
    if spare is None or spare.max == 0 or spare.per_stdev == 0:
        return 0, 0.0
    loads = series.loads(series.window(spare.window), len(series))
    n = len(loads)
    if n < 3:
        return 0, 0.0
    mean = sum(loads) / n
    var = sum((x - mean) ** 2 for x in loads) / (n - 1)
    sd = math.sqrt(var)
    return min(spare.max, int(spare.per_stdev * sd + 0.5)), sd


def scale_in_load(cfg: _Reactive, series: Series) -> float:
    """The load a scale-in must still serve: the highest over ``scale_in_window`` and, with smoothing,
    no less than the moving average, so a dip between two peaks is not taken for the end of the peak."""
    level = series.max_load(series.window(cfg.scale_in_window), len(series))
    if cfg.smoothing > 0:
        # EWMA over ~5 half-lives of samples, oldest first; irregular spacing is weighted by elapsed time
        start = series.window(cfg.smoothing * 5)
        window = series.loads(start, len(series))
        ewma = window[0]
        prev_t = series.time(start)
        for k, x in enumerate(window[1:], start + 1):
            t = series.time(k)
            a = 1.0 - 0.5 ** ((t - prev_t) / cfg.smoothing)
            ewma += a * (x - ewma)
            prev_t = t
        level = max(level, ewma)
    return level


def size(cfg: _Reactive, series: Series, active: int, label: str,
         rise_now: float = 0.0, rise_hold: float = 0.0, rise_why: str = "") -> Proposal:
    """Target tracking with a scale-in that waits for a real fall. ``rise_now`` / ``rise_hold`` add
    forecast load (replica units) to the scale-out and scale-in levels (predictive uses them)."""
    target = cfg.target / 100.0
    onprem = cfg.onprem_replicas
    n = len(series)
    load = series.load(n - 1)
    spare, sd = spare_replicas(cfg.spare, series)
    out_need = replicas_for(load + rise_now, target, onprem) + spare
    hold_load = scale_in_load(cfg, series)
    # scale in only to a fleet that would still run below target by the tolerance margin
    in_need = replicas_for(hold_load + rise_hold, target * (1.0 - cfg.tolerance), onprem) + spare
    u = series.now_value
    details: dict[str, float | str] = {"load": round(load, 3), "need": out_need, "hold_need": in_need,
                                       "target": cfg.target}
    what = f"{label} {u:.1f}% = load {load:.1f} replica-units"
    extras = []
    if rise_now > 0:
        extras.append(f"+{rise_now:.1f} {rise_why}")
        details["forecast_rise"] = round(rise_now, 3)
    if spare:
        extras.append(f"+{spare} spare (load s.d. {sd:.1f})")
        details["spare"] = spare
    extra = f" ({', '.join(extras)})" if extras else ""
    if out_need > active:
        return Proposal(out_need, f"{what}{extra} needs {out_need} at target {cfg.target:g}%", details)
    if in_need < active:
        why = f"highest load over the last {format_duration(cfg.scale_in_window)} is {hold_load:.1f}"
        if rise_hold > 0:
            why += f" (+{rise_hold:.1f} {rise_why})"
        return Proposal(in_need, f"{what}; {why}, {in_need} suffice at target {cfg.target:g}%", details)
    if out_need == active:
        return Proposal(active, f"{what}{extra}: {active} is right at target {cfg.target:g}%", details)
    return Proposal(active, f"{what}{extra} needs {out_need}, keeping {active}: the load was "
                    f"{hold_load:.1f} within the last {format_duration(cfg.scale_in_window)}", details)
