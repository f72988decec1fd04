"""Reading an observation's history as a time series: samples by time, and utilisation turned into load.

Used by the strategies (`threshold.py`, `target.py`, `predictive.py`). Pure and allocation-light: the
simulator calls these once per simulated minute, so they touch only the samples a window needs (bisect to
the window, then walk it) rather than the whole history.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from operator import itemgetter

from policies.history import HistoryView

__all__ = ["Series"]

_first = itemgetter(0)


class Series:
    """The samples of one observation, oldest first, with the current reading as the last sample, and
    the load each one stood for.

    Load is in replica units: a utilisation of ``u`` percent while ``ready`` replicas served, with on-prem
    worth ``onprem`` replicas, is ``u / 100 * (onprem + ready)``. ``ready_history`` gives ``ready`` at each
    sample's time; without it the current count is assumed throughout.

    The samples are read as two columns (times, values): a `policies.history.HistoryView` (what the daemon
    and the simulator pass) is read in place, any other sequence of pairs is split into columns first.
    """

    __slots__ = ("_lo", "_n", "_ready_hist", "_ready_now", "_t", "_v", "now_t", "now_value", "onprem")

    def __init__(self, history: Sequence[tuple[float, float]], now_t: float, now_value: float,
                 ready_history: Sequence[tuple[float, int]], ready_now: int, onprem: float = 0.0) -> None:
        if isinstance(history, HistoryView):
            self._t: Sequence[float] = history.times
            self._v: Sequence[float] = history.values
            self._lo = history.lo
        else:
            self._t = [p[0] for p in history]
            self._v = [p[1] for p in history]
            self._lo = 0
        self._n = len(history)
        self._ready_hist = ready_history
        self._ready_now = ready_now
        self.onprem = onprem
        self.now_t = now_t
        self.now_value = now_value

    def __len__(self) -> int:
        return self._n + 1

    def time(self, i: int) -> float:
        return self.now_t if i == self._n else self._t[self._lo + i]

    def value(self, i: int) -> float:
        return self.now_value if i == self._n else self._v[self._lo + i]

    @property
    def oldest(self) -> float:
        return self._t[self._lo] if self._n else self.now_t

    def index_at_or_after(self, t: float) -> int:
        """The first sample at or after ``t`` (``len(self)`` if none)."""
        if t > self.now_t:
            return self._n + 1
        lo = self._lo
        return bisect_left(self._t, t, lo, lo + self._n) - lo

    def index_at_or_before(self, t: float) -> int:
        """The last sample at or before ``t`` (-1 if none): the value in force at ``t``."""
        if t >= self.now_t:
            return self._n
        lo = self._lo
        return bisect_right(self._t, t, lo, lo + self._n) - 1 - lo

    def ready_at(self, t: float) -> int:
        rh = self._ready_hist
        if not rh or t >= rh[-1][0]:
            return rh[-1][1] if rh else self._ready_now
        i = bisect_right(rh, t, key=_first) - 1
        return rh[i][1] if i >= 0 else rh[0][1]

    def ready_changes_until(self, t: float) -> tuple[float, float, float]:
        """(how many ready-count changes there were up to ``t``, the time and count of the last of them): with
        the readings, what the loads up to ``t`` depend on."""
        rh = self._ready_hist
        j = bisect_right(rh, t, key=_first) if rh else 0
        if j:
            return float(j), rh[j - 1][0], float(rh[j - 1][1])
        return 0.0, 0.0, float(rh[0][1] if rh else self._ready_now)

    def load(self, i: int) -> float:
        if i == self._n:
            return self.now_value / 100.0 * (self.onprem + self._ready_now)
        k = self._lo + i
        return self._v[k] / 100.0 * (self.onprem + self.ready_at(self._t[k]))

    def times(self, start: int, stop: int) -> list[float]:
        """Times of samples ``start`` .. ``stop - 1``."""
        n, lo = self._n, self._lo
        out = list(self._t[lo + start:lo + min(stop, n)])
        if stop > n:
            out.append(self.now_t)
        return out

    def loads(self, start: int, stop: int) -> list[float]:
        """Loads of samples ``start`` .. ``stop - 1``: one comprehension per stretch of constant ready
        count (a window holds a few at most), rather than a ready-count search for every sample."""
        out: list[float] = []
        if start >= stop:
            return out
        ts, vs, lo, n, onprem = self._t, self._v, self._lo, self._n, self.onprem
        rh = self._ready_hist
        last = lo + min(stop, n)
        i = lo + start
        if not rh:
            cap = (onprem + self._ready_now) / 100.0
            out = [v * cap for v in vs[i:last]]
        elif i < last:
            inf = float("inf")
            nr = len(rh)
            j = max(bisect_right(rh, ts[i], key=_first) - 1, 0)
            cap = (onprem + rh[j][1]) / 100.0
            next_change = rh[j + 1][0] if j + 1 < nr else inf
            while True:
                k = last if next_change == inf else bisect_left(ts, next_change, i, last)
                if k > i:
                    out += [v * cap for v in vs[i:k]]
                    i = k
                if i >= last:
                    break
                t = ts[i]
                while j + 1 < nr and rh[j + 1][0] <= t:
                    j += 1
                cap = (onprem + rh[j][1]) / 100.0
                next_change = rh[j + 1][0] if j + 1 < nr else inf
        if stop > n:
            out.append(self.now_value / 100.0 * (onprem + self._ready_now))
        return out

    def window(self, seconds: float) -> int:
        """Index of the first sample inside the last ``seconds`` (the current reading always is)."""
        return min(self.index_at_or_after(self.now_t - seconds), self._n)

    def max_load(self, start: int, stop: int) -> float:
        """The highest load among samples ``start`` .. ``stop - 1`` (0.0 if none), without building the
        list: the hot path of the simulator."""
        if start >= stop:
            return 0.0
        ts, vs, lo, n, onprem = self._t, self._v, self._lo, self._n, self.onprem
        rh = self._ready_hist
        last = lo + min(stop, n)
        i = lo + start
        best = self.now_value / 100.0 * (onprem + self._ready_now) if stop > n else 0.0
        if i >= last:
            return best
        if not rh:
            top = max(vs[i:last]) * (onprem + self._ready_now) / 100.0
            return max(best, top)
        inf = float("inf")
        nr = len(rh)
        j = max(bisect_right(rh, ts[i], key=_first) - 1, 0)
        next_change = rh[j + 1][0] if j + 1 < nr else inf
        if last - i <= 24:
            # a short window (the usual): one pass, following the ready count along
            cap = (onprem + rh[j][1]) / 100.0
            top = 0.0
            for t, v in zip(ts[i:last], vs[i:last], strict=True):
                if t >= next_change:
                    while j + 1 < nr and rh[j + 1][0] <= t:
                        j += 1
                    cap = (onprem + rh[j][1]) / 100.0
                    next_change = rh[j + 1][0] if j + 1 < nr else inf
                if v * cap > top:  # noqa: PLR1730 (a comparison is cheaper than a call in this loop)
                    top = v * cap
            return max(top, best)
        while i < last:
            k = last if next_change == inf else bisect_left(ts, next_change, i, last)
            if k > i:
                top = max(vs[i:k]) * (onprem + rh[j][1]) / 100.0
                best = max(best, top)
                i = k
            if i >= last:
                break
            t = ts[i]
            while j + 1 < nr and rh[j + 1][0] <= t:
                j += 1
            next_change = rh[j + 1][0] if j + 1 < nr else inf
        return best
