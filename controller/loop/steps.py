"""What every step of a replica's life uses (controller/loop/lifecycle.py runs the steps): the facts a round
gathered, the policy context, the names and weights of load-balancer servers, the launch request, and
``ReplicaSteps``, the base of the step classes: failing a replica, finding its node, probing its health.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from controller.errors import BurstError
from controller.health import docker_health_ok
from controller.loop.budget import Holding
from controller.loop.edges import Edges, LoopOptions
from controller.ports import (
    LABEL_REPLICA,
    TAG_CONTROLLER,
    TAG_INTENT,
    TAG_POLICY,
    Instance,
    InstanceState,
    LaunchSpec,
    LoadBalancer,
    Node,
    Owner,
    WorkloadSpec,
)
from controller.store.models import Replica, ReplicaState
from controller.store.snapshot import LiveReplica
from controller.store.state import StateStore

__all__ = ["DRAIN_SETTLE", "NO_FACTS", "AnyReplica", "PolicyContext", "ReplicaSteps", "RoundFacts", "S",
           "in_shadow", "launch_spec", "replica_weight", "server_name"]


logger = logging.getLogger(__name__)
S = ReplicaState
AnyReplica = Replica | LiveReplica  # a step reads either the ORM row or a round's snapshot row (same columns)
# after the drain command, wait this long before trusting "no sessions": a request the load balancer routed
# just before the command may not be counted yet
DRAIN_SETTLE = 1.0


@dataclass(frozen=True, slots=True)
class RoundFacts:
    """PERF: answers a round fetched for many replicas at once (controller/loop/rounds.py), handed to a step
    instead of a call of its own: instance id -> the instance (None: not found), replica id -> whether its
    health check passed. Absent: the step asks for itself."""

    described: Mapping[str, Instance | None] = field(default_factory=dict)
    probed: Mapping[str, bool] = field(default_factory=dict)


NO_FACTS = RoundFacts()


class PolicyContext(Protocol):
    """What a step needs from the policy's runtime (controller/loop/tick.py implements it)."""

    policy: Any
    store: StateStore
    edges: Edges
    options: LoopOptions
    started_at: float  # when this controller process started running the policy

    def now(self) -> float: ...
    def workload(self) -> WorkloadSpec: ...
    def load_balancer(self) -> LoadBalancer: ...
    def holdings(self) -> list[Holding]: ...
    def event(self, kind: str, message: str, **details: Any) -> None: ...
    def error(self, message: str) -> None: ...


def server_name(controller_id: str, policy: str, replica_id: str) -> str:
    """Identity in the load balancer (design rule 2): reconcile finds ours by this prefix."""
    return f"{controller_id}-{policy}-{replica_id}"


def replica_weight(policy: Any) -> int | None:
    """The policy's load-balancer weight for its replicas (``traffic.haproxy.weight``); None: the load
    balancer's default (HAProxy: the on-prem servers' weight)."""
    haproxy = policy.traffic.haproxy
    return None if haproxy is None else haproxy.weight


def in_shadow(policy: Any) -> bool:
    """``mode: shadow`` (docs/daemon.md "Shadow mode"): nothing is copied or launched for the policy."""
    return getattr(policy, "mode", "active") == "shadow"


def launch_spec(policy: Any, controller_id: str, replica_id: str, intent_id: str, user_data: str) -> LaunchSpec:
    cloud = policy.cloud
    return LaunchSpec(
        region=cloud.region, instance_types=tuple(cloud.instance_types), zones=tuple(cloud.zones),
        image_id=cloud.image_id, security_group_id=cloud.security_group, vswitches=dict(cloud.vswitches),
        spot_strategy=cloud.spot.strategy, spot_price_limit=cloud.spot.price_limit,
        spot_fallback_on_demand=cloud.spot.fallback_on_demand, user_data=user_data,
        tags={TAG_CONTROLLER: controller_id, TAG_POLICY: policy.name, TAG_INTENT: intent_id},
        name_prefix=f"burst-{policy.name}",
    )


