"""The `strategy:` and `schedule:` blocks of a policy file as pydantic models.

`policies/model.py` embeds ``StrategyConfig`` (a union discriminated on ``type``) and ``ScheduleWindow``;
the strategies in `policies/threshold.py`, `target.py`, `predictive.py` and `schedule.py` read them.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from policies.units import Duration, format_duration

__all__ = [
    "WEEKDAYS",
    "ForecastStrategy",
    "PredictiveStrategy",
    "ScheduleWindow",
    "Spare",
    "StrategyConfig",
    "TargetStrategy",
    "ThresholdStrategy",
    "Weekday",
]

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Percent = Annotated[float, Field(gt=0, le=1000)]
PositiveDuration = Annotated[Duration, Field(gt=0)]
NonNegativeDuration = Annotated[Duration, Field(ge=0)]


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Spare(_Block):
    """Extra replicas held while demand is volatile: spikes arrive faster than a replica boots, so a
    spare bought while the load is jumpy serves the next spike's first minutes."""

    window: PositiveDuration = Field(default=3600.0, description="volatility is measured over this window")
    per_stdev: float = Field(default=1.0, ge=0, le=10,
                             description="spare replicas per standard deviation of the load (in replicas)")
    max: int = Field(default=2, ge=0, le=100, description="never more spare replicas than this")


class _Reactive(_Block):
    """Parameters shared by target tracking and predictive (which falls back on target tracking)."""

    target: float = Field(gt=0, le=100, description="utilisation percent of the pooled capacity to aim for")
    onprem_replicas: float = Field(
        default=10.0, gt=0, le=100000,
        description="on-prem capacity in replica equivalents (how many cloud replicas it is worth)")
    tolerance: float = Field(default=0.05, ge=0, lt=1,
                             description="ignore a deviation from target smaller than this fraction")
    smoothing: NonNegativeDuration = Field(
        default=0.0, description="half-life of the moving average that scale-in decisions use (0 = raw)")
    scale_in_window: NonNegativeDuration = Field(
        default=600.0, description="scale in only to the highest need seen over this window")
    spare: Spare | None = Field(default=None, description="extra replicas while the load is volatile")


class ThresholdStrategy(_Block):
    """Add ``step_out`` replicas when utilisation stays above ``scale_out_above`` for ``sustained_out``;
    remove ``step_in`` when it stays below ``scale_in_below`` for ``sustained_in``."""

    type: Literal["threshold"] = Field(description="threshold: step out above one line, in below another")
    scale_out_above: Percent = Field(description="the metric's value above which replicas are added: CPU percent "
                                     "(host_cpu, workload_cpu), sessions or queued requests (haproxy), or "
                                     "the query's value (prometheus)")
    scale_in_below: float = Field(ge=0, le=1000, description="the metric's value below which replicas are "
                                  "removed; must be below scale_out_above")
    sustained_out: NonNegativeDuration = Field(default=120.0, description="how long the metric must stay above "
                                               "scale_out_above before a scale-out")
    sustained_in: NonNegativeDuration = Field(default=600.0, description="how long the metric must stay below "
                                              "scale_in_below before a scale-in")
    step_out: int = Field(default=1, ge=1, le=1000, description="replicas added per scale-out")
    step_in: int = Field(default=1, ge=1, le=1000, description="replicas removed per scale-in")

    @field_validator("scale_in_below")
    @classmethod
    def _hysteresis(cls, value: float, info: ValidationInfo) -> float:
        above = info.data.get("scale_out_above")
        if above is not None and value >= above:
            raise ValueError(
                f"must be below scale_out_above ({above:g}), otherwise the fleet flaps: "
                f"got {value:g} >= {above:g}")
        return value


class TargetStrategy(_Reactive):
    """Size the fleet so the pooled utilisation sits at ``target`` percent."""

    type: Literal["target"] = Field(description="target: size the fleet so utilisation sits at target")


def _season_list(value: object) -> object:
    # one season or a list of candidates; a scalar is the one-candidate list
    return value if isinstance(value, (list, tuple)) else [value]


