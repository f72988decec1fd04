"""The status process's window of metric history (controller/status/child.py): every policy's samples of
the last ``HISTORY_SPAN``, as the JSON of ``MetricPoint``, so that ``/v1/policies/{name}/history`` is
answered in the status process and never by the daemon. The daemon sends the window once when the process
starts and then only the new samples with each snapshot (``Snapshot.samples``, controller/status/snapshot.py).

Bounded: ``HISTORY_SPAN`` of time, and ``MAX_POINTS`` points in all (about 124 bytes each: 37 MB, rendered
in 4 s by the status process when it starts); with many policies each keeps an equal share, so the window
then covers less than 24 hours.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable

from controller.status.app import HISTORY_SPAN
from controller.status.models import MetricPoint, SampleRow

__all__ = ["MAX_POINTS", "HistoryWindow"]

MAX_POINTS = 300_000


class _Series:
    __slots__ = ("ats", "bodies")

    def __init__(self) -> None:
        self.ats: list[float] = []
        self.bodies: list[bytes] = []

    def add(self, at: float, body: bytes) -> None:
        if not self.ats or at >= self.ats[-1]:
            self.ats.append(at)
            self.bodies.append(body)
        else:  # a sample committed late (group commit): keep the series in time order
            i = bisect.bisect_right(self.ats, at)
            self.ats.insert(i, at)
            self.bodies.insert(i, body)

    def trim(self, horizon: float, keep: int) -> None:
        cut = max(bisect.bisect_left(self.ats, horizon), len(self.ats) - keep)
        if cut > 0:
            del self.ats[:cut]
            del self.bodies[:cut]


class HistoryWindow:
    """Per policy, the samples of the last ``span`` seconds, at most ``max_points`` in all. Fed and read
    from different threads: one lock, held for list operations only."""

    def __init__(self, span: float = HISTORY_SPAN, max_points: int = MAX_POINTS) -> None:
        self.span, self.max_points = span, max_points
        self._series: dict[str, _Series] = {}
        self._count = 0
        self._lock = threading.Lock()

    def add(self, rows: Iterable[SampleRow]) -> None:
        rendered = [(policy, at, MetricPoint(at=at, value=value, capacity=capacity,
                                             replicas=replicas).model_dump_json().encode())
                    for _id, policy, at, value, capacity, replicas in rows]
        with self._lock:
            for policy, at, body in rendered:
                self._series.setdefault(policy, _Series()).add(at, body)
            self._count += len(rendered)
            if self._count > self.max_points:
                self._trim()

    def _trim(self) -> None:
        horizon = time.time() - self.span
        keep = self.max_points // max(1, len(self._series))
        for series in self._series.values():
            series.trim(horizon, keep)
        self._count = sum(len(s.ats) for s in self._series.values())

    def retain(self, policies: Iterable[str]) -> None:
        """Forget the policies that are gone (removed from the policy directory), and points past the span."""
        names = set(policies)
        with self._lock:
            for name in [n for n in self._series if n not in names]:
                del self._series[name]
            self._trim()

    def page(self, policy: str, since: float, limit: int) -> bytes:
        """The JSON list of the policy's points with ``at`` >= ``since`` (no earlier than the span), oldest
        first, at most ``limit``."""
        since = max(since, time.time() - self.span)
        with self._lock:
            series = self._series.get(policy)
            if series is None:
                return b"[]"
            start = bisect.bisect_left(series.ats, since)
            bodies = series.bodies[start:start + limit]
        return b"[" + b",".join(bodies) + b"]"

    def __len__(self) -> int:
        return self._count