class ReplicaSteps:
    """The state and helpers the steps share. Not thread-safe: the policy's tick job runs one at a time."""

    def __init__(self, ctx: PolicyContext) -> None:
        self.ctx = ctx
        self._last_probe: dict[str, float] = {}  # replica id -> time of its last health probe
        # replicas_per_node > 1: choosing an instance for a replica, and deciding that a replica is the last
        # on its instance, read all the policy's replicas and must not interleave (the steps run in parallel)
        self._placement = threading.Lock()


    # ------------------------------------------------------------------ helpers

    def _age_in_state(self, r: AnyReplica) -> float:
        """Seconds this replica has been in its state while this controller ran: after a restart every step
        in progress gets its full timeout again (a launch that landed during the outage must be looked at,
        not failed on sight)."""
        return self.ctx.now() - max(r.state_since, self.ctx.started_at)

    def _failed(self, r: AnyReplica, to: ReplicaState, why: str, intent_id: str | None = None) -> AnyReplica:
        """Down the failure path; the reason is kept on the replica and in the audit log."""
        with self.ctx.store.transaction():  # one commit (PERF)
            self.ctx.event("replica-failed", f"replica {r.id}: {why}; moving to {to}", replica=r.id,
                           state=r.state)
            if intent_id is not None:
                return self.ctx.store.fail(intent_id, why, to=to, failure=why) or r
            return self.ctx.store.transition(r.id, to, failure=why)

    def _node(self, r: AnyReplica) -> Node | None:
        row = self.ctx.store.instance(r.instance_id) if r.instance_id else None
        if row is None or not row.private_ip or row.released_at is not None:
            return None  # no node (yet), or it is gone: nothing to reach on it
        endpoint = row.docker_endpoint or self.ctx.edges.node_endpoint(
            Instance(id=row.id, state=InstanceState.RUNNING, instance_type=row.instance_type, zone=row.zone,
                     private_ip=row.private_ip, tags={}))
        return Node(instance_id=row.id, address=row.private_ip, docker_endpoint=endpoint)

    def _backend(self) -> str:
        traffic = self.ctx.policy.traffic
        return str(traffic.haproxy.backend) if traffic.haproxy is not None else str(traffic.slb.load_balancer_id)

    def has_work(self, r: AnyReplica) -> bool:
        """Whether ``advance`` could do anything now; False only for a serving replica whose probe is not
        due (PERF: the tick then spends no thread on it). Does not consume the probe's turn."""
        if r.state != S.SERVING:
            return True
        last = self._last_probe.get(r.id)
        return last is None or self.ctx.now() - last >= float(self.ctx.policy.workload.health.interval)

    def _probe_due(self, r: AnyReplica) -> bool:
        interval = float(self.ctx.policy.workload.health.interval)
        last = self._last_probe.get(r.id)
        now = self.ctx.now()
        if last is not None and now - last < interval:
            return False
        self._last_probe[r.id] = now
        return True

    def probe_passed(self, r: AnyReplica, at: float) -> None:
        """A round probed this replica with the others and it passed: its turn is taken, nothing to write."""
        self._last_probe[r.id] = at

    def _probe(self, r: AnyReplica, facts: RoundFacts = NO_FACTS) -> bool:
        if r.id in facts.probed:
            return facts.probed[r.id]
        health = self.ctx.policy.workload.health
        if not r.address or not r.port:
            return False
        if not self.ctx.edges.health.probe(r.address, int(r.port), str(health.path), float(health.timeout)):
            return False
        return self.docker_health([r]).get(r.id, False) if self.has_docker_health() else True

    def has_docker_health(self) -> bool:
        """Whether the workload defines a Docker HEALTHCHECK (the replicas carry the same one): then a check
        passes only when the container's Docker health is also ``healthy``."""
        try:
            return bool(self.ctx.workload().healthcheck)
        except BurstError:
            return False

    def docker_health(self, replicas: Sequence[AnyReplica]) -> dict[str, bool]:
        """Replica id -> whether Docker reports its container ``healthy``: one container listing per node.
        A node that cannot be read, or a container not found, is not a pass."""
        ctx, out = self.ctx, {}
        by_node: dict[str, list[AnyReplica]] = {}
        for r in replicas:
            if r.instance_id:
                by_node.setdefault(r.instance_id, []).append(r)
        for rs in by_node.values():
            node = self._node(rs[0])
            health: dict[str, str | None] = {}
            if node is not None:
                try:
                    health = {c.labels.get(LABEL_REPLICA, ""): c.health
                              for c in ctx.edges.runtime.list(node, Owner(ctx.options.controller_id, rs[0].policy))}
                except BurstError as exc:
                    logger.info("node %s: Docker health unreadable: %s", node.instance_id, exc)
            for r in rs:
                out[r.id] = r.id in health and docker_health_ok(health[r.id])
        return out
