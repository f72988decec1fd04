"""Drift roll-forward: when the on-prem spec changes (new ``spec_hash``), replace the cloud replicas one
at a time: start a replica of the new spec beside an old one, admit it once healthy, then drain the old.
``next_roll_step`` decides (pure); ``roll_forward`` carries the steps out through the ports. Called by the
controller's reconcile step when the captured hash differs from the replicas' ``LABEL_SPEC_HASH``."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from controller.drain import DrainSettings, DrainTarget, drain_replica
from controller.errors import TransientError
from controller.health import HealthProbe, HealthTracker, Transition
from controller.ports import (
    LABEL_CONTROLLER,
    LABEL_POLICY,
    LABEL_REPLICA,
    LABEL_SPEC_HASH,
    LoadBalancer,
    Node,
    NodeRuntime,
    Owner,
    Server,
    WorkloadSpec,
)

__all__ = [
    "RollStep",
    "RolloutReplica",
    "RolloutSettings",
    "StepKind",
    "next_roll_step",
    "replica_name",
    "roll_forward",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RolloutReplica:
    name: str  # container name == load-balancer server name
    node_id: str
    spec_hash: str
    admitted: bool  # in the load balancer, ready
    draining: bool = False  # in the load balancer, draining
    sessions: int = 0
    container_id: str = ""


class StepKind(StrEnum):
    START = "start"  # start a replica of the new spec on ``node_id``
    ADMIT = "admit"  # wait for ``replica`` (new spec) to pass its health checks, then add it
    DRAIN = "drain"  # drain and stop ``replica``
    DONE = "done"


@dataclass(frozen=True, slots=True)
class RollStep:
    kind: StepKind
    node_id: str | None = None
    replica: RolloutReplica | None = None


def next_roll_step(replicas: Sequence[RolloutReplica], target_hash: str, per_node: int = 1) -> RollStep:
    """The one next step. One node at a time, one replica at a time, surge of one: a node never has fewer
    serving replicas than it had, and an unfinished step (a drain, an unadmitted new replica) is finished
    before anything new starts."""
    by_node: dict[str, list[RolloutReplica]] = {}
    for r in replicas:
        by_node.setdefault(r.node_id, []).append(r)
    for node_id in sorted(by_node):
        reps = sorted(by_node[node_id], key=lambda r: r.name)
        draining = [r for r in reps if r.draining]
        if draining:
            return RollStep(StepKind.DRAIN, node_id, draining[0])
        pending = [r for r in reps if r.spec_hash == target_hash and not r.admitted]
        if pending:
            return RollStep(StepKind.ADMIT, node_id, pending[0])
        stale = [r for r in reps if r.spec_hash != target_hash]
        if not stale:
            continue
        fresh = len(reps) - len(stale)
        if len(stale) + fresh > max(per_node, 1):
            victim = min(stale, key=lambda r: (r.admitted, r.sessions, r.name))
            return RollStep(StepKind.DRAIN, node_id, victim)
        return RollStep(StepKind.START, node_id)
    return RollStep(StepKind.DONE)


def replica_name(controller_id: str, policy: str, replica: str) -> str:
    """Container and server name: identity readable in ``docker ps`` and HAProxy's stats."""
    return f"{controller_id}-{policy}-{replica}"


@dataclass(frozen=True)
class RolloutSettings:
    controller_id: str
    policy: str
    backend: str
    drain: DrainSettings
    health_passes: int = 3
    health_interval: float = 1.0
    admit_timeout: float = 120.0  # a new replica not admitted by then is removed and the roll stops
    per_node: int = 1
    step_limit: int = 1000
    extra_labels: dict[str, str] = field(default_factory=dict)


