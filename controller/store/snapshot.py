"""One read of the whole fleet for a round of the loop (controller/loop/rounds.py) and for the reconcile: every live
replica, every policy's flags, what the budget counts and the journal's live instances, in four queries,
as plain slotted rows instead of ORM objects (PERF, docs/ha.md "Scale": ~7 µs a row instead of ~40). The
status endpoint's snapshot reads the same way (``read_status``: the columns the status shows, in one read
transaction, instead of five queries per policy).

Rows are snapshots: a step that acts on one re-reads nothing, it writes through ``StateStore`` by id, which
returns the ORM row as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import Engine, Select, bindparam, select

from controller.store.models import (
    DecisionRow,
    InstanceRow,
    Intent,
    IntentKind,
    IntentState,
    PolicyState,
    Replica,
    ReplicaState,
)

__all__ = ["FleetSnapshot", "LiveInstance", "LiveReplica", "PolicyFlags", "StatusRows", "read_fleet",
           "read_instances", "read_replicas", "read_status"]


@dataclass(slots=True)
class LiveReplica:
    """A replica row as read: the columns the loop reads (the planner, the budget, the reconcile and a
    replica's step read it exactly like the ORM row; the state timestamps, reason and failure are left out:
    narrower rows read faster, PERF)."""

    id: str
    policy: str
    state: str
    spec_hash: str
    instance_id: str | None
    container_id: str | None
    server_name: str | None
    address: str | None
    port: int | None
    health_passes: int
    health_failures: int
    created_at: float
    state_since: float


@dataclass(slots=True)
class LiveInstance:
    """An instance row of the journal: the columns the budget and the reconcile read."""

    id: str
    policy: str
    replica_id: str | None
    instance_type: str
    state: str
    private_ip: str | None
    docker_endpoint: str | None
    spot: bool
    price_per_hour: float | None
    warm_since: float | None  # in the warm pool (stopped) since then


@dataclass(slots=True)
class PolicyFlags:
    """The loop's part of a policy's row (its spec text is not read in a round)."""

    policy: str
    paused: bool
    removed: bool
    drain_requested: bool
    last_scale_out: float | None
    last_scale_in: float | None
    target: int | None


# (live instances (id, replica_id, instance_type, price_per_hour, warm_since), pending launches (intent, replica))
Costing = tuple[list[tuple[str, str | None, str, float | None, float | None]], list[tuple[str, str | None]]]


@dataclass
class FleetSnapshot:
    replicas: dict[str, list[LiveReplica]] = field(default_factory=dict)  # policy -> live, oldest first
    flags: dict[str, PolicyFlags] = field(default_factory=dict)
    # policy -> (live instances (id, replica_id, instance_type, price_per_hour), pending launches
    # (intent id, replica_id)): what ``PolicyRuntime.holdings`` counts
    costing: dict[str, Costing] = field(default_factory=dict)

    def live(self, policy: str) -> list[LiveReplica]:
        return self.replicas.get(policy, [])

    def costs(self, policy: str) -> Costing:
        return self.costing.get(policy) or ([], [])


def _columns(row_type: type, table: Any) -> list[Any]:
    return [table.c[f.name] for f in fields(row_type)]


_REPLICA_COLS = _columns(LiveReplica, Replica.__table__)  # type: ignore[attr-defined]
_INSTANCE_COLS = _columns(LiveInstance, InstanceRow.__table__)  # type: ignore[attr-defined]
_FLAG_COLS = _columns(PolicyFlags, PolicyState.__table__)  # type: ignore[attr-defined]
_R = Replica.__table__.c  # type: ignore[attr-defined]
_I = InstanceRow.__table__.c  # type: ignore[attr-defined]
_N = Intent.__table__.c  # type: ignore[attr-defined]
# built once (no statement construction per round); "live" is every state but gone
_LIVE_REPLICAS = select(*_REPLICA_COLS).where(_R.state != ReplicaState.GONE).order_by(_R.created_at, _R.id)
_LIVE_REPLICAS_OF = (select(*_REPLICA_COLS).where(_R.state != ReplicaState.GONE,
                                                  _R.policy.in_(bindparam("policies", expanding=True)))
                     .order_by(_R.created_at, _R.id))
_LIVE_INSTANCES = select(*_INSTANCE_COLS).where(_I.released_at.is_(None))
_FLAGS = select(*_FLAG_COLS)
_PENDING_LAUNCHES = select(_N.policy, _N.id, _N.replica_id).where(_N.kind == IntentKind.LAUNCH,
                                                                   _N.state == IntentState.PENDING)


def read_replicas(engine: Engine, policies: Sequence[str] | None = None) -> dict[str, list[LiveReplica]]:
    """Live replicas by policy (of ``policies`` only when given), oldest first."""
    out: dict[str, list[LiveReplica]] = {}
    with engine.connect() as conn:
        result = (conn.execute(_LIVE_REPLICAS) if policies is None
                  else conn.execute(_LIVE_REPLICAS_OF, {"policies": list(policies)}))
        for row in result.all():  # PERF: one fetchall (iterating fetches row by row)
            r = LiveReplica(*row)
            out.setdefault(r.policy, []).append(r)
    return out


def read_instances(engine: Engine) -> list[LiveInstance]:
    """The journal's instances not yet released."""
    with engine.connect() as conn:
        return [LiveInstance(*row) for row in conn.execute(_LIVE_INSTANCES).all()]


