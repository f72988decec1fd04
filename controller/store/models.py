"""The rows of the state database as sqlmodel classes (the current schema; ``migrations.py`` creates it).

Used through ``controller.store.state.StateStore``; the loop reads and writes these objects, detached from any
session. Times are epoch seconds (float); JSON-shaped columns are text.
"""

from __future__ import annotations

from enum import StrEnum

from sqlmodel import Field, SQLModel

__all__ = [
    "ACTIVE_STATES",
    "JOINABLE_STATES",
    "LEAVING_STATES",
    "DecisionRow",
    "EventRow",
    "InstanceRow",
    "Intent",
    "IntentKind",
    "IntentState",
    "MetricSample",
    "NodeImageRow",
    "PolicyState",
    "Replica",
    "ReplicaState",
]


class IntentKind(StrEnum):
    REPLICATE = "replicate"
    LAUNCH = "launch"
    START = "start"
    ADMIT = "admit"
    DRAIN = "drain"
    REMOVE = "remove"
    STOP = "stop"
    RELEASE = "release"
    ADOPT = "adopt"
    # the warm pool (controller/loop/warm_pool.py): stop a drained node instead of releasing it, start one
    # for a new replica, release one that expired
    PARK = "park"
    WAKE = "wake"
    EXPIRE = "expire"
    # an automatic bake of a node image for one workload spec hash (controller/loop/auto_bake.py)
    BAKE = "bake"


class IntentState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class ReplicaState(StrEnum):
    PLANNED = "planned"
    REPLICATING = "replicating"
    LAUNCHING = "launching"
    BOOTING = "booting"
    STARTING = "starting"
    HEALTHY = "healthy"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPING = "stopping"
    RELEASING = "releasing"
    GONE = "gone"


# On their way in or serving: what the policy counts as its replicas.
ACTIVE_STATES = frozenset({ReplicaState.PLANNED, ReplicaState.REPLICATING, ReplicaState.LAUNCHING,
                           ReplicaState.BOOTING, ReplicaState.STARTING, ReplicaState.HEALTHY,
                           ReplicaState.SERVING})
# replicas_per_node > 1: another replica may join an instance while all its replicas are in these states
JOINABLE_STATES = frozenset({ReplicaState.BOOTING, ReplicaState.STARTING, ReplicaState.HEALTHY,
                             ReplicaState.SERVING})
# On their way out: still holding an instance (and costing money) until gone.
LEAVING_STATES = frozenset({ReplicaState.DRAINING, ReplicaState.STOPPING, ReplicaState.RELEASING})


class Intent(SQLModel, table=True):
    __tablename__ = "intents"
    id: str = Field(primary_key=True, max_length=64)
    kind: str
    policy: str
    replica_id: str | None = None
    target: str | None = None
    token: str
    state: str = IntentState.PENDING
    attempts: int = 0
    created_at: float
    updated_at: float
    outcome: str | None = None
    error: str | None = None
    payload: str | None = None
    fence: int | None = None


class InstanceRow(SQLModel, table=True):
    __tablename__ = "instances"
    id: str = Field(primary_key=True)
    policy: str
    replica_id: str | None = None
    intent_id: str | None = None
    instance_type: str
    zone: str
    private_ip: str | None = None
    docker_endpoint: str | None = None
    state: str
    spot: bool = False
    price_per_hour: float | None = None
    created_at: float
    updated_at: float
    released_at: float | None = None
    # in the warm pool: stopped since then, with this workload spec and replica image on its disk (None: not)
    warm_since: float | None = None
    warm_spec_hash: str | None = None
    warm_image: str | None = None


class Replica(SQLModel, table=True):
    __tablename__ = "replicas"
    id: str = Field(primary_key=True)
    policy: str
    state: str = ReplicaState.PLANNED
    spec_hash: str = ""
    image: str | None = None
    instance_id: str | None = None
    container_id: str | None = None
    server_name: str | None = None
    address: str | None = None
    port: int | None = None
    health_passes: int = 0
    health_failures: int = 0
    reason: str | None = None
    failure: str | None = None
    created_at: float
    updated_at: float
    state_since: float
    planned_at: float | None = None
    replicating_at: float | None = None
    launching_at: float | None = None
    booting_at: float | None = None
    starting_at: float | None = None
    healthy_at: float | None = None
    serving_at: float | None = None
    draining_at: float | None = None
    stopping_at: float | None = None
    releasing_at: float | None = None
    gone_at: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class DecisionRow(SQLModel, table=True):
    __tablename__ = "decisions"
    id: int | None = Field(default=None, primary_key=True)
    policy: str
    at: float
    value: float | None = None
    desired: int
    actual: int
    direction: str
    reason: str
    details: str | None = None


class MetricSample(SQLModel, table=True):
    __tablename__ = "metric_samples"
    id: int | None = Field(default=None, primary_key=True)
    policy: str
    at: float
    value: float | None = None
    ok: bool
    source: str = ""
    error: str | None = None
    capacity: float | None = None
    replicas: int = 0


class EventRow(SQLModel, table=True):
    __tablename__ = "events"
    id: int | None = Field(default=None, primary_key=True)
    at: float
    policy: str | None = None
    kind: str
    message: str
    details: str | None = None


class PolicyState(SQLModel, table=True):
    __tablename__ = "policy_state"
    policy: str = Field(primary_key=True)
    paused: bool = False
    removed: bool = False
    drain_requested: bool = False
    last_scale_out: float | None = None
    last_scale_in: float | None = None
    target: int | None = None
    spec: str | None = None
    source_file: str | None = None
    updated_at: float


class NodeImageRow(SQLModel, table=True):
    """A baked node image: the policy's workload (``spec_hash``) already on a cloud image (``burstctl bake``)."""

    __tablename__ = "node_images"
    image_id: str = Field(primary_key=True)
    policy: str
    spec_hash: str
    workload_image: str
    base_image_id: str
    builder_instance: str | None = None
    created_at: float
    deleted_at: float | None = None
