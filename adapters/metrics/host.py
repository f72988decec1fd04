"""``HostMetricsSource``: this machine's CPU, memory or load average (psutil), as a ``MetricsSource``.
Built by the daemon's wiring for policies with ``metric.source: host_cpu``; called by the sampler each tick.

Values are percentages so thresholds read the same for every kind: ``cpu`` is busy CPU time over the
window across all CPUs (100 = every CPU busy), ``memory`` is used memory (psutil's ``percent``),
``load`` is the 1-minute load average per logical CPU x 100 (100 = one runnable task per CPU).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Literal

import psutil

from adapters.metrics.window import DEFAULT_HORIZON, SampleWindow
from policies.types import Observation

__all__ = ["HostKind", "HostMetricsSource"]

logger = logging.getLogger(__name__)

HostKind = Literal["cpu", "memory", "load"]


def _busy_total() -> tuple[float, float]:
    """(busy, total) CPU seconds since boot, all CPUs; idle and iowait count as not busy."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t)  # guest time is already counted in user on Linux, but psutil keeps it separate
    total -= getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    return total - idle, total


class HostMetricsSource:
    def __init__(self, kind: HostKind = "cpu", horizon: float = DEFAULT_HORIZON) -> None:
        if kind not in ("cpu", "memory", "load"):
            raise ValueError(f"host metric kind must be cpu, memory or load, not {kind!r}")
        self.kind = kind
        self.name = f"host_{kind}"
        self._window = SampleWindow(horizon)
        self._lock = threading.Lock()
        # cumulative CPU counters at each query, to compute busy time over any window exactly
        self._counters: list[tuple[float, float, float]] = []
        if kind == "cpu":
            self._counters.append((time.time(), *_busy_total()))

    def _cpu(self, now: float, window: float) -> float:
        busy, total = _busy_total()
        with self._lock:
            if now - self._counters[-1][0] < 0.05:  # too soon after the baseline: measure a short interval
                time.sleep(0.1)
                now = time.time()
                busy, total = _busy_total()
            # the oldest counter reading inside the window (or the newest before it) is the baseline
            base = self._counters[-1]
            for reading in reversed(self._counters):
                base = reading
                if reading[0] <= now - window:
                    break
            self._counters.append((now, busy, total))
            self._counters = [c for c in self._counters if c[0] >= now - max(window, 1.0) * 4] or [self._counters[-1]]
        d_total = total - base[2]
        return 100.0 * (busy - base[1]) / d_total if d_total > 0 else 0.0

    def query(self, window: float) -> Observation:
        now = time.time()
        try:
            if self.kind == "cpu":
                value = self._cpu(now, window)
                self._window.add(now, value)
            else:
                if self.kind == "memory":
                    sample = float(psutil.virtual_memory().percent)
                else:
                    sample = os.getloadavg()[0] / (psutil.cpu_count() or 1) * 100.0
                self._window.add(now, sample)
                value = self._window.mean(now, window) or sample
        except (OSError, psutil.Error, RuntimeError) as exc:
            logger.warning("host metric failed", extra={"source": self.name, "error": str(exc)})
            return Observation(value=None, age=0.0, source=self.name, ok=False, error=f"{self.name}: {exc}")
        return Observation(value=round(value, 3), age=0.0, source=self.name, history=self._window.history())

    def close(self) -> None:
        return None
