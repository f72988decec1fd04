"""Recent (timestamp, value) samples of one metrics source: the mean over a window and the history that
goes into ``Observation.history``. Used by the host, Docker and Prometheus metrics sources."""

from __future__ import annotations

import threading
from collections import deque

__all__ = ["DEFAULT_HORIZON", "SampleWindow"]

# How far back a source's own history reaches. Smoothing and volatility need up to an hour; seasonal
# (predictive) history of days comes from the state store's metric samples, not from here.
DEFAULT_HORIZON = 3600.0


class SampleWindow:
    def __init__(self, horizon: float = DEFAULT_HORIZON, maxlen: int = 20_000) -> None:
        self.horizon = horizon
        self._samples: deque[tuple[float, float]] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, at: float, value: float) -> None:
        with self._lock:
            if self._samples and at < self._samples[-1][0]:
                return  # clocks do not run backwards for us: keep history ordered
            self._samples.append((at, value))
            while self._samples and self._samples[0][0] < at - self.horizon:
                self._samples.popleft()

    def mean(self, now: float, window: float) -> float | None:
        """Mean of the samples taken in the last ``window`` seconds (the newest one at least)."""
        with self._lock:
            if not self._samples:
                return None
            values = [v for t, v in self._samples if t >= now - window] or [self._samples[-1][1]]
        return sum(values) / len(values)

    def history(self) -> tuple[tuple[float, float], ...]:
        """Samples oldest first, without the newest (which is the observation itself)."""
        with self._lock:
            return tuple(self._samples)[:-1]

    def __len__(self) -> int:
        return len(self._samples)
