"""The daemon's answers to the status endpoint (``controller.status.app.StatusSource``): status, events,
readiness, history, and the operator actions pause / resume / drain. Mixed into ``controller.daemon.Daemon``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from controller.loop.budget import hourly_spend
from controller.loop.warm_pool import disk_price, pool_size
from controller.status.models import (
    ControllerStatus,
    DecisionStatus,
    ErrorEntry,
    Event,
    EventPage,
    InstanceStatus,
    MetricPoint,
    MetricStatus,
    PolicyStatus,
    SampleRow,
    WarmNodeStatus,
    WarmPoolStatus,
)

if TYPE_CHECKING:
    from controller.daemon import Daemon
    from controller.loop.tick import PolicyRuntime
    from controller.store.snapshot import StatusRows

__all__ = ["StatusReport"]


class StatusReport:
    """StatusSource over the daemon's runtimes and store. Thread-safe: reads only, plus flag writes."""

    def _d(self) -> Daemon:
        return self  # type: ignore[return-value]

    def status(self) -> ControllerStatus:
        d = self._d()
        ok, why = self.ready()
        runtimes = sorted(d.runtimes.values(), key=lambda r: r.name)
        now = d.clock()
        rows = d.store.status_rows([r.name for r in runtimes], day_start=now - now % 86400)  # PERF: one read
        return ControllerStatus(controller_id=d.options.controller_id, role="active", version=d.version,
                                started_at=d.started_at, ready=ok, ready_reason=why,
                                policy_errors=list(d.policy_set.problems),
                                policies=[self._policy(r, rows, now) for r in runtimes])

    @staticmethod
    def _policy(runtime: PolicyRuntime, rows: StatusRows, now: float) -> PolicyStatus:
        paused, drain_requested, removed = rows.flags.get(runtime.name, (False, False, False))
        replicas = rows.replicas.get(runtime.name, [])
        by_id = {r.id: r for r in replicas}
        obs = runtime.observation(now) if runtime.last_observation is not None else None
        metric = None if obs is None else MetricStatus(
            value=obs.value, age_seconds=round(obs.age, 3), source=obs.source or str(runtime.policy.metric.source),
            ok=obs.usable, error=obs.error)
        last = rows.decisions.get(runtime.name)
        decision = None if last is None else DecisionStatus(
            desired=max(0, last.desired), direction="out" if last.direction == "out" else
            "in" if last.direction == "in" else "hold",
            reason=last.reason, at=last.at, details=json.loads(last.details) if last.details else {})
        instances = []
        prices = runtime.policy.budget.prices
        day_start = now - now % 86400  # 00:00 UTC
        spent_today = 0.0
        for itype, price_per_hour, created, released in rows.released.get(runtime.name, []):
            price = price_per_hour or float(prices.get(itype, 0.0))
            spent_today += price * max(0.0, released - max(created, day_start)) / 3600.0
        warm: list[WarmNodeStatus] = []
        for row in rows.instances.get(runtime.name, []):
            if row.warm_since is not None:  # stopped in the warm pool: its disks cost
                age, price = max(0.0, now - row.created_at), disk_price(runtime.policy)
                spent_today += price * max(0.0, now - max(row.warm_since, day_start)) / 3600.0
                warm.append(WarmNodeStatus(id=row.id, type=row.instance_type, age_seconds=round(age, 1),
                                           stopped_seconds=round(max(0.0, now - row.warm_since), 1)))
                instances.append(InstanceStatus(id=row.id, zone=row.zone, type=row.instance_type, state="warm",
                                                age_seconds=age, spend=0.0, address=row.private_ip, spot=row.spot))
                continue
            replica = by_id.get(row.replica_id or "")
            # ECS CreationTime has minute precision: when the launch returned (booting_at) is the true age
            born = (replica.booting_at if replica and replica.booting_at else None) or row.created_at
            age = max(0.0, now - born)
            price = row.price_per_hour or float(prices.get(row.instance_type, 0.0))
            spent_today += price * max(0.0, now - max(born, day_start)) / 3600.0
            instances.append(InstanceStatus(id=row.id, zone=row.zone, type=row.instance_type,
                                            state=replica.state if replica else "orphan", age_seconds=age,
                                            spend=round(price * age / 3600.0, 4), address=row.private_ip,
                                            spot=row.spot))
        return PolicyStatus(
            name=runtime.name, mode="shadow" if runtime.in_shadow else "active", paused=paused, draining=drain_requested or removed,
            metric=metric, decision=decision, replicas=dict(Counter(r.state for r in replicas)),
            instances=instances,
            warm_pool=WarmPoolStatus(size=pool_size(runtime.policy), warm=len(warm), nodes=warm),
            # the rows just read, no query of its own (the status is built up to 4 times a second)
            spend_per_hour=round(hourly_spend(runtime.policy, runtime.holdings(
                live=replicas, costing=rows.costing(runtime.name))), 4),  # type: ignore[arg-type]
            spent_today=round(spent_today, 4),
            budget_per_hour=float(runtime.policy.budget.max_per_hour),
            last_errors=[ErrorEntry(at=at, message=m) for at, m in list(runtime.errors)[:10]])

    def events(self, *, cursor: int | None, limit: int, policy: str | None) -> EventPage:
        rows, next_cursor = self._d().store.events_after(cursor=cursor, limit=limit, policy=policy)
        return EventPage(events=[Event(id=int(r.id or 0), at=r.at, policy=r.policy, kind=r.kind, message=r.message,
                                       details=json.loads(r.details) if r.details else {}) for r in rows],
                         next_cursor=next_cursor)

    def ready(self) -> tuple[bool, str]:
        d = self._d()
        if not d._ready:
            return False, d._why
        if d._last_store_error is not None and time.monotonic() - d._last_store_error < 30.0:
            return False, "state store busy or unreachable in the last 30s"
        return True, ""

    def _flags(self, policy: str, kind: str, message: str, **flags: Any) -> None:
        d = self._d()
        d.runtime(policy)  # NotFoundError for an unknown policy
        d.store.save_policy(policy, **flags)
        d.store.record_event(kind, message, policy=policy)
        d.kick(policy)

    def pause(self, policy: str) -> None:
        self._flags(policy, "pause", f"policy {policy} paused by an operator: no scaling until resumed",
                    paused=True)

    def resume(self, policy: str) -> None:
        self._flags(policy, "resume", f"policy {policy} resumed by an operator", paused=False,
                    drain_requested=False)

    def drain(self, policy: str) -> None:
        self._flags(policy, "drain", f"policy {policy}: operator drain, all cloud replicas go; "
                    "they stay at zero until resumed", drain_requested=True)

    def history(self, policy: str, since: float, limit: int) -> list[MetricPoint]:
        d = self._d()
        d.runtime(policy)
        return [MetricPoint(at=s.at, value=s.value, capacity=s.capacity, replicas=s.replicas)
                for s in d.store.samples(policy, since, limit)]

    def history_rows(self, *, after: int, since: float, limit: int) -> list[SampleRow]:
        return self._d().store.sample_rows(after=after, since=since, limit=limit)

    def replica_counts(self, policy: str) -> dict[str, int]:
        return dict(Counter(r.state for r in self._d().store.live_replicas(policy)))

