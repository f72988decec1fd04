"""The warm pool's rows: instances stopped for the next burst, kept in ``instances`` with ``warm_since`` set
(controller/loop/warm_pool.py), and the pool's own intents (an expiry has no replica). A base of
``StateStore`` (controller/store/state.py); its writes go through the same fenced ``_write``.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from controller.errors import NotFoundError
from controller.store.base import StoreBase, dumps, new_id
from controller.store.models import InstanceRow, Intent, IntentKind, IntentState

__all__ = ["WarmRecords"]


class WarmRecords(StoreBase):
    """The warm pool in the journal. Thread-safe; returned rows are detached."""

    def warm_instances(self, policy: str | None = None) -> list[InstanceRow]:
        """Stopped instances of the pool (of ``policy`` when given), oldest launch first."""
        with self._read() as s:
            q = select(InstanceRow).where(col(InstanceRow.warm_since).is_not(None),
                                          col(InstanceRow.released_at).is_(None))
            if policy is not None:
                q = q.where(InstanceRow.policy == policy)
            return list(s.exec(q.order_by(col(InstanceRow.created_at), col(InstanceRow.id))))

    def mark_warm(self, instance_id: str, *, spec_hash: str, image: str) -> None:
        """The instance is stopped and in the pool, with this workload spec and replica image on its disk; it
        no longer belongs to a replica."""
        now = self.clock()
        with self._write() as (s, _):
            row = s.get(InstanceRow, instance_id)
            if row is None:
                raise NotFoundError(f"no instance {instance_id} in the journal")
            row.warm_since, row.warm_spec_hash, row.warm_image = now, spec_hash, image
            row.replica_id, row.state, row.updated_at = None, "stopped", now
            s.add(row)

    def mark_woken(self, instance_id: str, *, replica_id: str) -> None:
        """The instance left the pool: started for ``replica_id``."""
        now = self.clock()
        with self._write() as (s, _):
            row = s.get(InstanceRow, instance_id)
            if row is None:
                raise NotFoundError(f"no instance {instance_id} in the journal")
            row.warm_since, row.warm_spec_hash, row.warm_image = None, None, None
            row.replica_id, row.state, row.updated_at = replica_id, "starting", now
            s.add(row)

    def pool_intent(self, policy: str, kind: str, *, target: str, payload: dict[str, Any] | None = None) -> Intent:
        """The pending pool intent of ``kind`` on instance ``target`` (re-run after a crash), or a new one,
        its attempt counted before the caller acts (design rule 1). Pool intents have no replica."""
        now = self.clock()
        with self._write() as (s, fence):
            intent = s.exec(select(Intent).where(Intent.policy == policy, Intent.kind == kind,
                                                 Intent.target == target, col(Intent.replica_id).is_(None),
                                                 Intent.state == IntentState.PENDING)).first()
            if intent is None:
                iid = new_id(kind[:1])
                intent = Intent(id=iid, kind=kind, policy=policy, target=target, token=iid,
                                state=IntentState.PENDING, created_at=now, updated_at=now, payload=dumps(payload),
                                fence=fence)
            intent.attempts += 1
            intent.updated_at = now
            s.add(intent)
            return intent

    def claimed_warm(self, policy: str) -> dict[str, str]:
        """Instance id -> the pending wake or expiry intent that holds it (no other step may take it)."""
        with self._read() as s:
            rows = s.exec(select(Intent).where(Intent.policy == policy, Intent.state == IntentState.PENDING,
                                               col(Intent.kind).in_([IntentKind.WAKE, IntentKind.EXPIRE])))
            return {str(i.target): i.id for i in rows if i.target}
