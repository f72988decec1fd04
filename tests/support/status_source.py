"""An in-memory StatusSource for the status endpoint's unit tests (the daemon's real one is covered by the
end-to-end tests). It follows the contract in controller/status/app.py, including its errors."""

from __future__ import annotations

import threading
import time

from controller.errors import FencedError, NotFoundError
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
)


class MemoryStatusSource:
    def __init__(self, policies: tuple[str, ...] = ("web", "api"), events: int = 250,
                 role: str = "active") -> None:
        now = time.time()
        self.role = role
        self.is_ready = (True, "")
        self._lock = threading.Lock()
        self.policies: dict[str, PolicyStatus] = {}
        for i, name in enumerate(policies):
            self.policies[name] = PolicyStatus(
                name=name,
                metric=MetricStatus(value=80.0 + i, age_seconds=3.5, source="workload_cpu", ok=True),
                decision=DecisionStatus(desired=2, direction="out", reason="cpu 81% > 75% for 2m", at=now - 10),
                replicas={"serving": 2, "booting": 1},
                instances=[InstanceStatus(id=f"i-{name}{k}", zone="cn-hangzhou-h", type="ecs.c6.large",
                                          state="serving", age_seconds=120.0, spend=0.02) for k in range(2)],
                spend_per_hour=1.24, spent_today=0.04, budget_per_hour=20.0,
                last_errors=[ErrorEntry(at=now - 60, message="DescribeInstances throttled")],
            )
        self.events_log = [
            Event(id=i + 1, at=now - 1000 + i, policy=policies[i % len(policies)] if policies else None,
                  kind="decision", message=f"event {i + 1}", details={"n": i + 1})
            for i in range(events)
        ]
        self.calls: list[tuple[str, str]] = []
        # ten minutes of samples a minute apart for each policy: (id, policy, at, value, capacity, replicas)
        self.samples = [(k * len(policies) + i + 1, name, now - 600 + 60 * k, 50.0 + k % 7, 100.0, 1)
                        for k in range(10) for i, name in enumerate(policies)]

    def status(self) -> ControllerStatus:
        with self._lock:
            return ControllerStatus(controller_id="dc1-burst", role=self.role,  # type: ignore[arg-type]
                                    version="0.1.0", started_at=time.time() - 100,
                                    ready=self.is_ready[0], ready_reason=self.is_ready[1],
                                    policy_errors=["/etc/p/bad.yaml:3:5: replicas.max: must be >= min"],
                                    policies=list(self.policies.values()))

    def events(self, *, cursor: int | None, limit: int, policy: str | None) -> EventPage:
        with self._lock:
            rows = [e for e in self.events_log if policy is None or e.policy == policy]
            if cursor is None:
                page = rows[-limit:]
            else:
                page = [e for e in rows if e.id > cursor][:limit]
            if page:
                nxt: int | None = page[-1].id
            else:
                nxt = cursor
            return EventPage(events=page, next_cursor=nxt)

    def add_event(self, policy: str, message: str) -> Event:
        with self._lock:
            ev = Event(id=self.events_log[-1].id + 1 if self.events_log else 1, at=time.time(), policy=policy,
                       kind="note", message=message)
            self.events_log.append(ev)
            return ev

    def ready(self) -> tuple[bool, str]:
        if self.role == "standby":
            return False, "standby: controller dc1-burst-b holds the lease"
        return self.is_ready

    def _act(self, action: str, policy: str) -> None:
        if self.role == "standby":
            raise FencedError("standby")
        with self._lock:
            if policy not in self.policies:
                raise NotFoundError(f"no policy named {policy!r}")
            self.calls.append((action, policy))
            p = self.policies[policy]
            if action == "pause":
                self.policies[policy] = p.model_copy(update={"paused": True})
            elif action == "resume":
                self.policies[policy] = p.model_copy(update={"paused": False, "draining": False})
            else:
                self.policies[policy] = p.model_copy(update={"draining": True})

    def pause(self, policy: str) -> None:
        self._act("pause", policy)

    def resume(self, policy: str) -> None:
        self._act("resume", policy)

    def drain(self, policy: str) -> None:
        self._act("drain", policy)

    def history(self, policy: str, since: float, limit: int) -> list[MetricPoint]:
        if policy not in self.policies:
            raise NotFoundError(f"no policy named {policy!r}")
        return [MetricPoint(at=at, value=v, capacity=c, replicas=r)
                for _, name, at, v, c, r in self.samples if name == policy and at >= since][:limit]

    def history_rows(self, *, after: int, since: float, limit: int) -> list[SampleRow]:
        rows = [s for s in self.samples if s[0] > after and s[2] >= since]
        return rows[-limit:]
