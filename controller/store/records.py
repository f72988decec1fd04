"""What the controller records beside the journal: events, metric samples and decisions (history rows,
group-committed), per-policy state, baked node images, and their pruning. ``Records`` is the base of
``StateStore`` (controller/store/state.py); its writes go through the same fenced ``_write``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import delete, insert, text
from sqlmodel import col, select

from controller import metrics
from controller.errors import FencedError
from controller.store.base import StoreBase, dumps
from controller.store.models import (
    DecisionRow,
    EventRow,
    InstanceRow,
    Intent,
    IntentState,
    MetricSample,
    NodeImageRow,
    PolicyState,
    Replica,
    ReplicaState,
)

__all__ = ["HistoryRow", "HistorySink", "Records"]

logger = logging.getLogger(__name__)

HistoryRow = tuple[Any, dict[str, Any]]  # (table, column values) of a sample or a decision
HistorySink = Callable[[HistoryRow], None]  # takes a history row for a later batched write (controller/loop/rounds.py)
_SAMPLES = MetricSample.__table__  # type: ignore[attr-defined]
_DECISIONS = DecisionRow.__table__  # type: ignore[attr-defined]


class Records(StoreBase):
    """Events, history rows, per-policy state and node images. Thread-safe; returned rows are detached."""

    # ------------------------------------------------------------------ events

    def record_event(self, kind: str, message: str, *, policy: str | None = None,
                     details: dict[str, Any] | None = None) -> int:
        with self._write() as (s, _):
            row = EventRow(at=self.clock(), policy=policy, kind=kind, message=message, details=dumps(details))
            s.add(row)
            s.flush()
            assert row.id is not None
            logger.info("event %s: %s", kind, message, extra={"policy": policy, "kind": kind})
        metrics.EVENTS.labels(kind).inc()  # once committed
        return row.id

    def events(self, *, cursor: int | None = None, limit: int = 50,
               policy: str | None = None) -> tuple[list[EventRow], int | None]:
        """Newest first; ``cursor`` is the id to continue below (the ``next_cursor`` of the last page)."""
        with self._read() as s:
            q = select(EventRow).order_by(col(EventRow.id).desc()).limit(limit + 1)
            if cursor is not None:
                q = q.where(col(EventRow.id) < cursor)
            if policy is not None:
                q = q.where(EventRow.policy == policy)
            rows = list(s.exec(q))
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].id if more and rows else None)

    def events_after(self, *, cursor: int | None = None, limit: int = 50,
                     policy: str | None = None) -> tuple[list[EventRow], int | None]:
        """Oldest first, for followers: ``cursor=None`` gives the latest ``limit`` events, ``cursor=N`` up
        to ``limit`` events with id > N. The next cursor is the last id returned, else ``cursor`` (nothing
        newer yet), else None (no events at all)."""
        with self._read() as s:
            q = select(EventRow)
            if policy is not None:
                q = q.where(EventRow.policy == policy)
            if cursor is None:
                rows = list(reversed(list(s.exec(q.order_by(col(EventRow.id).desc()).limit(limit)))))
            else:
                rows = list(s.exec(q.where(col(EventRow.id) > cursor).order_by(col(EventRow.id)).limit(limit)))
        return rows, (rows[-1].id if rows else cursor)

    # ------------------------------------------------------------------ decisions and samples

    def _history(self, row: HistoryRow) -> None:
        """Store a history row (sample, decision) by group commit: when many policies' jobs record at once,
        whoever holds the flush lock writes every row queued so far in one transaction, and the others find
        theirs already written. Returns once the row is committed (or raises, with the row still queued)."""
        self.record_history([row])

    def record_history(self, rows: Sequence[HistoryRow]) -> None:
        """Store history rows ((table, values) of ``metric_samples`` and ``decisions``) in one transaction with
        whatever else is queued (PERF: a round of the loop writes all its samples and decisions at once)."""
        if not rows:
            return
        with self._hist_lock:
            self._hist.extend(rows)
            self._hist_seq += 1
            seq = self._hist_seq
        with self._hist_flush:
            if self._hist_done >= seq:
                return
            with self._hist_lock:
                rows, self._hist, upto = self._hist, [], self._hist_seq
            try:
                with self._write(durable=False) as (s, _):
                    # PERF: a Core INSERT per table (executemany), not an ORM flush of each object
                    for table in {table for table, _ in rows}:
                        s.connection().execute(insert(table), [values for t, values in rows if t is table])
            except FencedError:
                raise  # no longer the leader: these rows are dropped, never written under a later epoch
            except BaseException:
                with self._hist_lock:
                    self._hist[:0] = rows  # the next record (or a waiting caller) writes them
                raise
            self._hist_done = upto

    def record_decision(self, policy: str, *, value: float | None, desired: int, actual: int, direction: str,
                        reason: str, details: dict[str, Any] | None = None, into: HistorySink | None = None) -> None:
        """``into``: hand the row to a round's batch (written with the others) instead of writing it now."""
        # PERF: plain values, not a SQLModel object (~0.2 ms each to build)
        row = (_DECISIONS, {"policy": policy, "at": self.clock(), "value": value, "desired": desired, "actual": actual,
                            "direction": direction, "reason": reason, "details": dumps(details)})
        metrics.DECISIONS.labels(policy, direction).inc()
        if into is None:
            self._history(row)
        else:
            into(row)

    def last_decision(self, policy: str) -> DecisionRow | None:
        with self._read() as s:
            return s.exec(select(DecisionRow).where(DecisionRow.policy == policy)
                          .order_by(col(DecisionRow.id).desc()).limit(1)).first()

    def record_sample(self, policy: str, *, at: float, value: float | None, ok: bool, source: str,
                      error: str | None = None, capacity: float | None = None, replicas: int = 0,
                      into: HistorySink | None = None) -> None:
        row = (_SAMPLES, {"policy": policy, "at": at, "value": value, "ok": ok, "source": source,
                          "error": error[:500] if error else None, "capacity": capacity, "replicas": replicas})
        if into is None:
            self._history(row)
        else:
            into(row)

    def sample_rows(self, *, after: int, since: float,
                    limit: int) -> list[tuple[int, str, float, float | None, float | None, int]]:
        """The newest ``limit`` samples of every policy with id > ``after`` and ``at`` >= ``since``, oldest
        first, as plain tuples (id, policy, at, value, capacity, replicas): one indexed read for the status
        process's history window (controller/status/snapshot.py)."""
        with self._read() as s:
            rows = s.execute(text("SELECT id, policy, at, value, capacity, replicas FROM metric_samples "
                                  "WHERE id > :after AND at >= :since ORDER BY id DESC LIMIT :limit"),
                             {"after": after, "since": since, "limit": limit}).all()
        return [(int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in reversed(rows)]

    def samples(self, policy: str, since: float, limit: int | None = None) -> list[MetricSample]:
        with self._read() as s:
            return list(s.exec(select(MetricSample).where(MetricSample.policy == policy,
                                                          col(MetricSample.at) >= since)
                               .order_by(col(MetricSample.at)).limit(limit)))

    # ------------------------------------------------------------------ per-policy state

    def policy_state(self, policy: str) -> PolicyState | None:
        with self._read() as s:
            return s.get(PolicyState, policy)

    def policy_states(self) -> list[PolicyState]:
        with self._read() as s:
            return list(s.exec(select(PolicyState).order_by(col(PolicyState.policy))))

    def save_policy(self, policy: str, *, spec: str | None = None, source_file: str | None = None,
                    **flags: Any) -> PolicyState:
        """Create or update a policy's row: its last good spec and flags (paused, removed, drain_requested,
        last_scale_out, last_scale_in)."""
        now = self.clock()
        with self._write() as (s, _):
            row = s.get(PolicyState, policy) or PolicyState(policy=policy, updated_at=now)
            if spec is not None:
                row.spec = spec
            if source_file is not None:
                row.source_file = source_file
            for key, value in flags.items():
                if not hasattr(row, key):
                    raise AttributeError(key)
                setattr(row, key, value)
            row.updated_at = now
            s.add(row)
            return row

    # ------------------------------------------------------------------ baked node images

    def record_node_image(self, row: NodeImageRow) -> None:
        with self._write() as (s, _):
            s.merge(row)

    def node_images(self, policy: str, *, live: bool = True) -> list[NodeImageRow]:
        """A policy's baked images, newest first (``live``: not deleted)."""
        with self._read() as s:
            q = select(NodeImageRow).where(NodeImageRow.policy == policy)
            if live:
                q = q.where(col(NodeImageRow.deleted_at).is_(None))
            return list(s.exec(q.order_by(col(NodeImageRow.created_at).desc())))

    def baked_image(self, policy: str, spec_hash: str, base_image_id: str | None = None) -> str | None:
        """The newest live baked image of this policy for this workload spec (and, if given, baked from this
        base image: after an edit of ``cloud.image_id`` the older bakes no longer apply), if any."""
        return next((r.image_id for r in self.node_images(policy) if r.spec_hash == spec_hash
                     and (base_image_id is None or r.base_image_id == base_image_id)), None)

    def mark_node_image_deleted(self, image_id: str) -> None:
        with self._write() as (s, _):
            row = s.get(NodeImageRow, image_id)
            if row is not None and row.deleted_at is None:
                row.deleted_at = self.clock()
                s.add(row)

    # ------------------------------------------------------------------ garbage collection

    def prune(self, *, before: float, samples_before: float | None = None) -> dict[str, int]:
        """Drop history older than ``before``: samples (older than ``samples_before`` if given: the
        strategies' own history need may be longer), decisions, events, finished intents, gone replicas
        and released instances. Pending intents and live replicas are never pruned."""
        counts: dict[str, int] = {}
        samples_cut = before if samples_before is None else samples_before
        with self._write() as (s, _):
            for name, stmt in (
                ("samples", delete(MetricSample).where(col(MetricSample.at) < samples_cut)),
                ("decisions", delete(DecisionRow).where(col(DecisionRow.at) < before)),
                ("events", delete(EventRow).where(col(EventRow.at) < before)),
                ("intents", delete(Intent).where(col(Intent.state) != IntentState.PENDING,
                                                 col(Intent.updated_at) < before)),
                ("replicas", delete(Replica).where(col(Replica.state) == ReplicaState.GONE,
                                                   col(Replica.updated_at) < before)),
                ("instances", delete(InstanceRow).where(col(InstanceRow.released_at) < before)),
            ):
                counts[name] = int(s.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]
        return counts

