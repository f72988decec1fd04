"""A policy's recent samples kept compact, and read without copying them.

`History` holds (time, value) samples, oldest first, in two ``array('d')`` columns (16 bytes a sample, against
about 120 for a deque of tuples) and drops those older than its span as new ones arrive. `History.view` hands
out a `HistoryView`: a read-only window over the columns, made in constant time (a bisect), which the engine's
`policies.series.Series` reads in place. The daemon's runtime (controller/loop/tick.py) and the simulator
(controller/sim/simulator.py) both keep their samples in one, so the strategy sees the same history from
either.

Views stay valid while the history grows: the columns are only ever appended to; dropping old samples moves
a start index, and once the dropped part is a quarter of the columns they are replaced by fresh copies of the
kept part (never changed in place), so a view taken before still reads the samples it was given. A lock
makes append, prune and view atomic for a history shared by a sampling thread and an evaluating one.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import overload

__all__ = ["History", "HistoryView"]


class HistoryView(Sequence[tuple[float, float]]):
    """Samples ``lo`` .. ``hi - 1`` of two columns, as a sequence of (time, value) pairs. `times` and
    `values` are the columns themselves (read-only by convention), ``lo`` and ``hi`` the bounds in them."""

    __slots__ = ("hi", "lo", "times", "values")

    def __init__(self, times: array[float], values: array[float], lo: int, hi: int) -> None:
        self.times, self.values, self.lo, self.hi = times, values, lo, hi

    def __len__(self) -> int:
        return self.hi - self.lo

    @overload
    def __getitem__(self, i: int) -> tuple[float, float]: ...

    @overload
    def __getitem__(self, i: slice) -> list[tuple[float, float]]: ...

    def __getitem__(self, i: int | slice) -> tuple[float, float] | list[tuple[float, float]]:
        if isinstance(i, slice):
            start, stop, step = i.indices(self.hi - self.lo)
            lo = self.lo
            return [(self.times[lo + k], self.values[lo + k]) for k in range(start, stop, step)]
        n = self.hi - self.lo
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("history index out of range")
        return self.times[self.lo + i], self.values[self.lo + i]

    def __iter__(self) -> Iterator[tuple[float, float]]:
        lo, hi = self.lo, self.hi
        return zip(self.times[lo:hi], self.values[lo:hi], strict=True)

    def __repr__(self) -> str:
        return f"HistoryView({len(self)} samples)"


class History:
    """(time, value) samples in time order, the last ``span`` seconds of them (at most ``maxlen``)."""

    __slots__ = ("_lock", "_start", "_times", "_values", "maxlen", "span")

    def __init__(self, span: float, maxlen: int = 200_000) -> None:
        self.span = span
        self.maxlen = maxlen
        self._times: array[float] = array("d")
        self._values: array[float] = array("d")
        self._start = 0  # samples before this index are dropped
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._times) - self._start

    def append(self, t: float, value: float) -> None:
        """Add a sample (not older than the last one) and drop those older than ``t - span``."""
        with self._lock:
            times = self._times
            times.append(t)
            self._values.append(value)
            end = len(times)
            start = self._start
            if times[start] < t - self.span:
                start = bisect_left(times, t - self.span, start, end)
            start = max(start, end - self.maxlen)
            self._start = start
            if start > 1024 and start * 4 > end:  # fresh columns: views handed out keep the old ones
                self._times = times[start:]
                self._values = self._values[start:]
                self._start = 0

    def extend(self, samples: Sequence[tuple[float, float]]) -> None:
        for t, v in samples:
            self.append(t, v)

    def view(self, before: float | None = None) -> HistoryView:
        """The samples older than ``before`` (all of them if None), without copying them."""
        with self._lock:
            times, start, end = self._times, self._start, len(self._times)
            values = self._values
        if before is not None:  # from the newest back: the current reading, if it is in already
            while end > start and times[end - 1] >= before:
                end -= 1
        return HistoryView(times, values, start, end)
