"""The status snapshot: every answer of the status endpoint's hot routes, rendered once by the daemon
(``/v1/status`` JSON, each policy's document, the latest events, the ``/metrics`` text, readiness) and
served as-is by the status process (controller/status/process.py, controller/status/child.py).

``SnapshotBuilder`` runs in the daemon's process; ``Snapshot`` is a plain immutable value (picklable) and
``Snapshot.events_page`` answers an events request from it when the window it holds covers the request.
``Snapshot.samples`` carries the metric samples recorded since the last snapshot (all of the last
``HISTORY_SPAN`` in the first one a status process gets): the status process keeps its own history window
(controller/status/history.py), so that history is never read in the daemon on a request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import CollectorRegistry, generate_latest

from controller import metrics
from controller.errors import BurstError
from controller.status.app import HISTORY_SPAN, StatusSource
from controller.status.models import ControllerStatus, Event, SampleRow

__all__ = ["EVENTS_WINDOW", "Snapshot", "SnapshotBuilder"]

logger = logging.getLogger(__name__)

EVENTS_WINDOW = 1000  # the latest events kept in a snapshot (= the largest page the API serves)
_FULL_REFRESH = 60.0  # seconds between full re-reads of the window (pruned events leave it)
_OVERLAP = 20  # incremental reads start this many events back: ids committed out of order are not missed
SAMPLES_READ = 300_000  # samples read in one build at most (the status process's window holds as many)
_SAMPLE_OVERLAP = 1_000  # incremental sample reads start this many ids back, for the same reason


@dataclass(frozen=True)
class Snapshot:
    """What the status process serves. ``status_json`` is None when the last build failed: then
    ``status_error`` says why (the endpoint answers 503, as when the store is busy)."""

    version: int
    built_at: float  # epoch seconds
    ready: tuple[bool, str]
    role: Literal["active", "standby"] | None
    status_json: bytes | None
    status_error: str | None = None
    policies: dict[str, bytes] = field(default_factory=dict)
    # oldest first: (id, policy, JSON of the Event)
    events: tuple[tuple[int, str | None, bytes], ...] = ()
    events_complete: bool = False  # the window holds every event there is
    metrics_text: bytes = b""
    # the daemon's promise for this snapshot: the next comes at most ``max_age`` after it while requests
    # come (0: the status process's own setting); more than its setting when builds are slow (a big fleet)
    max_age: float = 0.0
    # metric samples recorded since the previous snapshot (the whole window in a new process's first one)
    samples: tuple[SampleRow, ...] = ()

    def events_page(self, *, cursor: int | None, limit: int, policy: str | None) -> bytes | None:
        """The JSON of ``EventPage`` for this request, with the semantics of ``StatusSource.events``, or
        None when the window does not cover it (the daemon must be asked)."""
        window = self.events
        if cursor is None:
            rows = [e for e in window if policy is None or e[1] == policy]
            if len(rows) < limit and not self.events_complete:
                return None
            rows = rows[-limit:]
            next_cursor: int | None = rows[-1][0] if rows else None
        else:
            if not self.events_complete and (not window or cursor < window[0][0] - 1):
                return None
            rows = []
            for e in window:
                if e[0] > cursor and (policy is None or e[1] == policy):
                    rows.append(e)
                    if len(rows) == limit:
                        break
            next_cursor = rows[-1][0] if rows else cursor
        body = b",".join(e[2] for e in rows)
        tail = b"null" if next_cursor is None else str(next_cursor).encode()
        return b'{"events":[' + body + b'],"next_cursor":' + tail + b"}"


class SnapshotBuilder:
    """Builds snapshots from a ``StatusSource`` (the daemon, or the HA pair member). Keeps the events
    window between builds and reads only the new events each time. Called from one thread at a time."""

    def __init__(self, source: StatusSource, *, registry: CollectorRegistry | None = None) -> None:
        self.source = source
        self.registry = registry if registry is not None else metrics.REGISTRY
        self.version = 0
        self._events: dict[int, tuple[int, str | None, bytes]] = {}
        self._complete = False
        self._full_at = -_FULL_REFRESH
        self._sample_cursor = 0  # samples up to this id were sent (bar late commits, below)
        self._sample_ids: set[int] = set()  # ids sent above ``_sample_cursor - _SAMPLE_OVERLAP``

    def restart_samples(self) -> None:
        """The next snapshot carries the whole history window (for a new status process)."""
        self._sample_cursor, self._sample_ids = 0, set()

    def _new_samples(self) -> tuple[SampleRow, ...]:
        after = max(0, self._sample_cursor - _SAMPLE_OVERLAP) if self._sample_cursor else 0
        rows = self.source.history_rows(after=after, since=time.time() - HISTORY_SPAN, limit=SAMPLES_READ)
        fresh = tuple(r for r in rows if r[0] not in self._sample_ids)
        if rows:
            self._sample_cursor = max(self._sample_cursor, rows[-1][0])
        floor = self._sample_cursor - _SAMPLE_OVERLAP
        self._sample_ids = {i for i in self._sample_ids if i > floor} | {r[0] for r in fresh if r[0] > floor}
        return fresh

    def _refresh_events(self) -> None:
        now = time.monotonic()
        if not self._events or now - self._full_at >= _FULL_REFRESH:
            page = self.source.events(cursor=None, limit=EVENTS_WINDOW, policy=None)
            self._events = {e.id: _row(e) for e in page.events}
            self._complete = len(page.events) < EVENTS_WINDOW
            self._full_at = now
            return
        ids = sorted(self._events)
        cursor = ids[-min(len(ids), _OVERLAP)] - 1
        while True:
            page = self.source.events(cursor=cursor, limit=EVENTS_WINDOW, policy=None)
            for e in page.events:
                self._events[e.id] = _row(e)
            if len(page.events) < EVENTS_WINDOW or page.next_cursor is None:
                break
            cursor = page.next_cursor
        if len(self._events) > EVENTS_WINDOW:
            for old in sorted(self._events)[:len(self._events) - EVENTS_WINDOW]:
                del self._events[old]
            self._complete = False

    def build(self) -> Snapshot:
        """Never raises for a store that is busy: the snapshot then carries the error instead of a status."""
        self.version += 1
        ready = self.source.ready()
        status: ControllerStatus | None = None
        error: str | None = None
        try:
            status = self.source.status()
        except BurstError as exc:
            error = exc.message
        try:
            self._refresh_events()
        except BurstError as exc:  # keep the last window: events are history, a busy store does not undo them
            logger.debug("status snapshot: events not refreshed: %s", exc)
        samples: tuple[SampleRow, ...] = ()
        try:
            samples = self._new_samples()
        except BurstError as exc:  # the next build reads them
            logger.debug("status snapshot: samples not read: %s", exc)
        if status is not None:
            try:
                metrics.observe_status(status)
            except Exception:  # a gauge failing must not take the status with it
                logger.exception("status snapshot: metrics gauges not updated")
        return Snapshot(
            version=self.version, built_at=time.time(), ready=ready,
            role=status.role if status is not None else None,
            status_json=status.model_dump_json().encode() if status is not None else None,
            status_error=error,
            policies={p.name: p.model_dump_json().encode() for p in status.policies} if status is not None else {},
            events=tuple(self._events[i] for i in sorted(self._events)), events_complete=self._complete,
            metrics_text=generate_latest(self.registry), samples=samples)


def _row(e: Event) -> tuple[int, str | None, bytes]:
    return e.id, e.policy, e.model_dump_json().encode()
