"""The controller's durable state: the journal of intents, replicas and instances.

``StateStore`` is used by the control loop (controller/loop/tick.py, lifecycle.py, reconcile.py) and the daemon.
The engines, the fence and the transactions are in controller/store/base.py, the records beside the journal
(events, samples, decisions, policy state, node images) in controller/store/records.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, func
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from controller.errors import NotFoundError
from controller.ports import Instance
from controller.store.base import DEFAULT_URL, dumps, new_id
from controller.store.database import sqlite_url, translated
from controller.store.models import (
    InstanceRow,
    Intent,
    IntentKind,
    IntentState,
    Replica,
    ReplicaState,
)
from controller.store.records import HistorySink, Records
from controller.store.snapshot import (
    Costing,
    FleetSnapshot,
    LiveInstance,
    LiveReplica,
    StatusRows,
    read_fleet,
    read_instances,
    read_replicas,
    read_status,
)
from controller.store.warm import WarmRecords

__all__ = ["DEFAULT_URL", "HistorySink", "StateStore", "new_id", "sqlite_url"]



# PERF: the hottest read (every policy's tick) built once: no statement construction and no expanding IN per
# call (about half of an idle tick's cost); "not gone" is the live states of ReplicaState
_LIVE_OF_POLICY = (select(Replica).where(Replica.policy == bindparam("policy"), Replica.state != ReplicaState.GONE)
                   .order_by(col(Replica.created_at)))
_COUNT_IN_STATE = (select(func.count()).select_from(Replica)
                   .where(Replica.policy == bindparam("policy"), Replica.state == bindparam("state")))
_LIVE_INSTANCES_OF_POLICY = select(InstanceRow).where(InstanceRow.policy == bindparam("policy"),
                                                      col(InstanceRow.released_at).is_(None))
_IC = InstanceRow.__table__.c  # type: ignore[attr-defined]
_COSTING_INSTANCES = (core_select(_IC.id, _IC.replica_id, _IC.instance_type, _IC.price_per_hour, _IC.warm_since)
                      .where(_IC.policy == bindparam("policy"), _IC.released_at.is_(None)))
_PENDING_LAUNCHES = select(Intent.id, Intent.replica_id).where(
    Intent.policy == bindparam("policy"), Intent.kind == IntentKind.LAUNCH, Intent.state == IntentState.PENDING)
_INTENTS_OF_POLICY = (select(Intent).where(Intent.policy == bindparam("policy"), Intent.kind == bindparam("kind"),
                                           Intent.state == bindparam("state")).order_by(col(Intent.created_at)))



class StateStore(WarmRecords, Records):
    """The journal and the fleet as the controller knows it. Thread-safe; returned rows are detached."""

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
                                payload=dumps(payload), fence=fence)
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
            intent.outcome, intent.error = dumps(outcome), (error[:2000] if error else None)
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

    def costing(self, policy: str) -> Costing:
        """What the budget counts, as plain tuples in one read (PERF: the evaluation's hot path): the policy's
        live instances (id, replica_id, instance_type, price_per_hour) and its pending launch intents
        (id, replica_id)."""
        with translated(), self._reader.connect() as conn:
            instances = [(r[0], r[1], r[2], r[3], r[4])
                         for r in conn.execute(_COSTING_INSTANCES, {"policy": policy})]
            launches = [(r[0], r[1]) for r in conn.execute(_PENDING_LAUNCHES, {"policy": policy})]
        return instances, launches

    def instance(self, instance_id: str) -> InstanceRow | None:
        with self._read() as s:
            return s.get(InstanceRow, instance_id)

