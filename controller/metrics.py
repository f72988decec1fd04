"""The controller's Prometheus metrics, defined once here. The daemon's jobs and the adapters' call wrapper
update them; ``controller/status/app.py`` serves them on ``/metrics``.

Counters and histograms are updated where things happen (``timed_call`` for outside calls, the daemon's
job guard and the rounds for job runs and errors, the state store for decisions and events, the replicate
step for image copies); ``spend_total`` follows ``spent_today`` at each snapshot; per-policy gauges are refreshed from the status snapshot at scrape time
(``observe_status``), so they can never disagree with ``/v1/status``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from controller.errors import NotFoundError, PermanentError, TransientError

if TYPE_CHECKING:
    from controller.status.models import ControllerStatus

__all__ = [
    "API_CALLS",
    "API_SECONDS",
    "BUDGET_HOUR",
    "DECISIONS",
    "DESIRED",
    "EVENTS",
    "INFO",
    "LEADER",
    "METRIC_AGE",
    "METRIC_UP",
    "METRIC_VALUE",
    "PAUSED",
    "POLICY_ERRORS",
    "POLICY_SHADOW",
    "REGISTRY",
    "REPLICAS",
    "REPLICATION_SECONDS",
    "SPEND_RATE",
    "SPEND_TOTAL",
    "SPENT_TODAY",
    "TICK_ERRORS",
    "TICK_JOBS",
    "TICK_SECONDS",
    "WARM_NODES",
    "observe_status",
    "timed_call",
]

# A registry of our own (not prometheus_client's global one) so several controllers in one test process,
# or a library importing us, never collide on names.
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_NS = "burst"

# --- updated by the control loop
TICK_SECONDS = Histogram(
    "tick_duration_seconds", "Duration of one run of a scheduled job (per policy where it applies)",
    ["task"], namespace=_NS, registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
# "task", not "job": Prometheus gives every scraped series its target's job label
TICK_ERRORS = Counter("tick_errors_total", "Scheduled job runs that ended in an error",
                      ["task"], namespace=_NS, registry=REGISTRY)
DECISIONS = Counter("decisions_total", "Decisions made by the strategies",
                    ["policy", "direction"], namespace=_NS, registry=REGISTRY)
EVENTS = Counter("events_total", "Audit events recorded, by kind", ["kind"], namespace=_NS, registry=REGISTRY)
REPLICATION_SECONDS = Histogram(
    "image_replication_seconds", "Time to copy a workload image to the cloud registry",
    ["policy"], namespace=_NS, registry=REGISTRY, buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
# the jobs and round parts whose runs are timed and whose errors are counted; each series exists (at 0) from
# the start, so an alert on a rise works before the first error
TICK_JOBS = ("sample", "step", "tick", "reconcile", "reload", "gc", "replicate")
for _job in TICK_JOBS:
    TICK_ERRORS.labels(_job)

# --- updated by every request to an outside system (see timed_call): each attempt of a retried call counts
API_CALLS = Counter("api_calls_total",
                    "Requests to outside systems (outcome: ok|transient|not_found|permanent|other)",
                    ["system", "operation", "outcome"], namespace=_NS, registry=REGISTRY)
API_SECONDS = Histogram("api_call_duration_seconds", "Duration of requests to outside systems",
                        ["system", "operation", "outcome"], namespace=_NS, registry=REGISTRY,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

# --- refreshed from the status snapshot at scrape time (observe_status)
REPLICAS = Gauge("replicas", "Cloud replicas by lifecycle state", ["policy", "state"],
                 namespace=_NS, registry=REGISTRY)
WARM_NODES = Gauge("warm_nodes", "Stopped nodes in the policy's warm pool, each billed its disk only", ["policy"],
                   namespace=_NS, registry=REGISTRY)
DESIRED = Gauge("desired_replicas", "Replicas the last decision asked for", ["policy"],
                namespace=_NS, registry=REGISTRY)
METRIC_VALUE = Gauge("metric_value", "Latest value of the policy's load metric", ["policy"],
                     namespace=_NS, registry=REGISTRY)
METRIC_AGE = Gauge("metric_age_seconds", "Age of the policy's latest metric sample", ["policy"],
                   namespace=_NS, registry=REGISTRY)
METRIC_UP = Gauge("metric_source_up", "1 when the policy's metric source answered", ["policy"],
                  namespace=_NS, registry=REGISTRY)
SPEND_RATE = Gauge("spend_per_hour", "Hourly run rate of the policy's instances at its prices (currency/h)",
                   ["policy"], namespace=_NS, registry=REGISTRY)
SPENT_TODAY = Gauge("spent_today", "Money spent by the policy's instances since 00:00 UTC, from their "
                    "lifetimes in the journal", ["policy"], namespace=_NS, registry=REGISTRY)
SPEND_TOTAL = Counter("spend_total", "Money spent by the policy's instances since this controller started "
                      "(currency units; follows spent_today between scrapes)", ["policy"], namespace=_NS,
                      registry=REGISTRY)
BUDGET_HOUR = Gauge("budget_per_hour", "The policy's hourly spend cap", ["policy"], namespace=_NS,
                    registry=REGISTRY)
PAUSED = Gauge("policy_paused", "1 when the policy is paused by an operator", ["policy"], namespace=_NS,
               registry=REGISTRY)
POLICY_SHADOW = Gauge("policy_shadow", "1 when the policy is in shadow mode: its decisions and desired_replicas "
                      "say what it would do, it acts on none", ["policy"], namespace=_NS, registry=REGISTRY)
POLICY_ERRORS = Gauge("policy_errors", "Problems found in policy files at the last reload", namespace=_NS,
                      registry=REGISTRY)
LEADER = Gauge("leader", "1 when this controller is the active one, 0 on a standby", namespace=_NS,
               registry=REGISTRY)
INFO = Info("controller", "Controller identity and version", namespace=_NS, registry=REGISTRY)

_observe_lock = threading.Lock()
_children: dict[tuple[Gauge, tuple[str, ...]], Any] = {}  # (gauge, label values) -> its series, see observe_status
_spent: dict[str, tuple[int, float]] = {}  # policy -> (UTC day, spent_today) at the last observe_status


@contextmanager
def timed_call(system: str, operation: str) -> Iterator[None]:
    """Count and time one request to an outside system, by its outcome: the one wrapper every adapter's
    request to ECS, SLB, the registries and the nodes' Docker Engines goes through::

        with timed_call("ecs", "RunInstances"):
            ...

    ``operation`` is a fixed name (an API action, "GET manifest"), never an id: every value is a series.
    An error is classified by the project's type it was mapped to inside the block (transient,
    not_found, permanent), else "other"."""
    outcome = "ok"
    start = time.perf_counter()
    try:
        yield
    except TransientError:
        outcome = "transient"
        raise
    except NotFoundError:  # routine: an inspect of a container already gone, a blob not there yet
        outcome = "not_found"
        raise
    except PermanentError:
        outcome = "permanent"
        raise
    except BaseException:
        outcome = "other"
        raise
    finally:
        API_CALLS.labels(system, operation, outcome).inc()
        API_SECONDS.labels(system, operation, outcome).observe(time.perf_counter() - start)


def observe_status(status: ControllerStatus) -> None:
    """Set the per-policy gauges from a status snapshot; policies that disappeared lose their series.
    PERF: each series' child is kept between calls (``labels()`` costs ~20 µs, 4,000 series at 500
    policies), and only the series no longer present are removed."""
    with _observe_lock:
        INFO.info({"controller_id": status.controller_id, "version": status.version, "role": status.role})
        LEADER.set(1 if status.role == "active" else 0)
        POLICY_ERRORS.set(len(status.policy_errors))
        seen: set[tuple[Gauge, tuple[str, ...]]] = set()
        day = int(time.time() // 86400)

        def put(gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
            key = (gauge, labels)
            child = _children.get(key)
            if child is None:
                child = _children[key] = gauge.labels(*labels)
            child.set(value)
            seen.add(key)

        for p in status.policies:
            for state, count in p.replicas.items():
                put(REPLICAS, (p.name, state), count)
            put(WARM_NODES, (p.name,), p.warm_pool.warm)
            if p.decision is not None:
                put(DESIRED, (p.name,), p.decision.desired)
            if p.metric is not None:
                put(METRIC_UP, (p.name,), 1 if p.metric.ok else 0)
                if p.metric.value is not None:
                    put(METRIC_VALUE, (p.name,), p.metric.value)
                if p.metric.age_seconds is not None:
                    put(METRIC_AGE, (p.name,), p.metric.age_seconds)
            put(SPEND_RATE, (p.name,), p.spend_per_hour)
            put(SPENT_TODAY, (p.name,), p.spent_today)
            _count_spend(p.name, day, p.spent_today)
            put(BUDGET_HOUR, (p.name,), p.budget_per_hour)
            put(PAUSED, (p.name,), 1 if p.paused else 0)
            put(POLICY_SHADOW, (p.name,), 1 if p.mode == "shadow" else 0)
        for gone in [name for name in _spent if (SPENT_TODAY, (name,)) not in seen]:
            del _spent[gone]
            with suppress(KeyError):
                SPEND_TOTAL.remove(gone)
        for gauge, labels in [k for k in _children if k not in seen]:
            del _children[(gauge, labels)]
            with suppress(KeyError):  # cleared by someone else meanwhile
                gauge.remove(*labels)


def _count_spend(policy: str, day: int, spent_today: float) -> None:
    """``spend_total`` grows by what ``spent_today`` grew since the last snapshot (after midnight, by all of
    the new day's). The first snapshot of a policy only sets the baseline: the counter starts at 0."""
    last = _spent.get(policy)
    _spent[policy] = (day, spent_today)
    child = SPEND_TOTAL.labels(policy)
    if last is None:
        return
    grown = spent_today - last[1] if last[0] == day else spent_today
    if grown > 0:
        child.inc(grown)