class PredictiveStrategy(_Reactive):
    """Target tracking plus a seasonal forecast: a rise that followed this moment in every one of the last
    ``cycles`` seasons is provisioned ``lookahead`` before it is due. ``season`` may list candidates
    (``[1h, 1d, 1w]``); each is used once ``cycles`` of it are recorded, and the largest agreed rise wins."""

    type: Literal["predictive"] = Field(description="predictive: target tracking plus recorded seasonal rises")
    season: Annotated[tuple[PositiveDuration, ...], BeforeValidator(_season_list), Field(min_length=1, max_length=4)] = (
        Field(default=(86400.0,), description="length of the recurring pattern, or a list of candidates"))
    cycles: int = Field(default=3, ge=1, le=14, description="how many past seasons must all show a rise")
    lookahead: PositiveDuration = Field(default=300.0, description="provision a recorded rise this long before it is due")

    @field_validator("season")
    @classmethod
    def _long_enough(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        for s in value:
            if s < 600:
                raise ValueError(f"a season of {format_duration(s)} is too short to be a pattern (at least 10m)")
        if len(set(value)) != len(value):
            raise ValueError("a season is listed twice")
        return value

    @field_validator("lookahead")
    @classmethod
    def _lookahead_within_season(cls, value: float, info: ValidationInfo) -> float:
        seasons = info.data.get("season")
        if seasons and value >= min(seasons):
            raise ValueError(f"must be shorter than the shortest season ({format_duration(min(seasons))}), "
                             f"got {format_duration(value)}")
        return value


class ForecastStrategy(_Block):
    """Size the fleet for a forecast of the load ``boot`` ahead: a season found in the data (one of
    ``seasons``, or none), a level that follows drift, and the margin over the forecast that would have cost
    least on the last ``fit_window`` (the newsvendor rule, ``penalty / (penalty + 1)``, on the forecast's own
    errors); a replica is kept while the forecast says it will be needed within ``keep``."""

    type: Literal["forecast"] = Field(description="forecast: size for a seasonal forecast plus the margin "
                                                  "that minimises the expected cost")
    onprem_replicas: float = Field(
        default=10.0, gt=0, le=100000,
        description="on-prem capacity in replica equivalents (how many cloud replicas it is worth)")
    target: float = Field(default=100.0, gt=0, le=100,
                          description="utilisation percent of the pooled capacity counted as full")
    penalty: float = Field(default=10.0, gt=0, le=10000,
                           description="cost of one replica-hour of load turned away, in replica-hours: what "
                                       "the margin is fitted against (the newsvendor quantile "
                                       "penalty / (penalty + 1))")
    boot: PositiveDuration = Field(default=120.0, description="launch to serving: how far ahead a launch must "
                                                               "be decided")
    keep: PositiveDuration = Field(default=300.0, description="a replica is kept while the forecast says it "
                                                               "will be needed within this horizon; a scale-out "
                                                               "buys for it too")
    seasons: Annotated[tuple[PositiveDuration, ...], BeforeValidator(_season_list), Field(max_length=4)] = Field(
        default=(3600.0, 86400.0, 604800.0),
        description="candidate season lengths; the one whose forecast did best on recent data is used, or "
                    "none ([] for none)")
    cycles: int = Field(default=2, ge=1, le=8, description="past seasons averaged into the seasonal profile")
    level_halflife: NonNegativeDuration = Field(
        default=300.0, description="half-life of the level that follows drift (0 = the last reading)")
    fit_window: PositiveDuration = Field(default=86400.0, description="recent history the season is chosen "
                                                                      "and the margin fitted on")
    refit: PositiveDuration = Field(default=21600.0, description="how often the season and the margin are "
                                                                 "refitted (at every multiple of it on the "
                                                                 "samples' clock)")

    @field_validator("seasons")
    @classmethod
    def _seasons(cls, value: tuple[float, ...], info: ValidationInfo) -> tuple[float, ...]:
        for s in value:
            if s < 3600:
                raise ValueError(f"a season of {format_duration(s)} is too short (at least 1h)")
        if len(set(value)) != len(value):
            raise ValueError("a season is listed twice")
        return tuple(sorted(value))

    @field_validator("keep")
    @classmethod
    def _keep(cls, value: float, info: ValidationInfo) -> float:
        boot = info.data.get("boot")
        if boot is not None and value < boot:
            raise ValueError(f"must be at least boot ({format_duration(boot)}): a replica released sooner "
                             f"than that cannot be back in time, got {format_duration(value)}")
        return value

    @property
    def quantile(self) -> float:
        """The newsvendor quantile: hold the k-th replica while the chance it is needed exceeds its cost
        over the cost of the load it would leave unserved."""
        return self.penalty / (self.penalty + 1.0)


StrategyConfig = Annotated[
    ThresholdStrategy | TargetStrategy | PredictiveStrategy | ForecastStrategy,
    Field(discriminator="type"),
]

_CLOCK = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")


def _minutes(text: str) -> int:
    m = _CLOCK.match(text)
    if not m or (m.group(1) == "24" and m.group(2) != "00"):
        raise ValueError(f"'{text}' is not a time of day: write HH:MM, 00:00 to 24:00")
    return int(m.group(1)) * 60 + int(m.group(2))


class ScheduleWindow(_Block):
    """A floor: at least ``min`` replicas on ``days`` from ``start`` to ``end`` (local time in ``timezone``).
    An ``end`` before ``start`` crosses midnight; the day named is the day the window starts."""

    days: tuple[Weekday, ...] = Field(default=WEEKDAYS, min_length=1,
                                      description="days the window starts on: mon tue wed thu fri sat sun")
    start: str = Field(description="local start time, quoted HH:MM, e.g. '09:00'")
    end: str = Field(description="local end time, quoted HH:MM (24:00 for midnight); before start crosses midnight")
    min: int = Field(ge=0, le=100000, description="at least this many cloud replicas during the window")
    timezone: str = Field(default="UTC", description="IANA time zone of start and end, e.g. Asia/Shanghai")

    @field_validator("days")
    @classmethod
    def _unique_days(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        dupes = sorted({d for d in value if value.count(d) > 1})
        if dupes:
            raise ValueError(f"day listed twice: {', '.join(dupes)}")
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _quoted(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted 09:00 as the base-60 number 540; say how to write it instead
        # (a ValueError, not a TypeError: pydantic turns only ValueErrors into field problems)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError("expected a time of day in quotes, like '09:00' (unquoted, YAML read a number)")  # noqa: TRY004
        return value

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str, info: ValidationInfo) -> str:
        if _minutes(value) == 1440 and info.field_name == "start":
            raise ValueError("a window starts at 00:00 at the latest; 24:00 is only an end")
        return value

    @field_validator("end")
    @classmethod
    def _not_empty(cls, value: str, info: ValidationInfo) -> str:
        start = info.data.get("start")
        if start is not None and _CLOCK.match(start) and _minutes(start) == _minutes(value):
            raise ValueError(f"end equals start ({start}): the window would be empty "
                             "(for all day write start: '00:00', end: '24:00')")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{value}' (use an IANA name such as UTC or Europe/Paris)")
        return value

    @cached_property
    def start_minute(self) -> int:
        return _minutes(self.start)

    @cached_property
    def end_minute(self) -> int:
        return _minutes(self.end)
