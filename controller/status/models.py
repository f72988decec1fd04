"""Response models of the status HTTP endpoint (``controller/status/app.py``), shared with the daemon that fills
them (``StatusSource``) and ``burstctl status``/``events`` that render them.

Times are epoch seconds (float, UTC); ages and durations are seconds. Every model forbids unknown fields so
the OpenAPI document says exactly what a client gets.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "POLICY_NAME_PATTERN",
    "ActionResult",
    "ControllerStatus",
    "DecisionStatus",
    "ErrorBody",
    "ErrorEntry",
    "Event",
    "EventPage",
    "Health",
    "InstanceStatus",
    "MetricPoint",
    "MetricStatus",
    "PolicyStatus",
    "Readiness",
    "SampleRow",
]

# Same rule as policies/model.py's `name` (a DNS label of at most 40 characters).
POLICY_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
# one metric sample for the status process's history window: (id, policy, at, value, capacity, replicas)
SampleRow = tuple[int, str, float, float | None, float | None, int]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricStatus(_Model):
    """The policy's latest observation of its load metric."""

    value: float | None = Field(default=None, description="latest value; null when the source failed")
    age_seconds: float | None = Field(default=None, description="seconds since the sample was taken")
    source: str = Field(default="", description="host_cpu | workload_cpu | prometheus | haproxy")
    ok: bool = Field(default=True, description="false when the last query failed or the value is stale")
    error: str | None = Field(default=None, description="why the source failed, if it did")


class DecisionStatus(_Model):
    """The last decision the strategy made for the policy, and why."""

    desired: int = Field(..., ge=0, description="cloud replicas the policy wants")
    direction: Literal["out", "in", "hold"]
    reason: str
    at: float = Field(..., description="when the decision was made (epoch seconds)")
    details: dict[str, float | str] = Field(default_factory=dict,
                                            description="strategy figures (smoothed value, threshold, ...)")


class InstanceStatus(_Model):
    """One cloud instance owned by the policy."""

    id: str
    zone: str
    type: str = Field(..., description="instance type, e.g. ecs.c6.large")
    state: str = Field(..., description="the replica's lifecycle state (launching .. releasing)")
    age_seconds: float = Field(..., ge=0)
    spend: float = Field(default=0.0, description="money spent on this instance so far (currency units)")
    address: str | None = None
    spot: bool = False


class WarmNodeStatus(_Model):
    """A stopped node of the warm pool, its workload image on its disk."""

    id: str
    type: str
    age_seconds: float = Field(..., ge=0, description="since its launch (warm_pool.max_age counts from there)")
    stopped_seconds: float = Field(..., ge=0, description="since it was stopped into the pool")
    spec_hash: str = Field(default="", description="the workload spec its disk carries")


class WarmPoolStatus(_Model):
    """The policy's warm pool (warm_pool): stopped nodes a scale-out starts before it launches new ones."""

    size: int = Field(default=0, ge=0, description="warm_pool.size: the most nodes kept (0: no pool)")
    warm: int = Field(default=0, ge=0, description="stopped nodes in the pool now")
    nodes: list[WarmNodeStatus] = Field(default_factory=list, description="oldest launch first")


class ErrorEntry(_Model):
    at: float
    message: str


class PolicyStatus(_Model):
    """Everything ops need to know about one policy at a glance."""

    name: str
    mode: Literal["active", "shadow"] = Field(
        default="active", description="the policy's mode: in shadow, `decision` is what it would do; it "
        "launches, routes and drains nothing (replicas from an active spell leave)")
    paused: bool = False
    draining: bool = Field(default=False, description="an operator drain is in progress")
    metric: MetricStatus | None = Field(default=None, description="null until the first sample")
    decision: DecisionStatus | None = Field(default=None, description="null until the first evaluation")
    replicas: dict[str, int] = Field(default_factory=dict, description="replica count by lifecycle state")
    instances: list[InstanceStatus] = Field(default_factory=list)
    warm_pool: WarmPoolStatus = Field(default_factory=WarmPoolStatus, description="stopped nodes kept for the next burst")
    spend_per_hour: float = Field(default=0.0, ge=0, description="hourly run rate of the instances held now, "
                                  "at the policy's budget.prices (what the budget caps)")
    spent_today: float = Field(default=0.0, ge=0, description="money spent by the policy's instances since "
                               "00:00 UTC, from their lifetimes in the journal (released ones included)")
    budget_per_hour: float = Field(default=0.0, ge=0, description="the cap on spend_per_hour (budget.max_per_hour)")
    last_errors: list[ErrorEntry] = Field(default_factory=list, description="most recent first")


class ControllerStatus(_Model):
    controller_id: str
    role: Literal["active", "standby"] = "active"
    version: str
    started_at: float
    ready: bool = True
    ready_reason: str = ""
    policy_errors: list[str] = Field(default_factory=list,
                                     description="FILE:LINE:COL lines from the last policy reload")
    policies: list[PolicyStatus] = Field(default_factory=list)


class Event(_Model):
    """One entry of the audit log: something the controller did or saw, with its reason."""

    id: int = Field(..., ge=0, description="increasing; use as a cursor")
    at: float
    policy: str | None = None
    kind: str = Field(..., description="e.g. decision, launch, admit, drain, release, orphan, error, reload")
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class EventPage(_Model):
    events: list[Event] = Field(default_factory=list, description="oldest first")
    next_cursor: int | None = Field(default=None, description="pass as `cursor` to get the events after this page")


class MetricPoint(_Model):
    at: float
    value: float | None = None
    capacity: float | None = None
    replicas: int = 0


class Health(_Model):
    status: Literal["ok"] = "ok"


class Readiness(_Model):
    ready: bool
    reason: str = ""
    role: Literal["active", "standby"] | None = None


class ActionResult(_Model):
    policy: str
    action: Literal["pause", "resume", "drain"]
    message: str


class ErrorBody(_Model):
    detail: str
