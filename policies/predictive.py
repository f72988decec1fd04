"""Predictive scaling from recorded seasonality: target tracking plus the rise that followed this moment
in past seasons, provisioned before it is due. Called by `policies.engine.decide`; pure.

For each candidate season ``p`` and each of the last ``cycles`` seasons ``j``, the recorded rise is the
largest increase of the load within ``lookahead`` after the time ``now - j*p``. The median over the cycles
is the forecast (a rise seen once is noise; seen in most cycles, a pattern), and the largest forecast over
the candidate seasons is added to the current load. Rises are increments, not levels, so a season that
does not match the data forecasts about nothing rather than yesterday's level.
"""

from __future__ import annotations

from policies.series import Series
from policies.sizing import Proposal, size
from policies.strategy_config import PredictiveStrategy
from policies.units import format_duration

__all__ = ["propose", "recorded_rise"]


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def recorded_rise(series: Series, at: float, span: float, lookahead: float) -> tuple[float, float] | None:
    """(rise within ``lookahead`` after ``at``, rise within ``lookahead`` after any moment of
    [at - span, at]) in load units, each measured from the load in force when its window opens; None when
    the history does not reach back to ``at - span``."""
    if at - span < series.oldest:
        return None
    start = series.index_at_or_before(at - span)
    mid = series.index_at_or_before(at)
    stop = series.index_at_or_after(at + lookahead + 1e-9)
    if stop <= mid:
        stop = mid + 1
    loads = series.loads(start, stop)
    k = mid - start
    rise_now = max(loads[k:]) - loads[k]
    return rise_now, max(rise_now, max(loads) - loads[0])


def propose(cfg: PredictiveStrategy, series: Series, active: int, label: str) -> Proposal:
    best_now = best_hold = 0.0
    best_season = 0.0
    for season in cfg.season:
        nows: list[float] = []
        holds: list[float] = []
        for j in range(1, cfg.cycles + 1):
            got = recorded_rise(series, series.now_t - j * season, cfg.scale_in_window, cfg.lookahead)
            if got is None:
                break
            nows.append(got[0])
            holds.append(got[1])
        if len(nows) < cfg.cycles:
            continue  # not enough of this season recorded yet
        r_now, r_hold = _median(nows), _median(holds)
        if r_now > best_now:
            best_now, best_season = r_now, season
        best_hold = max(best_hold, r_hold)
    why = (f"recorded rise within {format_duration(cfg.lookahead)} in the last {cfg.cycles} "
           f"{format_duration(best_season)} seasons") if best_now > 0 else "recorded seasonal rise"
    return size(cfg, series, active, label, rise_now=best_now, rise_hold=max(best_hold, best_now), rise_why=why)