def _observe(runtime: NodeRuntime, lb: LoadBalancer, nodes: Sequence[Node],
             s: RolloutSettings) -> tuple[list[RolloutReplica], dict[str, tuple[Node, str]]]:
    servers = {srv.name: srv for srv in lb.list(s.backend)}
    replicas, where = [], {}
    for node in nodes:
        for c in runtime.list(node, Owner(s.controller_id, s.policy)):
            if c.state not in ("running", "created", "restarting"):
                continue
            srv = servers.get(c.name)
            replicas.append(RolloutReplica(
                name=c.name, node_id=node.instance_id, spec_hash=c.labels.get(LABEL_SPEC_HASH, ""),
                admitted=srv is not None and srv.state == "ready", draining=srv is not None and srv.state == "drain",
                sessions=srv.sessions if srv else 0, container_id=c.id))
            where[c.name] = (node, c.id)
    return replicas, where


def _admit(runtime: NodeRuntime, lb: LoadBalancer, probe: HealthProbe, node: Node, name: str,
           s: RolloutSettings, sleep: Callable[[float], None]) -> None:
    tracker = HealthTracker(s.health_passes, 1)
    deadline = time.monotonic() + s.admit_timeout
    while time.monotonic() < deadline:
        container = next((c for c in runtime.list(node, Owner(s.controller_id, s.policy)) if c.name == name), None)
        if container is None:
            raise TransientError(f"rollout: new replica {name} disappeared before admission")
        result = probe.check([container]).get(name)
        if result is not None and tracker.record(name, result.ok) is Transition.ADMIT:
            lb.add(s.backend, Server(name=name, address=container.address, port=container.port,
                                     instance_id=node.instance_id))
            logger.info("rollout: admitted %s", name)
            return
        sleep(s.health_interval)
    raise TransientError(f"rollout: new replica {name} did not pass {s.health_passes} health checks within "
                         f"{s.admit_timeout:g}s")


def roll_forward(
    runtime: NodeRuntime,
    lb: LoadBalancer,
    probe: HealthProbe,
    nodes: Sequence[Node],
    spec: WorkloadSpec,
    settings: RolloutSettings,
    *,
    new_replica_id: Callable[[], str] = lambda: uuid.uuid4().hex[:10],
    on_step: Callable[[RollStep], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Replace every replica whose spec hash differs from ``spec.spec_hash``; returns the steps taken."""
    node_by_id = {n.instance_id: n for n in nodes}
    for steps in range(settings.step_limit):
        replicas, where = _observe(runtime, lb, nodes, settings)
        step = next_roll_step(replicas, spec.spec_hash, settings.per_node)
        if on_step is not None:
            on_step(step)
        if step.kind is StepKind.DONE:
            return steps
        assert step.node_id is not None
        node = node_by_id[step.node_id]
        if step.kind is StepKind.START:
            replica = new_replica_id()
            name = replica_name(settings.controller_id, settings.policy, replica)
            labels = {**settings.extra_labels, LABEL_CONTROLLER: settings.controller_id,
                      LABEL_POLICY: settings.policy, LABEL_REPLICA: replica, LABEL_SPEC_HASH: spec.spec_hash}
            runtime.start(node, spec, name, labels)
            try:
                _admit(runtime, lb, probe, node, name, settings, sleep)
            except TransientError:
                c = next((c for c in runtime.list(node, Owner(settings.controller_id, settings.policy))
                          if c.name == name), None)
                if c is not None:  # never leave a half-started replica behind
                    runtime.stop(node, c.id, settings.drain.signal, settings.drain.stop_timeout)
                    runtime.remove(node, c.id)
                raise
        elif step.kind is StepKind.ADMIT:
            assert step.replica is not None
            _admit(runtime, lb, probe, node, step.replica.name, settings, sleep)
        elif step.kind is StepKind.DRAIN:
            assert step.replica is not None
            drain_replica(lb, runtime, DrainTarget(settings.backend, step.replica.name, node,
                                                   where[step.replica.name][1]), settings.drain)
    raise TransientError(f"rollout of {settings.policy} did not finish within {settings.step_limit} steps")
