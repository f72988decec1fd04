"""Actual world against the journal (design rules 2 and 3): instances found by this controller's tags are
adopted when an intent explains them and released as orphans after ``orphan_grace`` otherwise; instances
the journal holds that vanished send their replica down the failure path; load-balancer servers carrying our
name without a replica behind them are removed, and serving replicas missing from the load balancer are put
back (an HAProxy reload forgets servers added at run time). Run by the daemon at start-up and periodically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from controller.errors import BurstError, NotFoundError
from controller.loop.bake import TAG_BAKE
from controller.loop.edges import Edges, LoopOptions
from controller.loop.steps import replica_weight, server_name
from controller.loop.tick import PolicyRuntime
from controller.ports import TAG_INTENT, TAG_POLICY, Instance, Node, Owner, Server
from controller.store.models import IntentKind, IntentState, ReplicaState
from controller.store.snapshot import LiveInstance, LiveReplica
from controller.store.state import StateStore

__all__ = ["ReconcileReport", "Reconciler"]

logger = logging.getLogger(__name__)
S = ReplicaState
_PRE_INSTANCE = (S.PLANNED, S.REPLICATING, S.LAUNCHING)
_HAS_NODE = (S.BOOTING, S.STARTING, S.HEALTHY, S.SERVING)


@dataclass
class ReconcileReport:
    adopted: list[str] = field(default_factory=list)
    orphans_released: list[str] = field(default_factory=list)
    orphans_waiting: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    servers_removed: list[str] = field(default_factory=list)
    servers_restored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{k.replace('_', ' ')} {len(v)}" for k, v in vars(self).items() if v]
        return ", ".join(parts) or "in sync"


def _changed(row: LiveInstance, inst: Instance) -> bool:
    """Whether ``record_instance`` would change the row (state, addresses, spot, price)."""
    return (row.state != str(inst.state) or row.private_ip != inst.private_ip
            or row.docker_endpoint != inst.docker_endpoint or row.spot != inst.spot
            or (inst.price_per_hour is not None and row.price_per_hour != inst.price_per_hour))


class Reconciler:
    def __init__(self, store: StateStore, edges: Edges, options: LoopOptions,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.edges, self.options, self.clock = store, edges, options, clock
        self._first_seen: dict[str, float] = {}  # orphans without a creation time: grace counts from here

    def _event(self, kind: str, message: str, policy: str | None, **details: object) -> None:
        self.store.record_event(kind, message, policy=policy, details=dict(details) or None)

    def run(self, runtimes: Mapping[str, PolicyRuntime]) -> ReconcileReport:
        report = ReconcileReport()
        cloud = self.edges.compute.list(Owner(self.options.controller_id))
        seen = {inst.id for inst in cloud}
        known = {row.id: row for row in self.store.instance_rows()}  # PERF: plain rows, one query
        changed = [(inst, known[inst.id]) for inst in cloud if inst.id in known and _changed(known[inst.id], inst)]
        if changed:  # SCALE-HA: a write per unchanged instance cost seconds at 5,000; PERF: one commit for all
            with self.store.transaction():
                for inst, row in changed:
                    self.store.record_instance(inst, policy=row.policy, replica_id=None, intent_id=None)
        for inst in cloud:
            if inst.id not in known:
                self._unknown(inst, report)
        self._vanished([i for i in known if i not in seen], report)
        # PERF: every policy's load balancer is listed first, then the live replicas of all policies are read
        # in ONE query (was one per policy), and each policy is compared; the order stays LB first, journal
        # after (see _servers)
        listed: list[tuple[PolicyRuntime, str, set[str], float]] = []
        for runtime in list(runtimes.values()):
            try:
                listed.append(self._listing(runtime))
            except BurstError as exc:
                runtime.error(f"reconcile load balancer: {exc}")
        live_by_policy = self.store.live_rows() if listed else {}  # PERF: plain rows, one query
        for runtime, backend, present, listed_at in listed:
            try:
                self._servers(runtime, backend, present, listed_at, live_by_policy.get(runtime.name, []), report)
            except BurstError as exc:
                runtime.error(f"reconcile load balancer: {exc}")
        for gone in [i for i in self._first_seen if i not in seen]:
            del self._first_seen[gone]
        if any(vars(report).values()):
            logger.info("reconcile: %s", report.summary())
        return report

    # ------------------------------------------------------------------ instances

    def _unknown(self, inst: Instance, report: ReconcileReport) -> None:
        intent = self.store.intent(inst.tags.get(TAG_INTENT, "")) if inst.tags.get(TAG_INTENT) else None
        replica = self.store.replica(intent.replica_id) if intent and intent.replica_id else None
        policy = inst.tags.get(TAG_POLICY)
        if intent is not None and intent.kind == IntentKind.LAUNCH and replica is not None \
                and replica.state != S.GONE and replica.instance_id in (None, inst.id):
            # A launch that landed but whose outcome was never recorded (crash between call and write).
            self.store.record_instance(inst, policy=replica.policy, replica_id=replica.id, intent_id=intent.id)
            if replica.state in _PRE_INSTANCE:
                if intent.state == IntentState.PENDING:
                    self.store.complete(intent.id, outcome={"instances": [inst.id], "adopted": True},
                                        to=S.BOOTING, instance_id=inst.id)
                else:
                    self.store.transition(replica.id, S.BOOTING, instance_id=inst.id)
            else:
                self.store.transition(replica.id, None, instance_id=inst.id)
            report.adopted.append(inst.id)
            self._event("adopt", f"adopted {inst.id}: launched by intent {intent.id} for replica {replica.id}",
                        replica.policy, instance=inst.id, replica=replica.id)
            return
        if inst.tags.get(TAG_BAKE) and policy and self.store.intents(policy=policy, kind=IntentKind.BAKE,
                                                                     state=IntentState.PENDING):
            return  # a builder of the daemon's own bake in flight (controller/loop/auto_bake.py): it releases it
        now = self.clock()
        born = inst.created_at if inst.created_at is not None else self._first_seen.setdefault(inst.id, now)
        age = now - born
        if age < self.options.orphan_grace:
            if inst.id not in report.orphans_waiting:
                report.orphans_waiting.append(inst.id)
            if inst.id not in self._first_seen:
                self._first_seen[inst.id] = now
                self._event("orphan", f"{inst.id} carries this controller's tags but no intent explains it; "
                            f"releasing it after the {self.options.orphan_grace:.0f}s grace unless adopted",
                            policy, instance=inst.id)
            return
        self._remove_containers(inst)
        self.edges.compute.release([inst.id])
        self.store.mark_released([inst.id])
        report.orphans_released.append(inst.id)
        self._event("orphan-released", f"released orphan {inst.id} ({inst.instance_type}, {age:.0f}s old): "
                    "tagged with this controller's id, unknown to the journal", policy, instance=inst.id)

    def _remove_containers(self, inst: Instance) -> None:
        """Best effort: containers of an orphan node (matters where nodes share an engine, as emulated)."""
        if not inst.private_ip:
            return
        node = Node(inst.id, inst.private_ip, inst.docker_endpoint or self.edges.node_endpoint(inst))
        try:
            for c in self.edges.runtime.list(node, Owner(self.options.controller_id)):
                self.edges.runtime.remove(node, c.id)
        except BurstError as exc:
            logger.info("orphan %s: containers not removed: %s", inst.id, exc)

    def _vanished(self, ids: list[str], report: ReconcileReport) -> None:
        if not ids:
            return
        still = {i.id for i in self.edges.compute.get(ids)}  # the list may lag behind a fresh launch
        for iid in ids:
            if iid in still:
                continue
            row = self.store.instance(iid)
            self.store.mark_released([iid])
            report.vanished.append(iid)
            # every replica on it (several with replicas_per_node > 1)
            on_it = [r for r in self.store.live_replicas(row.policy if row else None) if r.instance_id == iid]
            for replica in on_it:
                if replica.state in _HAS_NODE or replica.state in (S.DRAINING, S.STOPPING):
                    # nothing left to drain or stop; only its server (if any) and the record remain
                    to = S.DRAINING if replica.server_name else S.RELEASING
                    self.store.transition(replica.id, to, failure=f"instance {iid} disappeared", container_id=None)
                self._event("vanished", f"instance {iid} of replica {replica.id} disappeared from the cloud",
                            replica.policy, instance=iid, replica=replica.id)

    # ------------------------------------------------------------------ load balancer

    def _listing(self, runtime: PolicyRuntime) -> tuple[PolicyRuntime, str, set[str], float]:
        """The policy's servers as its load balancer lists them now, and when that was."""
        policy = runtime.policy
        backend = str(policy.traffic.haproxy.backend) if policy.traffic.haproxy else \
            str(policy.traffic.slb.load_balancer_id)
        listed_at = self.clock()
        return runtime, backend, {s.name for s in runtime.load_balancer().list(backend)}, listed_at

    def _servers(self, runtime: PolicyRuntime, backend: str, present: set[str], listed_at: float,
                 live: Sequence[LiveReplica], report: ReconcileReport) -> None:
        lb = runtime.load_balancer()
        prefix = server_name(self.options.controller_id, runtime.name, "")
        # The load balancer first, the journal after: the loop adds a server only once its replica is
        # HEALTHY in the journal, so every server listed here has its replica at least HEALTHY below. Read
        # the other way round, a replica admitted in between looked serverless and lost its server (seen).
        replicas = {r.server_name: r for r in live if r.server_name}
        admitting = {server_name(self.options.controller_id, runtime.name, r.id) for r in live
                     if r.state == S.HEALTHY}  # added to the LB, the journal not yet told
        # A replica whose state changed after the listing is left alone until the next reconcile: the
        # listing is older than what the journal says about it (admitted or removed in between).
        moved = {r.server_name or server_name(self.options.controller_id, runtime.name, r.id) for r in live
                 if r.state_since > listed_at}
        for name in present:
            if name.startswith(prefix) and name not in admitting and name not in moved and (
                    name not in replicas or replicas[name].state not in (S.SERVING, S.DRAINING)):
                try:
                    lb.remove(backend, name)
                except NotFoundError:
                    pass
                report.servers_removed.append(name)
                self._event("server-removed", f"removed load-balancer server {name}: no replica serves behind it",
                            runtime.name, server=name)
        for name, r in replicas.items():
            if r.state == S.SERVING and name not in present and name not in moved and r.address and r.port:
                lb.add(backend, Server(name=name, address=r.address, port=int(r.port),
                                       instance_id=r.instance_id or "", weight=replica_weight(runtime.policy)))
                report.servers_restored.append(name)
                self._event("server-restored", f"put {name} back into {backend} (the load balancer had lost it)",
                            runtime.name, server=name)


