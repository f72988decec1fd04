"""Forecast sizing: the fleet is sized for the margin over a seasonal forecast that would have cost least on
the recent load (the newsvendor rule, solved on the forecast's own errors), and a replica is kept while the
forecast says it will be needed again within ``keep``. Called by `policies.engine.decide`; pure (the fit is
remembered by its inputs, never by the clock).

The forecast of the load at ``t + s`` is ``level + S(t + s)``:
* ``S`` is the seasonal profile: the mean load at the same phase of the last ``cycles`` seasons (bins of a
  288th of the season, one to five minutes, smoothed over a 96th of it), or 0 without a season. Which season
  of ``seasons`` (or none) is used is chosen by the data at each refit: the one whose forecast of the
  highest load over ``keep`` had the least pinball loss (at the newsvendor quantile) over ``fit_window``;
  a season only when it beats none by ``SEASON_GAIN``, so noise never passes for a season;
* ``level`` follows drift: an exponential moving average (half-life ``level_halflife``) of the load minus
  ``S``. For a scale-out the forecast is never below the last reading, nor below the last reading's own
  excess over ``S`` carried along the season (a jump is assumed to stay);
* the margin: over the backtest of ``fit_window`` (what the forecast said ``boot`` ahead and the highest
  load that came), the fraction of the forecast that would have cost least, a replica-interval for each
  replica bought and ``penalty`` for each replica-unit of load turned away. With no on-prem floor this is
  the ``penalty / (penalty + 1)`` quantile of the actual-to-forecast ratio (``seasonal.newsvendor_quantile``); the
  floor makes most errors free (the load stays below on-prem), which only the cost itself shows.

Two horizons: a launch decided now serves from ``boot`` on, until the next evaluation's launches can, so the
scale-out level covers ``(boot, boot + interval]``. The scale-in level covers ``(0, keep]``: the forecast
over it and the highest excess over ``S`` of the last ``keep`` (noise that came may come back; the season
is known), so a replica likely to be needed again within ``keep`` is kept rather than churned, and a
scale-out buys for that horizon at once. The season and the margin are refitted every ``refit`` (on the
samples' own clock, at a phase within the period set by the policy's name: ``refit_phase``) from the samples
before that moment, so every evaluation between two refits reads the same fit: it is computed once and
remembered, keyed by the configuration, the refit time and a fingerprint of the samples it reads (their count,
first and last times and eight of their loads).
"""

from __future__ import annotations

import math
import zlib
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from itertools import accumulate

from policies.seasonal import Fit, bin_width, profile, quantile, smooth_bins, window_max
from policies.series import Series
from policies.sizing import Proposal, replicas_for
from policies.strategy_config import ForecastStrategy
from policies.units import format_duration as _format_duration

__all__ = [
    "MARGINS",
    "SEASON_GAIN",
    "best_margin",
    "clear_cache",
    "fit",
    "propose",
    "refit_moment",
    "refit_phase",
]

SEASON_GAIN = 0.05  # a season must cut the pinball loss by this fraction to be preferred to none
MIN_POINTS = 30  # fewer backtest points than this: no season and no margin yet (the forecast alone)
MAX_POINTS = 480  # backtest points per fit: every sample of the fit window, or an even subset of it
# one entry per policy between refits (a weekly profile is about 35 kB): room for a thousand policies
_CACHE_SIZE = 1024

# reasons name the same few durations every evaluation
format_duration = lru_cache(maxsize=256)(_format_duration)


_NO_FIT = Fit(0.0, 0.0, 60.0, (), 1, 0.0, 0)
_cache: OrderedDict[tuple[object, ...], tuple[ForecastStrategy, Fit]] = OrderedDict()


def clear_cache() -> None:
    """Forget remembered fits (tests that compare two runs in one process start each from nothing)."""
    _cache.clear()


