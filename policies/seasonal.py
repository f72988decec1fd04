"""The seasonal model under the forecast strategy (policies/forecast.py): the bins of a season, the seasonal
profile ``S`` (the mean load at the same phase of the last ``cycles`` seasons, smoothed) and its highest value
over a window, the fitted model (``Fit``: season, level, margin), and the quantile arithmetic of the
newsvendor rule. Pure.
"""
from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Fit", "bin_width", "newsvendor_quantile", "profile", "quantile", "smooth_bins", "window_max"]


def bin_width(season: float) -> float:
    """Width of a season's profile bins: a 288th of it, between one and five minutes."""
    return min(300.0, max(60.0, season / 288.0))


def smooth_bins(season: float) -> int:
    # the profile is averaged over a 96th of the season either side: its shape, not one cycle's noise
    return int(season / 96.0 / bin_width(season))


def newsvendor_quantile(penalty: float, cost: float = 1.0) -> float:
    """The quantile of demand to provision for when a unit short costs ``penalty`` and a unit idle ``cost``:
    the k-th unit is worth holding while the chance it is used exceeds ``cost / (penalty + cost)``."""
    return penalty / (penalty + cost)


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (the smallest value at or above a fraction ``q`` of them)."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


@dataclass(frozen=True, slots=True)
class Fit:
    """What a refit found: the season (0 for none) and its profile, and the margin sized for."""

    season: float
    start: float  # time of the first profile bin
    width: float  # bin width
    profile: Sequence[float]  # mean load per bin, NaN where no sample fell
    cycles: int
    margin: float  # fraction of the forecast added
    points: int  # backtest points it was fitted on
    losses: tuple[tuple[float, float], ...] = ()  # (season, pinball loss per point) of each candidate tried
    means: Sequence[float] = ()  # S at each bin from bin ``first_mean`` on, worked out once
    first_mean: int = 0

    def with_means(self, since: float, until: float) -> Fit:
        """This fit with S worked out for every bin from ``since`` to ``until``: each evaluation then reads S
        at a handful of times for the price of an index."""
        if not self.season:
            return self
        w = self.width
        first = max(0, int((since - self.start) // w))
        n = math.ceil((until - self.start) / w)
        seasonal = self._seasonal
        means = array("d", [seasonal(self.start + (k + 0.5) * w) for k in range(first, max(first, n))])
        return Fit(self.season, self.start, w, self.profile, self.cycles, self.margin, self.points, self.losses,
                   means, first)

    def seasonal(self, t: float) -> float:
        """S(t): the mean load at ``t``'s phase over the last ``cycles`` recorded seasons before ``t`` (and
        before the fit: later phases come from the seasons before it), 0 without a season."""
        if not self.season:
            return 0.0
        k = int((t - self.start) // self.width) - self.first_mean
        means = self.means
        if 0 <= k < len(means):
            return means[k]
        return self._seasonal(t)

    def _seasonal(self, t: float) -> float:
        season = self.season
        prof, start, w = self.profile, self.start, self.width
        nb = len(prof)
        j = max(1, math.floor((t - start - nb * w) / season) + 1)  # the first season whose phase was recorded
        total, n = 0.0, 0
        for c in range(j, j + self.cycles):
            k = int((t - c * season - start) // w)
            if 0 <= k < nb:
                v = prof[k]
                if v == v:  # noqa: PLR0124 (not NaN, an empty bin; cheaper than math.isnan)
                    total += v
                    n += 1
        return total / n if n else 0.0

    def seasonal_max(self, t: float, a: float, c: float) -> float:
        """The highest S over ``(t + a, t + c]``, read at the bin edges inside it."""
        if not self.season:
            return 0.0
        best = self.seasonal(t + c)
        w = self.width
        edge = self.start + (math.floor((t + a - self.start) / w) + 1) * w
        seasonal = self.seasonal
        while edge < t + c:
            v = seasonal(edge)
            if v > best:  # noqa: PLR1730 (a comparison is cheaper than a call in this loop)
                best = v
            edge += w
        return best


def profile(times: list[float], prefix: list[float], start: float, stop: float, season: float,
             spans: Sequence[tuple[float, float]] = ((-math.inf, math.inf),)) -> array[float]:
    """Mean load per bin from ``start`` to ``stop`` (NaN where no sample fell), smoothed over a little of
    the season; ``prefix`` holds the running sums of the loads (one bisect per bin edge, not a pass over
    every sample). Only the bins whose smoothed window lies inside one of ``spans`` (the stretches of time
    the samples were read for) are worked out; the others are NaN, as if empty."""
    width, smooth = bin_width(season), smooth_bins(season)
    nb = max(0, math.ceil((stop - start) / width))
    nan = math.nan
    out = array("d", [nan]) * nb
    for a, b in spans:
        # bins k with start + max(0, k - smooth) * width >= a and start + min(nb, k + smooth + 1) * width <= b
        k0 = 0 if a <= start else max(0, math.ceil((a - start) / width) + smooth)
        k1 = nb if b >= start + nb * width else min(nb, math.floor((b - start) / width) - smooth)
        if k1 <= k0:
            continue
        lo_k, hi_k = max(0, k0 - smooth), min(nb, k1 + smooth)
        edges = [bisect_left(times, start + k * width) for k in range(lo_k, hi_k + 1)]
        for k in range(k0, k1):
            i = edges[max(0, k - smooth) - lo_k]
            h = edges[min(nb, k + smooth + 1) - lo_k]
            if h > i:
                out[k] = (prefix[h] - prefix[i]) / (h - i)
    return out


def window_max(times: list[float], loads: list[float], a: float, c: float) -> float | None:
    """The highest load in force over ``(a, c]``: the sample in force just after ``a`` and those up to ``c``;
    None when the samples do not reach ``c``."""
    if not times or times[-1] < c:
        return None
    i = max(0, bisect_right(times, a) - 1)
    j = bisect_right(times, c)
    return max(loads[i:j]) if j > i else loads[i]
