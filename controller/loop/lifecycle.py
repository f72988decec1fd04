"""A replica's life, one journaled step at a time: planned -> replicating -> launching -> booting ->
starting -> healthy -> serving -> draining -> stopping -> releasing -> gone. Called by the daemon's step round
(controller/loop/rounds.py) every step interval for each live replica that has something to do.

Every step is resumable: the state is in the store, each side effect is an intent written before the call
(design rule 1) and re-run after a crash, and every call is idempotent (the launch reuses its ClientToken,
``add`` of an existing server and ``release`` of a gone instance are no-ops). A failure or a timeout at any
step sends the replica down its failure path, which always ends in releasing its instance.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from controller.loop.budget import Holding, check_launch, per_node
from controller.loop.edges import Edges, LoopOptions
from controller.errors import BurstError, NotFoundError, PermanentError, TransientError
from controller.health import docker_health_ok
from controller.ports import (
    LABEL_CONTROLLER,
    LABEL_POLICY,
    LABEL_REPLICA,
    LABEL_SPEC_HASH,
    TAG_CONTROLLER,
    TAG_INTENT,
    TAG_POLICY,
    Instance,
    InstanceState,
    LaunchSpec,
    LoadBalancer,
    Node,
    Owner,
    Server,
    WorkloadSpec,
)
from controller.store.snapshot import LiveReplica
from controller.store.state import StateStore
from controller.store.models import JOINABLE_STATES, IntentKind, IntentState, Replica, ReplicaState

__all__ = ["NO_FACTS", "Lifecycle", "PolicyContext", "RoundFacts", "in_shadow", "launch_spec", "replica_weight",
           "server_name"]

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


class Lifecycle:
    """Advances the replicas of one policy. Not thread-safe: the policy's tick job runs one at a time."""

    def __init__(self, ctx: PolicyContext) -> None:
        self.ctx = ctx
        self._last_probe: dict[str, float] = {}  # replica id -> time of its last health probe
        # replicas_per_node > 1: choosing an instance for a replica, and deciding that a replica is the last
        # on its instance, read all the policy's replicas and must not interleave (the steps run in parallel)
        self._placement = threading.Lock()

    # ------------------------------------------------------------------ driver

    def advance(self, replica: AnyReplica, facts: RoundFacts = NO_FACTS) -> AnyReplica:
        """Take as many steps as are possible now (usually one or two) and return the replica as left.
        ``facts``: what the round already asked the outside world for this replica (its instance, its probe)."""
        for _ in range(12):  # bound: each pass moves at most one state forward
            before = replica.state
            try:
                replica = self._step(replica, facts)
            except TransientError as exc:
                self.ctx.error(f"replica {replica.id} ({replica.state}): {exc} (will retry)")
                return replica
            if replica.state == before or replica.state == S.GONE:
                return replica
            if replica.state == S.BOOTING:
                # PERF: a node just launched is not up yet; its boot check is the next round's, where one
                # DescribeInstances answers for up to 100 booting instances (docs/ha.md "Scale")
                return replica
        return replica

    def _step(self, r: AnyReplica, facts: RoundFacts) -> AnyReplica:
        state = S(r.state)
        if state == S.BOOTING:
            return self._booting(r, facts)
        if state == S.SERVING:
            return self._serving(r, facts)
        handler = {
            S.PLANNED: self._planned, S.REPLICATING: self._replicating, S.LAUNCHING: self._launching,
            S.STARTING: self._starting, S.HEALTHY: self._healthy, S.DRAINING: self._draining,
            S.STOPPING: self._stopping, S.RELEASING: self._releasing,
        }.get(state)
        return handler(r) if handler else r

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

    # ------------------------------------------------------------------ the way in

    def _planned(self, r: AnyReplica) -> AnyReplica:
        return self.ctx.store.transition(r.id, S.REPLICATING)

    def _replicating(self, r: AnyReplica) -> AnyReplica:
        if in_shadow(self.ctx.policy):  # the evaluation drains such a replica first; a bug must not copy
            return self._cancel_launch(r, "the policy is in shadow mode: no image is copied")
        try:
            spec = self.ctx.workload()  # copies the image when pre-replication has not yet
        except PermanentError as exc:
            return self._cancel_launch(r, f"cannot prepare the workload: {exc}")
        return self.ctx.store.transition(r.id, S.LAUNCHING, spec_hash=spec.spec_hash, image=spec.image)

    def _cancel_launch(self, r: AnyReplica, why: str) -> AnyReplica:
        for intent in self.ctx.store.intents(replica_id=r.id, kind=IntentKind.LAUNCH, state=IntentState.PENDING):
            self.ctx.store.fail(intent.id, why)
        return self._failed(r, S.RELEASING, why)

    def _launching(self, r: AnyReplica) -> AnyReplica:
        ctx = self.ctx
        if per_node(ctx.policy) > 1 and not r.instance_id:
            with self._placement:
                placed = self._place(r)
            if placed is not None:
                return placed
        intent = ctx.store.step_intent(r, IntentKind.LAUNCH)
        if in_shadow(ctx.policy):  # as the budget guard below: whatever planned it, nothing launches
            return self._failed(r, S.RELEASING, "launch refused: the policy is in shadow mode", intent.id)
        check = check_launch(ctx.policy, self._ahead_of(r), 1, new_instance=True)
        if check.allowed < 1:  # the policy changed under us, or a bug elsewhere: never overspend
            return self._failed(r, S.RELEASING, f"launch refused by the budget guard: {check.reason}", intent.id)
        spec = launch_spec(ctx.policy, ctx.options.controller_id, r.id, intent.token,
                           ctx.edges.user_data(ctx.policy, r.id))
        # a node image baked for this workload spec (`burstctl bake`): Docker and the image are on its disk
        baked = ctx.store.baked_image(r.policy, r.spec_hash, spec.image_id) if r.spec_hash else None
        if baked:
            spec = dataclasses.replace(spec, image_id=baked)
        try:
            instances = ctx.edges.compute.launch(spec, 1, intent.token)
        except NotFoundError as exc:
            if baked and (exc.code or "").startswith("InvalidImageId"):
                # deleted outside the controller: forget it, so the next launch boots cloud.image_id
                ctx.store.mark_node_image_deleted(baked)
                ctx.event("launch", f"replica {r.id}: baked image {baked} is gone ({exc}); launching from "
                          f"{ctx.policy.cloud.image_id} from now on", replica=r.id)
            return self._failed(r, S.RELEASING, f"launch failed: {exc}", intent.id)
        except TransientError as exc:
            ctx.store.note_error(intent.id, str(exc))
            if self._age_in_state(r) > ctx.options.launch_timeout:
                return self._failed(r, S.RELEASING, f"launch not done after {ctx.options.launch_timeout:.0f}s: "
                                    f"{exc}", intent.id)
            raise
        except PermanentError as exc:
            return self._failed(r, S.RELEASING, f"launch failed: {exc}", intent.id)
        if not instances:
            ctx.store.note_error(intent.id, "launch returned no instance")
            raise TransientError("launch returned no instance")
        inst = instances[0]
        for extra in instances[1:]:  # never expected; never leaked either
            ctx.edges.compute.release([extra.id])
        with ctx.store.transaction():  # the call's outcome in one commit (PERF)
            ctx.store.record_instance(inst, policy=r.policy, replica_id=r.id, intent_id=intent.id)
            baked_note = f", baked image {baked}" if baked else ""
            ctx.event("launch", f"replica {r.id}: launched {inst.id} ({inst.instance_type} in {inst.zone}"
                      f"{baked_note})", replica=r.id, instance=inst.id, token=intent.token)
            return ctx.store.complete(intent.id, outcome={"instances": [i.id for i in instances]}, to=S.BOOTING,
                                      instance_id=inst.id) or r

    def _place(self, r: AnyReplica) -> AnyReplica | None:
        """replicas_per_node > 1: put ``r`` on an instance of the policy that has a free place (the fullest
        first, so instances fill up and empty ones can go), or make it wait for the instance a replica planned
        before it is launching (replicas waiting for an instance go in groups of N: the first of each group
        launches, the others join it). None: ``r`` launches an instance of its own."""
        ctx, n = self.ctx, per_node(self.ctx.policy)
        live = ctx.store.live_replicas(r.policy)
        on: dict[str, list[Replica]] = {}
        for x in live:
            if x.instance_id and x.id != r.id:
                on.setdefault(x.instance_id, []).append(x)
        hosts = sorted(((len(xs), iid) for iid, xs in on.items()
                        if len(xs) < n and all(x.state in JOINABLE_STATES for x in xs)), reverse=True)
        if hosts:
            count, iid = hosts[0]
            intent = ctx.store.step_intent(r, IntentKind.LAUNCH)
            ctx.event("place", f"replica {r.id}: placed on {iid} beside {count} replica(s) (replicas_per_node {n})",
                      replica=r.id, instance=iid)
            return ctx.store.complete(intent.id, outcome={"instances": [], "placed_on": iid}, to=S.BOOTING,
                                      instance_id=iid) or r
        waiting = sorted((x for x in live if x.state in (S.PLANNED, S.REPLICATING, S.LAUNCHING)
                          and not x.instance_id), key=lambda x: (x.created_at, x.id))
        index = next((i for i, x in enumerate(waiting) if x.id == r.id), 0)
        if index % n:
            return r  # the first replica of its group launches the instance it will join
        return None

    def _ahead_of(self, r: AnyReplica) -> list[Holding]:
        """What counts against this launch: everything holding money except replicas planned after this one
        that have no instance yet. Concurrent launch steps thus see a consistent first-come order and the
        first ones that fit the budget go, whatever the threads' timing."""
        mine = (r.created_at, r.id)
        later = {x.id for x in self.ctx.store.live_replicas(r.policy)
                 if x.id != r.id and not x.instance_id and (x.created_at, x.id) > mine}
        return [h for h in self.ctx.holdings() if h.key != r.id and h.key not in later]

    def _booting(self, r: AnyReplica, facts: RoundFacts) -> AnyReplica:
        ctx = self.ctx
        if r.instance_id and r.instance_id in facts.described:  # the round's batched DescribeInstances
            known = facts.described[r.instance_id]
            found = [known] if known is not None else []
        else:
            found = ctx.edges.compute.get([r.instance_id]) if r.instance_id else []
        if not found or found[0].state in (InstanceState.GONE, InstanceState.STOPPED, InstanceState.STOPPING):
            return self._failed(r, S.RELEASING, f"instance {r.instance_id} disappeared while booting")
        inst = found[0]
        if inst.state == InstanceState.RUNNING and inst.private_ip:
            node = Node(instance_id=inst.id, address=inst.private_ip,
                        docker_endpoint=inst.docker_endpoint or ctx.edges.node_endpoint(inst))
            try:  # the node is up when its Docker Engine answers over mutual TLS
                ctx.edges.runtime.list(node, Owner(ctx.options.controller_id, r.policy))
            except BurstError as exc:
                logger.debug("node %s not answering yet: %s", node.instance_id, exc)
                ctx.store.record_instance(inst, policy=r.policy, replica_id=r.id, intent_id=None)
            else:
                with ctx.store.transaction():  # its address and the new state in one commit (PERF)
                    ctx.store.record_instance(inst, policy=r.policy, replica_id=r.id, intent_id=None)
                    ctx.event("node-ready", f"replica {r.id}: node {inst.id} answers on {node.docker_endpoint}",
                              replica=r.id, instance=inst.id)
                    return ctx.store.transition(r.id, S.STARTING, address=node.address)
        if self._age_in_state(r) > ctx.options.boot_timeout:
            return self._failed(r, S.RELEASING, f"node {r.instance_id} did not boot within "
                                f"{ctx.options.boot_timeout:.0f}s ({inst.state})")
        return r

    def _starting(self, r: AnyReplica) -> AnyReplica:
        ctx = self.ctx
        node = self._node(r)
        if node is None:
            return self._failed(r, S.RELEASING, f"instance {r.instance_id} has no address")
        if r.container_id is None:
            spec = ctx.workload()
            name = f"burst-{r.policy}-{r.id}"
            labels = {LABEL_CONTROLLER: ctx.options.controller_id, LABEL_POLICY: r.policy,
                      LABEL_REPLICA: r.id, LABEL_SPEC_HASH: spec.spec_hash}
            intent = ctx.store.step_intent(r, IntentKind.START, target=node.instance_id)
            try:
                container = ctx.edges.runtime.start(node, spec, name, labels)
            except TransientError as exc:
                ctx.store.note_error(intent.id, str(exc))
                if self._age_in_state(r) > ctx.options.start_timeout:
                    return self._failed(r, S.STOPPING, f"container did not start: {exc}", intent.id)
                raise
            except PermanentError as exc:
                return self._failed(r, S.STOPPING, f"container start failed: {exc}", intent.id)
            with ctx.store.transaction():  # one commit (PERF)
                r = ctx.store.complete(intent.id, outcome={"container": container.id}, to=None,
                                       container_id=container.id, address=container.address, port=container.port,
                                       spec_hash=spec.spec_hash, image=spec.image) or r
                pulled = f", image pulled in {container.pull_seconds:.1f}s" if container.pull_seconds else ""
                ctx.event("start", f"replica {r.id}: container {container.id[:12]} on {node.instance_id} "
                          f"({container.address}:{container.port}){pulled}", replica=r.id,
                          pull_s=container.pull_seconds)
        if self._probe_due(r):
            passes = r.health_passes + 1 if self._probe(r) else 0
            target = int(ctx.policy.workload.health.passes)
            r = ctx.store.transition(r.id, S.HEALTHY if passes >= target else None, health_passes=passes)
            if r.state == S.HEALTHY:
                return r
        if self._age_in_state(r) > ctx.options.start_timeout:
            return self._failed(r, S.STOPPING, f"not healthy within {ctx.options.start_timeout:.0f}s "
                                f"({r.health_passes} passes)")
        return r

    def _healthy(self, r: AnyReplica) -> AnyReplica:
        ctx = self.ctx
        name = server_name(ctx.options.controller_id, r.policy, r.id)
        intent = ctx.store.step_intent(r, IntentKind.ADMIT, target=name)
        server = Server(name=name, address=r.address or "", port=int(r.port or 0), instance_id=r.instance_id or "",
                        weight=replica_weight(ctx.policy))
        try:
            ctx.load_balancer().add(self._backend(), server)
        except TransientError as exc:
            ctx.store.note_error(intent.id, str(exc))
            raise
        except PermanentError as exc:
            return self._failed(r, S.STOPPING, f"admission to the load balancer failed: {exc}", intent.id)
        with ctx.store.transaction():  # one commit (PERF)
            ctx.event("admit", f"replica {r.id}: serving as {name} ({r.address}:{r.port})", replica=r.id)
            return ctx.store.complete(intent.id, to=S.SERVING, server_name=name, health_failures=0) or r

    def _serving(self, r: AnyReplica, facts: RoundFacts) -> AnyReplica:
        if not self._probe_due(r):
            return r
        if self._probe(r, facts):
            return r if r.health_failures == 0 else self.ctx.store.transition(r.id, None, health_failures=0)
        failures = r.health_failures + 1
        if failures >= int(self.ctx.policy.workload.health.failures):
            return self._failed(r, S.DRAINING, f"{failures} consecutive health check failures")
        return self.ctx.store.transition(r.id, None, health_failures=failures)

    # ------------------------------------------------------------------ the way out

    def _draining(self, r: AnyReplica) -> AnyReplica:
        ctx = self.ctx
        if not r.server_name:  # never admitted: nothing to drain
            return ctx.store.transition(r.id, S.STOPPING)
        lb, backend = ctx.load_balancer(), self._backend()
        drained = ctx.store.intents(replica_id=r.id, kind=IntentKind.DRAIN, state=IntentState.DONE)
        if not drained:
            intent = ctx.store.step_intent(r, IntentKind.DRAIN, target=r.server_name)
            try:
                lb.drain(backend, r.server_name)
            except NotFoundError:
                pass  # not in the load balancer (reloaded, or removed by hand): nothing to drain
            except TransientError as exc:
                ctx.store.note_error(intent.id, str(exc))
                raise
            with ctx.store.transaction():  # one commit (PERF)
                ctx.store.complete(intent.id)
                ctx.event("drain", f"replica {r.id}: draining {r.server_name}", replica=r.id)
            return r  # sessions are read from the next step on, once requests already routed show up
        if ctx.now() - drained[-1].updated_at < DRAIN_SETTLE:
            return r
        forced = self._age_in_state(r) > float(ctx.policy.drain.timeout)
        if not forced:
            try:
                sessions = lb.sessions(backend, r.server_name)
            except NotFoundError:
                sessions = 0
            if sessions > 0:
                return r
        intent = ctx.store.step_intent(r, IntentKind.REMOVE, target=r.server_name)
        try:
            lb.remove(backend, r.server_name)
        except TransientError as exc:
            ctx.store.note_error(intent.id, str(exc))
            raise
        with ctx.store.transaction():  # one commit (PERF)
            if forced:
                ctx.event("drain-forced", f"replica {r.id}: drain exceeded {ctx.policy.drain.timeout:g}s; "
                          "removed with sessions still open", replica=r.id)
            return ctx.store.complete(intent.id, to=S.STOPPING) or r

    def _stopping(self, r: AnyReplica) -> AnyReplica:
        ctx = self.ctx
        node = self._node(r)
        if node is None:  # never got an address: no container can exist
            return ctx.store.transition(r.id, S.RELEASING)
        intent = ctx.store.step_intent(r, IntentKind.STOP, target=r.container_id or node.instance_id)
        try:
            # by id when known; otherwise by the replica label (a start whose outcome was never written)
            ids = [r.container_id] if r.container_id else [
                c.id for c in ctx.edges.runtime.list(node, Owner(ctx.options.controller_id, r.policy))
                if c.labels.get(LABEL_REPLICA) == r.id]
            for container_id in ids:
                try:
                    ctx.edges.runtime.stop(node, container_id, str(ctx.policy.drain.signal),
                                           float(ctx.policy.drain.stop_timeout))
                    ctx.edges.runtime.remove(node, container_id)
                except NotFoundError:
                    pass
        except TransientError as exc:
            ctx.store.note_error(intent.id, str(exc))
            # a node that only blinked gets a boot timeout to come back for a graceful stop; not one whose
            # replica failed (its node dead or cut off, most likely): it still counts against replicas.max
            # and the budget until released, so waiting would hold its replacement back
            failed = ctx.store.replica(r.id)  # the round's snapshot row leaves ``failure`` out (PERF)
            grace = 0.0 if failed is not None and failed.failure else ctx.options.boot_timeout
            if self._age_in_state(r) <= float(ctx.policy.drain.stop_timeout) + grace:
                raise
            ctx.event("stop-skipped", f"replica {r.id}: node unreachable ({exc}); releasing it anyway",
                      replica=r.id)
        return ctx.store.complete(intent.id, to=S.RELEASING) or r

    def _releasing(self, r: AnyReplica) -> AnyReplica:
        if r.instance_id and per_node(self.ctx.policy) > 1:
            with self._placement:  # the last replica of an instance releases it, and only the last one
                others = [x.id for x in self.ctx.store.live_replicas(r.policy)
                          if x.instance_id == r.instance_id and x.id != r.id]
                if others:
                    return self._leave_instance(r, others)
                return self._release(r)
        return self._release(r)

    def _leave_instance(self, r: AnyReplica, others: list[str]) -> AnyReplica:
        ctx = self.ctx
        intent = ctx.store.step_intent(r, IntentKind.RELEASE, target=r.instance_id)
        self._last_probe.pop(r.id, None)
        ctx.event("release", f"replica {r.id}: left {r.instance_id}, which stays for {', '.join(others)}",
                  replica=r.id, instance=r.instance_id)
        return ctx.store.complete(intent.id, outcome={"released": [], "kept_for": others}, to=S.GONE) or r

    def _release(self, r: AnyReplica) -> AnyReplica:
        ctx = self.ctx
        ids = [r.instance_id] if r.instance_id else self._instances_of_launch(r)
        intent = ctx.store.step_intent(r, IntentKind.RELEASE, target=",".join(ids))
        for pending in ctx.store.intents(replica_id=r.id, state=IntentState.PENDING):
            if pending.kind == IntentKind.LAUNCH:  # a launch that may still land: its instances go too
                ids += [i for i in self._instances_of_launch(r, pending.id) if i not in ids]
                ctx.store.fail(pending.id, "cancelled: the replica is being released")
        if ids:
            try:
                ctx.edges.compute.release(ids)
            except TransientError as exc:
                ctx.store.note_error(intent.id, str(exc))
                raise
        self._last_probe.pop(r.id, None)
        with ctx.store.transaction():  # one commit (PERF)
            if ids:
                ctx.store.mark_released(ids)
            ctx.event("release", f"replica {r.id}: released {', '.join(ids) or 'nothing (never launched)'}",
                      replica=r.id)
            return ctx.store.complete(intent.id, outcome={"released": ids}, to=S.GONE) or r

    def _instances_of_launch(self, r: AnyReplica, intent_id: str | None = None) -> list[str]:
        """Instances a launch of this replica may have created, found by their intent tag."""
        intents = ([intent_id] if intent_id else
                   [i.id for i in self.ctx.store.intents(replica_id=r.id, kind=IntentKind.LAUNCH)])
        if not intents:
            return []
        owned = self.ctx.edges.compute.list(Owner(self.ctx.options.controller_id, r.policy))
        return [i.id for i in owned if i.tags.get(TAG_INTENT) in intents]