def read_fleet(engine: Engine) -> tuple[FleetSnapshot, list[LiveInstance]]:
    """The whole fleet in four queries on one connection; also the live instances, which the budget's
    figures are made of (the reconcile reuses them)."""
    snap = FleetSnapshot()
    with engine.connect() as conn:
        for row in conn.execute(_LIVE_REPLICAS).all():  # PERF: one fetchall (iterating fetches row by row)
            r = LiveReplica(*row)
            snap.replicas.setdefault(r.policy, []).append(r)
        for row in conn.execute(_FLAGS).all():
            snap.flags[row[0]] = PolicyFlags(*row)
        instances = [LiveInstance(*row) for row in conn.execute(_LIVE_INSTANCES).all()]
        launches = conn.execute(_PENDING_LAUNCHES).all()
    for inst in instances:
        snap.costing.setdefault(inst.policy, ([], []))[0].append(
            (inst.id, inst.replica_id, inst.instance_type, inst.price_per_hour, inst.warm_since))
    for policy, intent_id, replica_id in launches:
        snap.costing.setdefault(policy, ([], []))[1].append((intent_id, replica_id))
    return snap, instances


# ---------------------------------------------------------------------- the status endpoint's read


@dataclass(slots=True)
class StatusReplica:
    """What the status shows of a live replica (and what the budget's holdings read of it)."""

    id: str
    policy: str
    state: str
    instance_id: str | None
    booting_at: float | None


@dataclass(slots=True)
class StatusInstance:
    """What the status shows of a live instance of the journal."""

    id: str
    policy: str
    replica_id: str | None
    zone: str
    instance_type: str
    private_ip: str | None
    spot: bool
    price_per_hour: float | None
    created_at: float
    warm_since: float | None  # in the warm pool (stopped) since then


@dataclass(slots=True)
class StatusDecision:
    desired: int
    direction: str
    reason: str
    at: float
    details: str | None


@dataclass
class StatusRows:
    replicas: dict[str, list[StatusReplica]] = field(default_factory=dict)  # policy -> live, oldest first
    flags: dict[str, tuple[bool, bool, bool]] = field(default_factory=dict)  # paused, drain_requested, removed
    instances: dict[str, list[StatusInstance]] = field(default_factory=dict)
    launches: dict[str, list[tuple[str, str | None]]] = field(default_factory=dict)  # pending (intent, replica)
    decisions: dict[str, StatusDecision] = field(default_factory=dict)  # the latest of each policy
    # policy -> instances released since ``day_start``: (instance_type, price_per_hour, created_at, released_at)
    released: dict[str, list[tuple[str, float | None, float, float]]] = field(default_factory=dict)

    def costing(self, policy: str) -> Costing:
        """The policy's rows as ``PolicyRuntime.holdings`` counts them (no query)."""
        return ([(i.id, i.replica_id, i.instance_type, i.price_per_hour, i.warm_since)
                 for i in self.instances.get(policy, [])],
                self.launches.get(policy, []))


