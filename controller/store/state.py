"""The controller's durable state: the journal of intents, replicas, instances, decisions, samples, events.

``StateStore`` is used by the control loop (controller/loop/tick.py, lifecycle.py, reconcile.py) and the daemon.
SQLite in WAL mode by default, PostgreSQL by URL (``postgresql+psycopg://...``); the schema is migrated at
open. Every write runs in one transaction through ``_write``, which first calls the optional ``fence`` hook
(the leader lease check of an active/standby pair) so a fenced controller can never write. A locked, full
or unreachable database raises ``StateBusyError`` (transient: the loop holds and retries).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, text
from sqlmodel import Session, col, select

from controller import metrics
from controller.store import migrations
from controller.store.database import pg_engine, sqlite_engine, sqlite_path, sqlite_url, translated
from controller.errors import FencedError, NotFoundError
from controller.ports import Instance
from controller.store.snapshot import (
    FleetSnapshot,
    LiveInstance,
    LiveReplica,
    StatusRows,
    read_fleet,
    read_instances,
    read_replicas,
    read_status,
)
from controller.store.models import (
    DecisionRow,
    EventRow,
    InstanceRow,
    Intent,
    IntentKind,
    IntentState,
    MetricSample,
    NodeImageRow,
    PolicyState,
    Replica,
    ReplicaState,
)

__all__ = ["DEFAULT_URL", "HistorySink", "StateStore", "new_id", "sqlite_url"]

logger = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:////var/lib/burst-controller/state.db"
FenceHook = Callable[[Session], "int | None"]
HistoryRow = tuple[Any, dict[str, Any]]  # (table, column values) of a sample or a decision
HistorySink = Callable[[HistoryRow], None]  # takes a history row for a later batched write (controller/loop/rounds.py)
_SAMPLES = MetricSample.__table__  # type: ignore[attr-defined]
_DECISIONS = DecisionRow.__table__  # type: ignore[attr-defined]


# PERF: the hottest read (every policy's tick) built once: no statement construction and no expanding IN per
# call (about half of an idle tick's cost); "not gone" is the live states of ReplicaState
_LIVE_OF_POLICY = (select(Replica).where(Replica.policy == bindparam("policy"), Replica.state != ReplicaState.GONE)
                   .order_by(col(Replica.created_at)))
_COUNT_IN_STATE = (select(func.count()).select_from(Replica)
                   .where(Replica.policy == bindparam("policy"), Replica.state == bindparam("state")))
_LIVE_INSTANCES_OF_POLICY = select(InstanceRow).where(InstanceRow.policy == bindparam("policy"),
                                                      col(InstanceRow.released_at).is_(None))
_COSTING_INSTANCES = (select(InstanceRow.id, InstanceRow.replica_id, InstanceRow.instance_type,
                             InstanceRow.price_per_hour)
                      .where(InstanceRow.policy == bindparam("policy"), col(InstanceRow.released_at).is_(None)))
_PENDING_LAUNCHES = select(Intent.id, Intent.replica_id).where(
    Intent.policy == bindparam("policy"), Intent.kind == IntentKind.LAUNCH, Intent.state == IntentState.PENDING)
_INTENTS_OF_POLICY = (select(Intent).where(Intent.policy == bindparam("policy"), Intent.kind == bindparam("kind"),
                                           Intent.state == bindparam("state")).order_by(col(Intent.created_at)))


def new_id(prefix: str = "") -> str:
    """A short unique id; intent ids double as ECS ClientTokens (at most 64 ASCII characters)."""
    return prefix + uuid.uuid4().hex[:20]


def _dumps(value: object) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


class StateStore:
    """The journal and the fleet as the controller knows it. Thread-safe; returned rows are detached."""

    def __init__(self, url: str = DEFAULT_URL, *, clock: Callable[[], float] = time.time,
                 fence: FenceHook | None = None, busy_timeout: float = 5.0) -> None:
        self.url = url
        self.clock = clock
        self.fence = fence
        self._sqlite = url.startswith("sqlite")
        # One writer at a time inside this process; busy_timeout covers other processes.
        self._write_lock = threading.RLock() if self._sqlite else None
        if self._sqlite:
            path = sqlite_path(url)
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._writer = sqlite_engine(url, busy_timeout, begin="BEGIN IMMEDIATE")
            self._reader = sqlite_engine(url, busy_timeout, begin="BEGIN")
            # SCALE-HA: history rows (samples, decisions) commit without their own fsync; the next journal
            # commit's fsync of the WAL (or a checkpoint) makes them durable too. 500 policies x 2 history
            # rows per tick at ~7 ms per fsync would otherwise cost seconds per tick.
            self._history_writer = sqlite_engine(url, busy_timeout, begin="BEGIN IMMEDIATE", synchronous="NORMAL")
        else:
            self._writer = pg_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
            self._reader = self._writer
            self._history_writer = self._writer
        # SCALE-HA: group commit of history rows (see _history): queued rows, the last queued and flushed seq
        self._hist: list[Any] = []
        self._hist_seq = self._hist_done = 0
        self._hist_lock = threading.Lock()
        self._hist_flush = threading.Lock()
        self._local = threading.local()  # this thread's open transaction()
        with translated(), self._writer.begin() as conn:
            applied = migrations.migrate(conn)
        if applied:
            logger.info("state schema migrated to version %d", applied[-1])

    # ------------------------------------------------------------------ engines and transactions

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group the journal writes made inside (by this thread) into ONE transaction: one fence check and
        one commit (PERF: a scaling action's plan, policy row and event were three fsyncs). All or nothing."""
        if getattr(self._local, "tx", None) is not None:
            yield  # already inside one
            return
        with self._write() as tx:
            self._local.tx = tx
            try:
                yield
            finally:
                self._local.tx = None

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[tuple[Session, int | None]]:
        """One write transaction behind the fence; ``durable=False`` (history rows only) skips its own fsync.
        Inside ``transaction()``, the journal writes of this thread join its transaction."""
        outer = getattr(self._local, "tx", None) if durable else None
        if outer is not None:
            yield outer
            return
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            engine = self._writer if durable else self._history_writer
            with translated(), Session(engine, expire_on_commit=False) as session, session.begin():
                if not durable and not self._sqlite:
                    session.execute(text("SET LOCAL synchronous_commit = off"))
                fence_token = self.fence(session) if self.fence else None
                yield session, fence_token
        finally:
            if lock is not None:
                lock.release()

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with translated(), Session(self._reader, expire_on_commit=False) as session:
            yield session

    def close(self) -> None:
        self._writer.dispose()
        if self._history_writer is not self._writer:
            self._history_writer.dispose()
        if self._reader is not self._writer:
            self._reader.dispose()

    def schema_version(self) -> int:
        with translated(), self._reader.connect() as conn:
            return migrations.current_version(conn)

    # ------------------------------------------------------------------ events

    def record_event(self, kind: str, message: str, *, policy: str | None = None,
                     details: dict[str, Any] | None = None) -> int:
        with self._write() as (s, _):
            row = EventRow(at=self.clock(), policy=policy, kind=kind, message=message, details=_dumps(details))
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

    # ------------------------------------------------------------------ replicas and the journal

    def plan_replicas(self, policy: str, count: int, *, spec_hash: str, reason: str) -> list[tuple[Replica, Intent]]:
        """Create ``count`` planned replicas, each with its pending launch intent, in one transaction."""
        out = []
        now = self.clock()
        with self._write() as (s, fence):
            for _ in range(count):
                rid = new_id("r")
                replica = Replica(id=rid, policy=policy, state=ReplicaState.PLANNED, spec_hash=spec_hash,
                                  reason=reason, created_at=now, updated_at=now, state_since=now, planned_at=now)
                iid = new_id("l")
                intent = Intent(id=iid, kind=IntentKind.LAUNCH, policy=policy, replica_id=rid, token=iid,
                                state=IntentState.PENDING, created_at=now, updated_at=now, fence=fence)
                s.add(replica)
                s.add(intent)
                out.append((replica, intent))
        return out

    def step_intent(self, replica: Replica | LiveReplica, kind: str, *, target: str | None = None,
                    payload: dict[str, Any] | None = None) -> Intent:
        """The pending intent of ``kind`` for this replica (re-run after a crash), or a new one; the attempt
        is counted before the caller acts (design rule 1: write the intent, then act)."""
        now = self.clock()
        with self._write() as (s, fence):
            intent = s.exec(select(Intent).where(Intent.replica_id == replica.id, Intent.kind == kind,
                                                 Intent.state == IntentState.PENDING)).first()
            if intent is None:
                iid = new_id(kind[:1])
                intent = Intent(id=iid, kind=kind, policy=replica.policy, replica_id=replica.id, target=target,
                                token=iid, state=IntentState.PENDING, created_at=now, updated_at=now,
                                payload=_dumps(payload), fence=fence)
            intent.attempts += 1
            intent.updated_at = now
            if target is not None:
                intent.target = target
            s.add(intent)
            return intent

    def complete(self, intent_id: str, *, outcome: dict[str, Any] | None = None,
                 to: ReplicaState | None = None, **fields: Any) -> Replica | None:
        """Mark the intent done and, in the same transaction, move its replica on."""
        return self._finish(intent_id, IntentState.DONE, outcome=outcome, error=None, to=to, fields=fields)

    def fail(self, intent_id: str, error: str, *, to: ReplicaState | None = None, **fields: Any) -> Replica | None:
        """Mark the intent failed (it will not be re-run) and move its replica to its failure path."""
        return self._finish(intent_id, IntentState.FAILED, outcome=None, error=error, to=to, fields=fields)

    def _finish(self, intent_id: str, state: IntentState, *, outcome: dict[str, Any] | None, error: str | None,
                to: ReplicaState | None, fields: dict[str, Any]) -> Replica | None:
        now = self.clock()
        with self._write() as (s, _):
            intent = s.get(Intent, intent_id)
            if intent is None:
                raise NotFoundError(f"no intent {intent_id}")
            intent.state, intent.updated_at = state, now
            intent.outcome, intent.error = _dumps(outcome), (error[:2000] if error else None)
            s.add(intent)
            if intent.replica_id is None or (to is None and not fields):
                return None
            return self._move(s, intent.replica_id, to, fields, now)

    def note_error(self, intent_id: str, error: str) -> None:
        """A transient failure: the intent stays pending (re-run next step) with the last error kept."""
        with self._write() as (s, _):
            intent = s.get(Intent, intent_id)
            if intent is not None:
                intent.error, intent.updated_at = error[:2000], self.clock()
                s.add(intent)

    def transition(self, replica_id: str, to: ReplicaState | None, **fields: Any) -> Replica:
        """Move a replica without an intent (observations: booted, health passes, sessions drained)."""
        with self._write() as (s, _):
            return self._move(s, replica_id, to, fields, self.clock())

    @staticmethod
    def _move(s: Session, replica_id: str, to: ReplicaState | None, fields: dict[str, Any], now: float) -> Replica:
        replica = s.get(Replica, replica_id)
        if replica is None:
            raise NotFoundError(f"no replica {replica_id}")
        for key, value in fields.items():
            setattr(replica, key, value)
        if to is not None and to != replica.state:
            replica.state = to
            replica.state_since = now
            setattr(replica, f"{to.value}_at", now)
        replica.updated_at = now
        s.add(replica)
        return replica

    def fleet(self) -> tuple[FleetSnapshot, list[LiveInstance]]:
        """Every live replica, policy flags, budget holdings and live instance, in four queries (PERF: a round
        of the loop reads this once instead of ~5 queries per policy)."""
        with translated():
            return read_fleet(self._reader)

    def status_rows(self, policies: Sequence[str], day_start: float | None = None) -> StatusRows:
        """What the status endpoint shows from the store, for these policies, in one read (``read_status``);
        with ``day_start``, also the instances released since then."""
        with translated():
            return read_status(self._reader, policies, day_start)

    def live_rows(self, policies: Sequence[str] | None = None) -> dict[str, list[LiveReplica]]:
        """Live replicas by policy as plain rows (see controller/store/snapshot.py), in one query."""
        with translated():
            return read_replicas(self._reader, policies)

    def instance_rows(self) -> list[LiveInstance]:
        """The journal's unreleased instances as plain rows, in one query."""
        with translated():
            return read_instances(self._reader)

    def replica(self, replica_id: str) -> Replica | None:
        with self._read() as s:
            return s.get(Replica, replica_id)

    def replicas(self, policy: str | None = None, states: Iterable[str] | None = None) -> list[Replica]:
        with self._read() as s:
            q = select(Replica).order_by(col(Replica.created_at))
            if policy is not None:
                q = q.where(Replica.policy == policy)
            if states is not None:
                q = q.where(col(Replica.state).in_([str(x) for x in states]))
            return list(s.exec(q))

    def serving_counts(self) -> dict[str, int]:
        """Serving replicas per policy, in one grouped count (PERF: a sampling round)."""
        q = (select(Replica.policy, func.count()).where(Replica.state == ReplicaState.SERVING)
             .group_by(Replica.policy))
        with translated(), self._reader.connect() as conn:
            return {str(p): int(n) for p, n in conn.execute(q)}

    def count_replicas(self, policy: str, state: str) -> int:
        """How many of the policy's replicas are in ``state`` (PERF: a count, no rows built)."""
        with translated(), self._reader.connect() as conn:
            return int(conn.execute(_COUNT_IN_STATE, {"policy": policy, "state": str(state)}).scalar_one())

    def live_replicas(self, policy: str | None = None) -> list[Replica]:
        if policy is not None:
            with self._read() as s:
                return list(s.exec(_LIVE_OF_POLICY, params={"policy": policy}))
        return self.replicas(policy, [st for st in ReplicaState if st != ReplicaState.GONE])

    def intent(self, intent_id: str) -> Intent | None:
        with self._read() as s:
            return s.get(Intent, intent_id)

    def intents(self, *, policy: str | None = None, replica_id: str | None = None, kind: str | None = None,
                state: str | None = None) -> list[Intent]:
        with self._read() as s:
            if policy is not None and kind is not None and state is not None and replica_id is None:
                return list(s.exec(_INTENTS_OF_POLICY, params={"policy": policy, "kind": str(kind),
                                                               "state": str(state)}))
            q = select(Intent).order_by(col(Intent.created_at))
            if policy is not None:
                q = q.where(Intent.policy == policy)
            if replica_id is not None:
                q = q.where(Intent.replica_id == replica_id)
            if kind is not None:
                q = q.where(Intent.kind == kind)
            if state is not None:
                q = q.where(Intent.state == state)
            return list(s.exec(q))

    # ------------------------------------------------------------------ instances

    def record_instance(self, inst: Instance, *, policy: str, replica_id: str | None,
                        intent_id: str | None) -> InstanceRow:
        now = self.clock()
        with self._write() as (s, _):
            row = s.get(InstanceRow, inst.id)
            if row is None:
                row = InstanceRow(id=inst.id, policy=policy, instance_type=inst.instance_type, zone=inst.zone,
                                  state=str(inst.state), created_at=inst.created_at or now, updated_at=now)
            row.replica_id = replica_id or row.replica_id
            row.intent_id = intent_id or row.intent_id
            row.private_ip, row.docker_endpoint = inst.private_ip, inst.docker_endpoint
            row.state, row.spot, row.updated_at = str(inst.state), inst.spot, now
            row.price_per_hour = inst.price_per_hour if inst.price_per_hour is not None else row.price_per_hour
            s.add(row)
            return row

    def mark_released(self, instance_ids: Sequence[str]) -> None:
        now = self.clock()
        with self._write() as (s, _):
            for iid in instance_ids:
                row = s.get(InstanceRow, iid)
                if row is not None and row.released_at is None:
                    row.released_at, row.state, row.updated_at = now, "gone", now
                    s.add(row)

    def instances(self, policy: str | None = None, *, live: bool = True) -> list[InstanceRow]:
        with self._read() as s:
            if policy is not None and live:
                return list(s.exec(_LIVE_INSTANCES_OF_POLICY, params={"policy": policy}))
            q = select(InstanceRow)
            if policy is not None:
                q = q.where(InstanceRow.policy == policy)
            if live:
                q = q.where(col(InstanceRow.released_at).is_(None))
            return list(s.exec(q))

    def costing(self, policy: str) -> tuple[list[tuple[str, str | None, str, float | None]],
                                            list[tuple[str, str | None]]]:
        """What the budget counts, as plain tuples in one read (PERF: the evaluation's hot path): the policy's
        live instances (id, replica_id, instance_type, price_per_hour) and its pending launch intents
        (id, replica_id)."""
        with translated(), self._reader.connect() as conn:
            instances = [(r[0], r[1], r[2], r[3]) for r in conn.execute(_COSTING_INSTANCES, {"policy": policy})]
            launches = [(r[0], r[1]) for r in conn.execute(_PENDING_LAUNCHES, {"policy": policy})]
        return instances, launches

    def instance(self, instance_id: str) -> InstanceRow | None:
        with self._read() as s:
            return s.get(InstanceRow, instance_id)

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
                            "direction": direction, "reason": reason, "details": _dumps(details)})
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

    def prune(self, *, before: float) -> dict[str, int]:
        """Drop history older than ``before``: samples, decisions, events, finished intents, gone replicas
        and released instances. Pending intents and live replicas are never pruned."""
        counts: dict[str, int] = {}
        with self._write() as (s, _):
            for name, stmt in (
                ("samples", delete(MetricSample).where(col(MetricSample.at) < before)),
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

    def count(self, table: str) -> int:
        model = {"events": EventRow, "intents": Intent, "replicas": Replica, "instances": InstanceRow,
                 "samples": MetricSample, "decisions": DecisionRow}[table]
        with self._read() as s:
            return int(s.exec(select(func.count()).select_from(model)).one())

