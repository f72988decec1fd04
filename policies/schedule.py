"""Scheduled floors: "at least 4 on weekdays 09:00-11:00". Called by `policies.engine.decide`; pure
(time zones come from the system's tz database, read once and cached by zoneinfo)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from policies.strategy_config import WEEKDAYS, ScheduleWindow

__all__ = ["floor_at", "window_active"]


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def window_active(window: ScheduleWindow, now: float) -> bool:
    """Whether ``now`` (epoch seconds) falls in the window, in the window's own time zone. A window whose
    end is before its start runs past midnight into the next day."""
    local = datetime.fromtimestamp(now, _zone(window.timezone))
    minute = local.hour * 60 + local.minute
    day = WEEKDAYS[local.weekday()]
    start, end = window.start_minute, window.end_minute
    if start < end:
        return day in window.days and start <= minute < end
    # past midnight: the evening part belongs to today, the morning part to the day before
    yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
    return (day in window.days and minute >= start) or (yesterday in window.days and minute < end)


def floor_at(windows: Sequence[ScheduleWindow], now: float) -> tuple[int, ScheduleWindow | None]:
    """The highest floor among the windows active at ``now`` and the window that sets it."""
    best, which = 0, None
    for w in windows:
        if w.min > best and window_active(w, now):
            best, which = w.min, w
    return best, which