_P = PolicyState.__table__.c  # type: ignore[attr-defined]
_D = DecisionRow.__table__.c  # type: ignore[attr-defined]
_STATUS_REPLICAS: Select[Any] = (
    select(*_columns(StatusReplica, Replica.__table__))  # type: ignore[attr-defined]
    .where(_R.state != ReplicaState.GONE).order_by(_R.created_at, _R.id))
_STATUS_INSTANCES: Select[Any] = (
    select(*_columns(StatusInstance, InstanceRow.__table__))  # type: ignore[attr-defined]
    .where(_I.released_at.is_(None)).order_by(_I.created_at, _I.id))
_RELEASED_SINCE = (select(_I.policy, _I.instance_type, _I.price_per_hour, _I.created_at, _I.released_at)
                   .where(_I.released_at >= bindparam("since")))
_STATUS_FLAGS = select(_P.policy, _P.paused, _P.drain_requested, _P.removed)
# the latest decision of a policy: the (policy, at) index finds it without reading the policy's history
# (latest by time, ties by id: one policy's decisions are written in order, one evaluation at a time)
_LAST_DECISION = (select(_D.desired, _D.direction, _D.reason, _D.at, _D.details)
                  .where(_D.policy == bindparam("policy")).order_by(_D.at.desc(), _D.id.desc()).limit(1))
_D2 = DecisionRow.__table__.alias("d2")  # type: ignore[attr-defined]
# ... and of every policy with a row in policy_state, in one statement (one index lookup per policy)
_LAST_DECISIONS = (select(_D.policy, _D.desired, _D.direction, _D.reason, _D.at, _D.details)
                   .select_from(PolicyState.__table__.join(  # type: ignore[attr-defined]
                       DecisionRow.__table__,  # type: ignore[attr-defined]
                       _D.id == select(_D2.c.id).where(_D2.c.policy == _P.policy)
                       .order_by(_D2.c.at.desc(), _D2.c.id.desc()).limit(1).scalar_subquery())))


def read_status(engine: Engine, policies: Sequence[str], day_start: float | None = None) -> StatusRows:
    """Everything the status shows from the store, for ``policies``, in one read transaction on one
    connection (one snapshot of the database on SQLite; each statement read-committed on PostgreSQL): five
    queries for the whole fleet (PERF: at 500 policies the status took five ORM queries per
    policy, 1.4 s of the daemon's CPU per build). With ``day_start``, also the instances released since then
    (what was spent today)."""
    rows = StatusRows()
    with engine.connect() as conn:
        for row in conn.execute(_STATUS_REPLICAS).all():
            r = StatusReplica(*row)
            rows.replicas.setdefault(r.policy, []).append(r)
        for row in conn.execute(_STATUS_INSTANCES).all():
            i = StatusInstance(*row)
            rows.instances.setdefault(i.policy, []).append(i)
        rows.flags = {str(p): (bool(a), bool(b), bool(c)) for p, a, b, c in conn.execute(_STATUS_FLAGS).all()}
        if day_start is not None:
            for policy, itype, price, created, released in conn.execute(_RELEASED_SINCE, {"since": day_start}).all():
                rows.released.setdefault(policy, []).append((itype, price, created, released))
        for policy, intent_id, replica_id in conn.execute(_PENDING_LAUNCHES).all():
            rows.launches.setdefault(policy, []).append((intent_id, replica_id))
        wanted = set(policies)
        for policy, *last in conn.execute(_LAST_DECISIONS).all():
            if policy in wanted:
                rows.decisions[policy] = StatusDecision(*last)
        for policy in wanted - rows.flags.keys():  # no policy_state row (not saved yet): on its own
            one = conn.execute(_LAST_DECISION, {"policy": policy}).first()
            if one is not None:
                rows.decisions[policy] = StatusDecision(*one)
    return rows