def _interval(series: Series) -> float:
    """The spacing of the evaluations: the median gap of the last few samples (60 s without history)."""
    n = len(series)
    gaps = sorted(series.time(i) - series.time(i - 1) for i in range(max(1, n - 6), n))
    return gaps[len(gaps) // 2] if gaps else 60.0


def _ewma_step(level: float, x: float, dt: float, halflife: float) -> float:
    if halflife <= 0:
        return x
    return level + (1.0 - 0.5 ** (dt / halflife)) * (x - level)


def _pinball(errors: list[float], q: float, offset: float) -> float:
    return sum(q * (e - offset) if e >= offset else (q - 1.0) * (e - offset) for e in errors)


_Points = tuple[list[int], list[float], list[float]]


def _points(cfg: ForecastStrategy, times: list[float], loads: list[float], first: int, interval: float) -> _Points:
    """The backtest points, the same for every candidate season: every sample from ``first`` on (or an even
    subset, at most ``MAX_POINTS``) whose horizons have passed, with the highest load that came over its
    scale-out horizon ``(boot, boot + interval]`` and over ``keep``."""
    b, keep = float(cfg.boot), float(cfg.keep)
    idx: list[int] = []
    outs: list[float] = []
    keeps: list[float] = []
    if not times:
        return idx, outs, keeps
    last = times[-1]
    reach = max(keep, b + interval)
    stride = max(1, (len(times) - first) // MAX_POINTS)
    for i in range(first, len(times), stride):
        t = times[i]
        if last < t + reach:
            break
        idx.append(i)
        keeps.append(window_max(times, loads, t, t + keep) or 0.0)
        outs.append(window_max(times, loads, t + b, t + b + interval) or 0.0)
    return idx, outs, keeps


def _backtest(cfg: ForecastStrategy, model: Fit, times: list[float], loads: list[float], first: int,
              interval: float, points: _Points) -> tuple[list[tuple[float, float]], list[float]]:
    """At every backtest point: (the scale-out forecast, the highest load of its horizon), and the ratio of
    the highest load over ``keep`` to its forecast. One pass over the samples from the level's warm-up on."""
    b, keep, h = float(cfg.boot), float(cfg.keep), float(cfg.level_halflife)
    outs: list[tuple[float, float]] = []
    ratios: list[float] = []
    idx, actual_out, actual_keep = points
    if not idx:
        return outs, ratios
    warm = max(0, bisect_left(times, times[first] - 3 * h) if h > 0 else first)
    seasonal, seasonal_max = model._seasonal, model.seasonal_max
    flat = not model.season
    start, width, means, first_mean = model.start, model.width, model.means, model.first_mean
    n_means = len(means)
    level = 0.0
    prev_t = prev_dt = math.nan
    alpha = 1.0
    p, n_points = 0, len(idx)
    due = idx[0]
    for i in range(warm, idx[-1] + 1):
        t, x = times[i], loads[i]
        if flat:
            r = x
        else:  # Fit.seasonal, inlined: the hot loop of a refit
            k = int((t - start) // width) - first_mean
            r = x - (means[k] if 0 <= k < n_means else seasonal(t))
        if i == warm or h <= 0:
            level = r
        else:
            dt = t - prev_t
            if dt != prev_dt:  # the factor of _ewma_step, worked out once per spacing
                alpha, prev_dt = 1.0 - 0.5 ** (dt / h), dt
            level = level + alpha * (r - level)
        prev_t = t
        if i != due:
            continue
        if flat:
            f_out = max(x, max(r, level))
            f_keep = max(f_out, level)
        else:
            f_out = max(x, max(r, level) + seasonal_max(t, b, b + interval))
            f_keep = max(f_out, level + seasonal_max(t, 0.0, keep))
        outs.append((f_out, actual_out[p]))
        ratios.append(actual_keep[p] / f_keep if f_keep > 0 else 1.0)
        p += 1
        if p == n_points:
            break
        due = idx[p]
    return outs, ratios


# candidate margins, as a fraction of the forecast: the one with the least backtest cost is used
MARGINS = (-0.1, -0.05, 0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0)


def best_margin(outs: list[tuple[float, float]], cfg: ForecastStrategy) -> tuple[float, float]:
    """(the margin, its cost per point): the fraction added to the forecast that would have cost least over
    the backtest, a replica-interval for each replica bought and ``penalty`` for each replica-unit of load
    left unserved. Without the on-prem floor and with a continuous fleet this is the newsvendor quantile
    ``penalty / (penalty + 1)`` of the actual-to-forecast ratio; the floor makes most errors free (the load
    stays below on-prem), which only the cost itself shows."""
    if not outs:
        return 0.0, 0.0
    target, onprem, p = cfg.target / 100.0, cfg.onprem_replicas, cfg.penalty
    top = 1.0 + MARGINS[-1]
    floor = onprem * target
    # points where neither the load nor the largest margin reach past on-prem cost nothing at any margin
    live = [(f / target, a) for f, a in outs if f * top > floor or a > floor]
    best, best_cost = 0.0, math.inf
    ceil = math.ceil
    for m in MARGINS:
        k = 1.0 + m
        cost = 0.0
        for f, a in live:
            n = ceil(f * k - onprem - 1e-6)
            if n < 0:  # noqa: PLR1730 (a comparison is cheaper than a call in this loop)
                n = 0
            short = a - (onprem + n) * target
            cost += n + p * short if short > 0 else n
        if cost < best_cost - 1e-9:
            best, best_cost = m, cost
    return best, best_cost / len(outs)


def _fingerprint(series: Series, lo: int, hi: int) -> tuple[float, ...]:
    """Count, first and last times and eight readings of samples ``lo`` .. ``hi - 1``, and the ready-count
    changes up to the last of them (a reading's load is its value times the capacity then in force)."""
    if hi <= lo:
        return (0.0,)
    picks = sorted({lo + (hi - 1 - lo) * k // 7 for k in range(8)})
    return (float(hi - lo), series.time(lo), series.time(hi - 1), *(series.value(i) for i in picks),
            *series.ready_changes_until(series.time(hi - 1)))


def _horizon(cfg: ForecastStrategy, at: float, interval: float) -> tuple[float, float]:
    """(since, until): S is read from the backtest's first level (three half-lives before the fit window) to
    the horizons of the last evaluation before the next refit."""
    return (at - cfg.fit_window - 3 * cfg.level_halflife - interval,
            at + cfg.refit + cfg.keep + cfg.boot + 2 * interval)


def _spans(cfg: ForecastStrategy, at: float, interval: float, oldest: float) -> list[tuple[float, float]]:
    """The stretches of time a refit reads, merged, oldest first: the backtest's (from ``since`` to ``at``)
    and, for each candidate season, the samples behind the profile bins S reads over ``(since, until)``
    (``cycles`` seasons back, more where ``until`` passes a season beyond the profile, and the smoothing
    either side). A weekly candidate reads two stretches of a day and a bit, a week and two weeks back,
    rather than the whole fortnight."""
    since, until = _horizon(cfg, at, interval)
    want = [(since, at)]
    for p in cfg.seasons:
        start = at - cfg.fit_window - cfg.cycles * p
        if oldest > start:
            continue  # not a candidate (see _fit)
        w = bin_width(p)
        pad = (smooth_bins(p) + 2) * w
        ahead = max(0, math.floor((until - at) / p) + 1)  # seasons S may skip past the end of the profile
        for c in range(1, cfg.cycles + ahead + 1):
            want.append((max(start, since - c * p - pad), min(at, until - c * p + pad)))
    want.sort()
    out: list[tuple[float, float]] = []
    for a, b in want:
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def fit(cfg: ForecastStrategy, series: Series, at: float, interval: float) -> Fit:
    """The season and the margin from the samples before ``at`` (remembered: see the module)."""
    longest = max(cfg.seasons, default=0.0)
    lo_t = at - cfg.fit_window - cfg.cycles * longest - 300.0
    lo = series.index_at_or_after(lo_t)
    hi = series.index_at_or_after(at)
    # the configuration by identity: the entry holds it, so its id cannot be reused while the entry lives
    key = (id(cfg), at, interval, *_fingerprint(series, lo, hi))
    found = _cache.get(key)
    if found is not None and found[0] is cfg:
        _cache.move_to_end(key)
        return found[1]
    oldest = series.time(lo) if hi > lo else math.inf
    spans = _spans(cfg, at, interval, oldest)
    times: list[float] = []
    loads: list[float] = []
    for a, b in spans:
        i, j = max(lo, series.index_at_or_after(a)), min(hi, series.index_at_or_after(b))
        times += series.times(i, j)
        loads += series.loads(i, j)
    if hi - lo < 2:
        times, loads = [], []
    # the first and the last span reach the ends of what was read: samples beyond them are not there at all
    if spans:
        spans[0] = (-math.inf, spans[0][1])
        spans[-1] = (spans[-1][0], math.inf)
    result = _fit(cfg, times, loads, at, interval, oldest, spans)
    _cache[key] = (cfg, result)
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return result


def _fit(cfg: ForecastStrategy, times: list[float], loads: list[float], at: float, interval: float,
         oldest: float, spans: Sequence[tuple[float, float]]) -> Fit:
    if len(times) < 2:
        return _NO_FIT
    q = cfg.quantile
    prefix = list(accumulate(loads, initial=0.0))
    since, until = _horizon(cfg, at, interval)
    first = bisect_left(times, at - cfg.fit_window)
    points = _points(cfg, times, loads, first, interval)  # the same for every candidate
    # a season is a candidate once ``cycles`` of it are recorded before the fit window
    candidates = [0.0] + [p for p in cfg.seasons if oldest <= at - cfg.fit_window - cfg.cycles * p]
    best = _NO_FIT
    best_loss = math.inf
    best_outs: list[tuple[float, float]] = []
    points_used = 0
    losses = []
    for season in candidates:
        model = _NO_FIT
        if season:
            start = at - cfg.fit_window - cfg.cycles * season
            model = Fit(season, start, bin_width(season), profile(times, prefix, start, at, season, spans),
                        cfg.cycles, 0.0, 0).with_means(since, until)
        outs, ratios = _backtest(cfg, model, times, loads, first, interval, points)
        if len(ratios) < MIN_POINTS:
            return Fit(0.0, 0.0, 60.0, (), cfg.cycles, 0.0, len(ratios))
        logs = [math.log(max(r, 1e-6)) for r in ratios]
        loss = _pinball(logs, q, quantile(logs, q)) / len(logs)
        losses.append((season, loss))
        if loss < best_loss * (1.0 - SEASON_GAIN):
            best, best_loss, best_outs = model, loss, outs
            points_used = len(ratios)
    margin, _ = best_margin(best_outs, cfg)  # for the chosen season only
    return Fit(best.season, best.start, best.width, best.profile, best.cycles, margin, points_used,
               tuple(losses), best.means, best.first_mean)


def _level_and_recent(cfg: ForecastStrategy, model: Fit, series: Series) -> tuple[float, float]:
    """(the EWMA of load minus S over the last three half-lives, or the last residual with no half-life;
    the highest load minus S over the last ``keep``), from one pass over the samples."""
    n = len(series)
    h = float(cfg.level_halflife)
    start = series.window(max(3 * h, float(cfg.keep)))
    times = series.times(start, n)
    loads = series.loads(start, n)
    if model.season:
        seasonal = model.seasonal
        residuals = [x - seasonal(t) for t, x in zip(times, loads, strict=True)]
    else:
        residuals = loads
    since = series.now_t - cfg.keep
    recent = max(residuals[bisect_left(times, since):])
    if h <= 0:
        return residuals[-1], recent
    first = bisect_left(times, series.now_t - 3 * h)
    level = residuals[first]
    prev_dt, alpha = math.nan, 1.0
    for k in range(first + 1, len(times)):
        dt = times[k] - times[k - 1]
        if dt != prev_dt:  # the factor of _ewma_step, worked out once per spacing
            alpha, prev_dt = 1.0 - 0.5 ** (dt / h), dt
        level = level + alpha * (residuals[k] - level)
    return level, recent


def refit_phase(name: str, refit: float) -> float:
    """Where in each ``refit`` period a policy refits: whole seconds from the CRC-32 of its name, the same in
    every process (the daemon, the simulator, a restarted daemon), so that policies sharing a ``refit`` spread
    their refits over the period instead of all refitting in one tick."""
    return float(zlib.crc32(name.encode()) % max(1, int(refit)))


def refit_moment(now: float, refit: float, phase: float) -> float:
    """The last refit moment at or before ``now``: ``phase`` plus a multiple of ``refit``."""
    return math.floor((now - phase) / refit) * refit + phase


def propose(cfg: ForecastStrategy, series: Series, active: int, label: str, phase: float = 0.0) -> Proposal:
    now = series.now_t
    interval = _interval(series)
    at = refit_moment(now, cfg.refit, phase)
    model = fit(cfg, series, at, interval)
    n = len(series)
    load = series.load(n - 1)
    residual = load - model.seasonal(now)
    level, recent = _level_and_recent(cfg, model, series)
    b = float(cfg.boot)
    f_out = max(load, max(residual, level) + model.seasonal_max(now, b, b + interval))
    out_load = f_out * (1.0 + model.margin)
    # hysteresis: the highest excess over the season of the last ``keep`` may come back within ``keep``
    keep_load = max(f_out, max(level, recent) + model.seasonal_max(now, 0.0, cfg.keep)) * (1.0 + model.margin)
    target = cfg.target / 100.0
    out_need = replicas_for(out_load, target, cfg.onprem_replicas)
    keep_need = max(out_need, replicas_for(keep_load, target, cfg.onprem_replicas))
    season = format_duration(model.season) if model.season else "none"
    details: dict[str, float | str] = {
        "load": round(load, 3), "level": round(level, 3), "season": season, "quantile": round(cfg.quantile, 4),
        "forecast_out": round(out_load, 3), "forecast_keep": round(keep_load, 3), "need": out_need,
        "hold_need": keep_need, "target": cfg.target}
    q = f"p{100 * cfg.quantile:.0f}"
    what = (f"{label} {series.now_value:.1f}% = load {load:.1f} replica-units; season {season}; {q} of the load "
            f"{format_duration(b)} ahead is {out_load:.1f}")
    if out_need > active:
        return Proposal(keep_need, f"{what}, needs {out_need}; buying {keep_need} for the next "
                        f"{format_duration(cfg.keep)} ({q} {keep_load:.1f})", details)
    if keep_need < active:
        return Proposal(keep_need, f"{what}; {q} over the next {format_duration(cfg.keep)} is {keep_load:.1f}, "
                        f"{keep_need} suffice", details)
    return Proposal(active, f"{what}; keeping {active}: {q} over the next {format_duration(cfg.keep)} is "
                    f"{keep_load:.1f}", details)
