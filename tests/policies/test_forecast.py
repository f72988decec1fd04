"""The forecast strategy (policies/forecast.py): the newsvendor rule, margins that grow with the penalty,
seasonality found on a seasonal load and not on noise, and a spike that recurs provisioned before it is due."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import forecast, seasonal
from policies.engine import decide, history_span
from policies.loader import load_policies
from policies.series import Series
from policies.strategy_config import ForecastStrategy
from policies.types import Direction, Fleet, Observation
from tests.policies.enginekit import NOW, policy

HOUR = 3600.0
ROOT = Path(__file__).resolve().parents[2]


def cfg(**over: object) -> ForecastStrategy:
    base: dict[str, object] = {"type": "forecast", "onprem_replicas": 10, "seasons": ["1h"], "cycles": 2,
                               "fit_window": "2h", "refit": "30m", "keep": "5m"}
    base.update(over)
    return ForecastStrategy.model_validate(base)


def series_of(loads: list[float], step: float = 60.0, end: float = NOW, onprem: float = 10.0) -> Series:
    """Loads (replica units) as utilisation of on-prem alone (no cloud replica ready), the last one now."""
    n = len(loads)
    hist = [(end - (n - 1 - i) * step, 100.0 * x / onprem) for i, x in enumerate(loads[:-1])]
    return Series(hist, end, 100.0 * loads[-1] / onprem, (), 0, onprem)


def hourly_spike(hours: int, rng: random.Random, noise: float = 0.3) -> list[float]:
    """Per-minute load: 6 replica units, and 16 for ten minutes from minute 40 of every hour."""
    return [(16.0 if 40 <= m % 60 < 50 else 6.0) + rng.gauss(0, noise) for m in range(hours * 60)]


def test_the_newsvendor_quantile_is_penalty_over_penalty_plus_cost() -> None:
    assert seasonal.newsvendor_quantile(10) == pytest.approx(10 / 11)
    assert seasonal.newsvendor_quantile(3, cost=1) == pytest.approx(0.75)
    assert cfg(penalty=10).quantile == pytest.approx(10 / 11)


@pytest.mark.parametrize(("penalty", "margin"), [(10, 0.1), (3, 0.0), (40, 0.25)])
def test_the_fitted_margin_is_the_newsvendor_quantile_without_an_onprem_floor(penalty: float, margin: float) -> None:
    # forecasts of 1000 replica units (a near-continuous fleet) and on-prem almost nothing: the cost-minimising
    # margin is the penalty/(penalty+1) quantile of actual/forecast - 1: 80% at 0, 12% at +10%, 8% at +25%
    outs = [(1000.0, 1000.0)] * 80 + [(1000.0, 1100.0)] * 12 + [(1000.0, 1250.0)] * 8
    got, _ = forecast.best_margin(outs, cfg(penalty=penalty, onprem_replicas=0.001))
    assert got == margin


@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=60), st.floats(0.01, 0.99),
       st.floats(0.01, 0.99))
def test_quantiles_are_ordered(values: list[float], q1: float, q2: float) -> None:
    lo, hi = sorted((q1, q2))
    assert seasonal.quantile(values, lo) <= seasonal.quantile(values, hi)
    assert min(values) <= seasonal.quantile(values, lo) <= max(values)


@given(st.lists(st.tuples(st.floats(0, 40), st.floats(0, 40)), min_size=1, max_size=40),
       st.floats(0.5, 50), st.floats(0.5, 50))
def test_a_higher_penalty_never_fits_a_smaller_margin(outs: list[tuple[float, float]], p1: float, p2: float) -> None:
    lo, hi = sorted((p1, p2))
    assert forecast.best_margin(outs, cfg(penalty=lo))[0] <= forecast.best_margin(outs, cfg(penalty=hi))[0]


def test_a_season_is_found_on_a_seasonal_load() -> None:
    forecast.clear_cache()
    s = series_of(hourly_spike(5, random.Random(1)), end=math.floor(NOW / 1800) * 1800)
    got = forecast.fit(cfg(), s, s.now_t, 60.0)
    assert got.season == HOUR, got.losses
    assert dict(got.losses)[HOUR] < dict(got.losses)[0.0]


def test_no_season_is_found_on_noise() -> None:
    forecast.clear_cache()
    rng = random.Random(2)
    s = series_of([8.0 + rng.gauss(0, 2) for _ in range(5 * 60)], end=math.floor(NOW / 1800) * 1800)
    got = forecast.fit(cfg(), s, s.now_t, 60.0)
    assert got.season == 0.0
    assert len(got.losses) == 2  # the hourly season was tried, and lost


def test_a_recurring_spike_is_provisioned_before_it_is_due() -> None:
    forecast.clear_cache()
    loads = hourly_spike(5, random.Random(3), noise=0.1)
    # now is minute 38 of the hour: the spike comes at 40; a replica takes 2 minutes to boot
    end = math.floor(NOW / HOUR) * HOUR + 38 * 60
    loads = loads[: len(loads) - 60 + 39]
    p = policy(strategy=cfg().model_dump(mode="json"), cooldown={"scale_out": "0s", "scale_in": "0s"},
               min_lifetime="0s", replicas={"max": 20, "max_step_up": 20})
    s = series_of(loads, end=end)
    obs = Observation(value=s.now_value, age=0.0, source="workload_cpu", history=[(s.time(i), s.value(i))
                                                                                 for i in range(len(s) - 1)])
    d = decide(p, obs, Fleet(active=0, ready=0), end)
    assert d.direction == Direction.OUT and d.desired >= 6, d.reason
    assert "season 1h" in d.reason


def test_history_span_covers_the_fit() -> None:
    c = cfg(seasons=["1d", "1w"], cycles=2, fit_window="1d", refit="6h", level_halflife="5m")
    span = history_span(policy(strategy=c.model_dump(mode="json")))
    assert span >= 2 * 7 * 86400 + 86400 + 6 * HOUR


@pytest.mark.parametrize(("over", "message"), [
    ({"keep": "1m", "boot": "2m"}, "must be at least boot (2m)"),
    ({"seasons": ["30m"]}, "too short"),
    ({"seasons": ["1d", "1d"]}, "listed twice"),
    ({"penalty": 0}, "greater than 0"),
])
def test_bad_settings_are_refused(over: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        cfg(**over)


def test_a_bad_forecast_field_is_reported_at_its_line(tmp_path: Path) -> None:
    text = (ROOT / "deploy/policies.d/web.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    at = lines.index("  keep: 5m                                  # keep what the next 5 minutes are likely to need")
    lines[at] = "  keep: 1m"
    path = tmp_path / "web.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    problems = [str(p) for p in load_policies([str(path)]).problems]
    assert problems == [(f"{path}:{at + 1}:9: strategy.keep: must be at least boot (2m): a replica released "
                         "sooner than that cannot be back in time, got 1m")]


def test_policies_refit_at_phases_set_by_their_names_spread_over_the_period() -> None:
    six_hours = 6 * HOUR
    assert forecast.refit_phase("web", six_hours) == forecast.refit_phase("web", six_hours)  # every process
    assert forecast.refit_moment(1000.0, 600.0, 0.0) == 600.0
    assert forecast.refit_moment(1000.0, 600.0, 450.0) == 450.0
    assert forecast.refit_moment(1100.0, 600.0, 450.0) == 1050.0
    # 500 policies sharing refit: 6h, evaluated every 15 s: without phases all 500 refit in one tick
    phases = [forecast.refit_phase(f"policy-{i}", six_hours) for i in range(500)]
    assert all(0 <= p < six_hours for p in phases)
    per_tick: dict[int, int] = {}
    for p in phases:
        per_tick[int(p // 15)] = per_tick.get(int(p // 15), 0) + 1
    assert max(per_tick.values()) <= 3, max(per_tick.values())


def test_decide_fits_at_the_policys_own_refit_moment() -> None:
    rng = random.Random(4)
    loads = hourly_spike(5, rng)
    end = math.floor(NOW / 1800) * 1800 + 25 * 60
    s = series_of(loads, end=end)
    obs = Observation(value=s.now_value, age=0.0, source="workload_cpu", history=[(s.time(i), s.value(i))
                                                                                 for i in range(len(s) - 1)])
    moments = {}
    for name in ("web", "api", "shop"):
        forecast.clear_cache()
        p = policy(name=name, strategy=cfg().model_dump(mode="json"))
        decide(p, obs, Fleet(active=0, ready=0), end)
        [key] = forecast._cache  # one fit, keyed by (configuration, refit moment, ...)
        moments[name] = key[1]
        assert moments[name] == forecast.refit_moment(end, 1800.0, forecast.refit_phase(name, 1800.0))
        assert end - 1800 < moments[name] <= end
    assert len(set(moments.values())) == 3, moments
