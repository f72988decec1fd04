"""Predictive scaling from recorded seasonality: target tracking plus the rise that followed this moment
in past seasons, provisioned before it is due. Called by `policies.engine.decide`; pure.

For each candidate season ``p`` and each of the last ``cycles`` seasons ``j``, the recorded rise is how
far the load climbed, within ``lookahead`` after ``now - j*p``, above its highest point in the
``lookahead`` before. Only a rise seen in every one of those cycles counts (the smallest of them is
used): a pattern repeats, noise does not. The largest such rise over the candidate seasons is added to
the current load. Rises are increments, not levels, so a season that does not match the data forecasts
about nothing rather than yesterday's level, and a rising trend is anticipated by its own slope.
Rises under half a replica (``MIN_RISE``) are ignored as noise.
"""

from __future__ import annotations

from policies.series import Series
from policies.sizing import Proposal, size
from policies.strategy_config import PredictiveStrategy
from policies.units import format_duration

__all__ = ["MIN_RISE", "propose", "recorded_rise", "seasonal_rise"]

# A recorded rise smaller than half a replica's worth of load is noise, not a pattern: acting on it would
# at most round the fleet up by one, and looking further for it costs every tick.
MIN_RISE = 0.5


def recorded_rise(series: Series, at: float, lookahead: float) -> float | None:
    """How far the load rose within ``lookahead`` after ``at`` above its highest in the ``lookahead``
    before (load units, 0 if it did not); None when the history does not reach back that far."""
    if at - lookahead < series.oldest:
        return None
    mid = series.index_at_or_before(at)
    stop = series.index_at_or_after(at + lookahead + 1e-9)
    if stop <= mid + 1:
        return 0.0
    after = series.max_load(mid + 1, stop)
    if after - series.load(mid) < MIN_RISE:  # the usual answer, without reading the window before
        return 0.0
    start = series.index_at_or_before(at - lookahead)
    rise = after - series.max_load(start, mid + 1)
    return rise if rise >= MIN_RISE else 0.0


def seasonal_rise(cfg: PredictiveStrategy, series: Series) -> tuple[float, float]:
    """(the largest rise every recorded cycle of some season agrees on, that season)."""
    best, best_season = 0.0, 0.0
    for season in cfg.season:
        agreed = float("inf")
        for j in range(1, cfg.cycles + 1):
            rise = recorded_rise(series, series.now_t - j * season, cfg.lookahead)
            if rise is None:  # not enough of this season recorded yet
                agreed = 0.0
                break
            agreed = min(agreed, rise)
            if agreed <= best:
                break  # this season cannot beat the best already found
        if agreed > best:
            best, best_season = agreed, season
    return best, best_season


def propose(cfg: PredictiveStrategy, series: Series, active: int, label: str) -> Proposal:
    rise, season = seasonal_rise(cfg, series)
    why = (f"recorded rise within {format_duration(cfg.lookahead)} in each of the last {cfg.cycles} "
           f"{format_duration(season)} seasons") if rise > 0 else ""
    return size(cfg, series, active, label, rise_now=rise, rise_hold=rise, rise_why=why)
