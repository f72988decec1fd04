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

from controller.errors import BurstError, NotFoundError, PermanentError, TransientError
from controller.loop.budget import Holding, check_launch, per_node
from controller.loop.steps import (
    NO_FACTS,
    AnyReplica,
    RoundFacts,
    S,
    in_shadow,
    launch_spec,
    replica_weight,
    server_name,
)
from controller.loop.way_out import WayOut
from controller.ports import (
    LABEL_CONTROLLER,
    LABEL_POLICY,
    LABEL_REPLICA,
    LABEL_SPEC_HASH,
    InstanceState,
    Node,
    Owner,
    Server,
)
from controller.store.models import JOINABLE_STATES, IntentKind, IntentState, Replica

__all__ = ["Lifecycle"]

logger = logging.getLogger(__name__)


class Lifecycle(WayOut):
    """Advances the replicas of one policy. Not thread-safe: the policy's tick job runs one at a time."""

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
        woken = self._wake(r, intent)  # a warm node of the same spec first (controller/loop/warm_pool.py)
        if woken is not None:
            return woken
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
