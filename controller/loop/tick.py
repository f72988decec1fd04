"""One policy at run time: its sampling (observe), its evaluation (decide -> plan -> journal), its replicas'
lifecycle and its image preparation. The daemon's rounds (controller/loop/rounds.py) call ``sample`` and
``evaluate`` for every policy and advance the replicas through ``lifecycle``; that is the one step path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from controller import metrics
from controller.errors import BurstError, StateBusyError
from controller.loop.budget import Holding
from controller.loop.edges import Edges, LoopOptions
from controller.loop.lifecycle import Lifecycle
from controller.loop.planner import Plan, PlanInput, ReplicaView, plan, roll_surplus, target_after
from controller.loop.shadow import ShadowFleet
from controller.loop.steps import AnyReplica, in_shadow
from controller.loop.warm_pool import disk_price
from controller.ports import LoadBalancer, MetricsSource, WorkloadSpec
from controller.service import register_secret
from controller.store.models import (
    ACTIVE_STATES,
    JOINABLE_STATES,
    LEAVING_STATES,
    PolicyState,
    ReplicaState,
)
from controller.store.snapshot import Costing, FleetSnapshot, PolicyFlags
from controller.store.state import HistorySink, StateStore
from policies.history import History
from policies.types import Decision, Direction, Fleet, Observation

__all__ = ["Decide", "PolicyRuntime"]

logger = logging.getLogger(__name__)

Decide = Callable[[Any, Observation, Fleet, float], Decision]


def _engine_decide(policy: Any, observation: Observation, fleet: Fleet, now: float) -> Decision:
    from policies.engine import decide  # the decision engineer's module; imported late so tests can inject

    return decide(policy, observation, fleet, now)


class PolicyRuntime:
    """Everything the loop keeps for one policy. ``policy`` is swapped atomically on reload."""

    def __init__(self, policy: Any, *, store: StateStore, edges: Edges, options: LoopOptions,
                 decide: Decide | None = None, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.store = store
        self.edges = edges
        self.options = options
        self.clock = clock
        self.decide = decide or _engine_decide
        self.started_at = clock()  # step timeouts count from here at the earliest (see Lifecycle)
        self.removed = False  # the policy file is gone: drain everything, then forget the policy
        self.shadow = ShadowFleet()  # mode: shadow: the replicas it would have (controller/loop/shadow.py)
        self.lifecycle = Lifecycle(self)
        self.errors: deque[tuple[float, str]] = deque(maxlen=20)
        self.last_observation: Observation | None = None
        self.last_sample_at: float | None = None
        # the usable readings of the span the strategy reads, in compact columns the engine reads in place
        self._history = History(self._span())
        self._ready_history: deque[tuple[float, int]] = deque(maxlen=20_000)  # (at, serving) at each change
        self._workload: WorkloadSpec | None = None
        self._workload_at = 0.0
        self._workload_lock = threading.Lock()
        self._replicated: str | None = None  # the digest of the last copy recorded as an event
        self._metrics: MetricsSource | None = None
        self._lb: LoadBalancer | None = None
        self._load_history()

    # ------------------------------------------------------------------ PolicyContext

    @property
    def name(self) -> str:
        return str(self.policy.name)

    def now(self) -> float:
        return self.clock()

    def event(self, kind: str, message: str, **details: Any) -> None:
        try:
            self.store.record_event(kind, message, policy=self.name, details=details or None)
        except StateBusyError as exc:  # the audit line is lost, the log line is not
            logger.warning("%s (event not stored: %s)", message, exc)

    def error(self, message: str) -> None:
        logger.warning("policy %s: %s", self.name, message)
        self.errors.appendleft((self.clock(), message))

    def load_balancer(self) -> LoadBalancer:
        if self._lb is None:
            self._lb = self.edges.load_balancer(self.policy)
        return self._lb

    def metrics(self) -> MetricsSource:
        if self._metrics is None:
            self._metrics = self.edges.metrics(self.policy)
        return self._metrics

    def replace_policy(self, policy: Any) -> None:
        """A new valid version of the file: edges that depend on changed sections are rebuilt."""
        old, self.policy = self.policy, policy
        if old.mode != policy.mode:  # a shadow spell starts from an empty would-be fleet
            self.shadow.reset()
        if old.metric != policy.metric and self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if old.traffic != policy.traffic:
            self._lb = None
        if old.workload != policy.workload or old.registry != policy.registry:
            with self._workload_lock:
                self._workload = None

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()

    def workload(self) -> WorkloadSpec:
        """The captured workload with its image copied to the cloud registry (cached; refreshed by the
        replicate job)."""
        with self._workload_lock:
            if self._workload is None:
                self._workload = self._prepare()
                self._workload_at = self.clock()
            return self._workload

    def _prepare(self) -> WorkloadSpec:
        src = self.edges.workloads.source_image(self.policy)
        dst = str(self.policy.registry.target)
        platforms = tuple(self.policy.workload.platforms) or None
        result = self.edges.registry.replicate(src, dst, platforms)
        metrics.REPLICATION_SECONDS.labels(self.name).observe(result.seconds)
        spec = self.edges.workloads.capture(self.policy, f"{dst}@{result.digest}")
        for key in spec.secret_env:  # before anything could log the spec: redacted from every log line
            register_secret(spec.env.get(key))
        what = (f"image {src} -> {dst}@{result.digest[:19]} ({result.copied_blobs} blobs copied, "
                f"{result.skipped_blobs} present, {result.seconds:.2f}s)")
        if result.digest != self._replicated or result.copied_blobs:
            # the audit log gets a copy that changed something; the replicate job's check that the cloud
            # registry still holds the same image (every intervals.replicate) is a debug line
            self.event("replicate", what, digest=result.digest)
            self._replicated = result.digest
        else:
            logger.debug("%s: %s", self.name, what)
        return spec

    @property
    def in_shadow(self) -> bool:
        """``mode: shadow``: decide and record, never act (controller/loop/shadow.py)."""
        return in_shadow(self.policy)

    def refresh_workload(self) -> None:
        """Pre-replication: copy the image ahead of any burst, and pick up a changed on-prem spec. A policy in
        shadow mode copies nothing (its replicate job runs and returns)."""
        if self.in_shadow:
            return
        spec = self._prepare()
        with self._workload_lock:
            self._workload, self._workload_at = spec, self.clock()

    def holdings(self, live: Sequence[AnyReplica] | None = None, costing: Costing | None = None) -> list[Holding]:
        """Everything of this policy that costs or may cost money (see controller.loop.budget). ``live`` and
        ``costing``: the policy's live replicas and costing rows when the caller just read them (a round's
        snapshot: no query at all, PERF)."""
        out: list[Holding] = []
        rows, launches = self.store.costing(self.name) if costing is None else costing  # PERF: tuples, one read
        # id -> (id, replica_id, instance_type, price_per_hour, warm_since)
        instances = {row[0]: row for row in rows}
        placed: set[str] = set()
        for r in self.store.live_replicas(self.name) if live is None else live:
            row = instances.get(r.instance_id) if r.instance_id else None
            if row is not None:
                placed.add(row[0])
            out.append(Holding(key=r.id, instance_type=row[2] if row else None,
                               price_per_hour=row[3] if row else None,
                               instance_id=row[0] if row else None, joinable=r.state in JOINABLE_STATES))
        for iid, replica_id, instance_type, price, warm_since in (v for k, v in instances.items() if k not in placed):
            if warm_since is not None:  # stopped in the warm pool: its disks cost (controller/loop/warm_pool.py)
                out.append(Holding(key=f"warm:{iid}", instance_type=instance_type,
                                   price_per_hour=disk_price(self.policy), warm=True))
                continue
            # its replica gone or unknown: still costs
            out.append(Holding(key=replica_id or f"instance:{iid}", instance_type=instance_type, price_per_hour=price))
        for intent_id, replica_id in launches:
            out.append(Holding(key=replica_id or f"intent:{intent_id}"))
        return out

    # ------------------------------------------------------------------ observe

    def _load_history(self) -> None:
        try:
            for s in self.store.samples(self.name, since=self.clock() - self._span()):
                if s.ok and s.value is not None:
                    self._history.append(s.at, s.value)
                self._note_ready(s.at, s.replicas)
        except StateBusyError as exc:
            logger.warning("policy %s: history not loaded: %s", self.name, exc)

    def sample(self, *, serving: int | None = None, into: HistorySink | None = None) -> Observation:
        """Query the metrics source and keep the reading (in memory and in the store). A round passes the
        serving count it read for every policy at once and takes the history row into its batch (PERF)."""
        now = self.clock()
        try:
            obs = self.metrics().query(float(self.policy.metric.window))
        except BurstError as exc:  # sources should not raise, but a broken one must not kill the job
            obs = Observation(value=None, age=0.0, source=str(self.policy.metric.source), ok=False, error=str(exc))
        at = now - obs.age
        if serving is None:
            serving = self.store.count_replicas(self.name, ReplicaState.SERVING)
        self.store.record_sample(self.name, at=at, value=obs.value, ok=obs.usable, source=obs.source,
                                 error=obs.error, capacity=self._scale_line(), replicas=serving, into=into)
        self._note_ready(at, serving)
        if obs.usable and obs.value is not None:
            self._history.span = self._span()  # a reloaded policy may read more or less
            self._history.append(at, obs.value)  # drops what is older than the span
        else:
            self.error(f"metric {obs.source or self.policy.metric.source}: {obs.error or 'no value'}")
        self.last_observation, self.last_sample_at = obs, at
        return obs

    def history_span(self) -> float:
        """Seconds of samples this policy's strategy reads: the store keeps them at least this long."""
        return self._span()

    def _span(self) -> float:
        """Seconds of history the strategy reads (at least an hour, so the dashboard and smoothing have some)."""
        try:
            from policies.engine import history_span

            return max(3600.0, history_span(self.policy))
        except (ImportError, AttributeError, TypeError):
            return 86400.0

    def _note_ready(self, at: float, serving: int) -> None:
        if not self._ready_history or self._ready_history[-1][1] != serving:
            self._ready_history.append((at, serving))

    def _scale_line(self) -> float | None:
        """The level the strategy scales out at (threshold) or aims for (target, predictive): the line the
        dashboard draws against the metric."""
        strategy = self.policy.strategy
        for attr in ("scale_out_above", "target"):
            value = getattr(strategy, attr, None)
            if isinstance(value, (int, float)):
                return float(value)
        return None

    def observation(self, now: float) -> Observation:
        """The latest reading as of ``now``: aged, marked stale past ``metric.stale_after``."""
        obs, at = self.last_observation, self.last_sample_at
        if obs is None or at is None:
            return Observation(value=None, age=float("inf"), source=str(self.policy.metric.source), ok=False,
                               error="no sample yet")
        age = max(0.0, now - at)
        # a view, not a copy (policies/history.py): the sampling round may append meanwhile, the view keeps
        # the samples it was given; the current reading (at ``at``) is not part of it
        history = self._history.view(before=at)
        ok, error = obs.ok, obs.error
        if age > float(self.policy.metric.stale_after):
            ok, error = False, f"stale: last sample {age:.0f}s old"
        return Observation(value=obs.value, age=age, source=obs.source, ok=ok, error=error, history=history)

    # ------------------------------------------------------------------ evaluate (decide -> plan -> journal)

    def fleet(self, paused: bool, replicas: Sequence[AnyReplica],
              ps: PolicyState | PolicyFlags | None) -> tuple[Fleet, list[ReplicaView]]:
        """What ``decide`` reads about the fleet, and the planner's view of each active replica."""
        active = [r for r in replicas if r.state in ACTIVE_STATES]
        current = self.spec_hash()
        views = [ReplicaView(r.id, r.state, r.created_at,
                             stale=bool(current) and r.container_id is not None and r.spec_hash not in ("", current),
                             instance_id=r.instance_id)
                 for r in active]
        # a drift roll's surge replica is not capacity the decision should count (docs/daemon.md)
        surplus = roll_surplus(views, ps.target if ps else None)
        fleet = Fleet(active=len(active) - surplus, ready=sum(r.state == ReplicaState.SERVING for r in active),
                      draining=sum(r.state in LEAVING_STATES for r in replicas),
                      last_scale_out=ps.last_scale_out if ps else None,
                      last_scale_in=ps.last_scale_in if ps else None,
                      launched_at=tuple(r.created_at for r in active), paused=paused,
                      target=ps.target if ps else None, ready_history=tuple(self._ready_history))
        return fleet, views

    def spec_hash(self) -> str:
        """The current workload's spec hash ("" before the first capture). Replicas started with another one
        are rolled to it; a changed on-prem workload is seen at the next capture (the replicate job)."""
        workload = self._workload
        return workload.spec_hash if workload is not None else ""

    def sessions(self, live: Sequence[AnyReplica]) -> dict[str, int]:
        """Active sessions per replica id, from ONE listing of the policy's backend (the planner asks only
        when it plans a scale-in). An unreadable backend counts every replica as idle: the order then falls
        back to the youngest first, and the drain itself still waits for sessions to reach zero."""
        try:
            servers = {s.name: s.sessions for s in self.load_balancer().list(self.lifecycle._backend())}
        except BurstError as exc:
            logger.warning("policy %s: sessions unreadable, scale-in ignores them: %s", self.name, exc)
            return {}
        return {r.id: int(servers.get(r.server_name, 0)) for r in live if r.server_name}

    def _roll_step(self, p: Plan, value: float | None) -> None:
        """Journal one drift-roll step: the surge replica (planned like any other; it starts with the current
        spec) or the drain of one stale replica."""
        if p.launch:
            planned = self.store.plan_replicas(self.name, p.launch, spec_hash="", reason=p.reason)
            self.event("roll", p.reason, replicas=[r.id for r, _ in planned], spec_hash=self.spec_hash(), value=value)
        for rid in p.drain:
            self.store.transition(rid, ReplicaState.DRAINING, reason=p.reason)
            self.event("roll", p.reason, replicas=[rid], spec_hash=self.spec_hash(), value=value)

    def evaluate(self, now: float, snapshot: FleetSnapshot, into: HistorySink | None = None) -> Sequence[AnyReplica] | None:
        """Decide, plan and journal, on the step round's fleet snapshot (no read of its own); the decision row
        goes into the round's batch (``into``). Returns the live replicas when it changed none of them (the
        round advances those without reading them again, PERF), else None."""
        ps: PolicyState | PolicyFlags | None = snapshot.flags.get(self.name)
        live: Sequence[AnyReplica] = snapshot.live(self.name)
        costing = snapshot.costs(self.name)
        paused = bool(ps and ps.paused)
        drain_all = self.removed or bool(ps and ps.drain_requested)
        fleet, views = self.fleet(paused, live, ps)
        obs = self.observation(now)
        if drain_all:
            decision = Decision(0, Direction.IN, "policy removed" if self.removed else "operator drain")
            self.shadow.reset()
        elif self.in_shadow:
            return self._evaluate_shadow(now, obs, fleet, views, live, into)
        else:
            decision = self.decide(self.policy, obs, fleet, now)
        p = plan(self.policy, PlanInput(decision=decision, active=views, holdings=self.holdings(live, costing), now=now,
                                        paused=paused, drain_all=drain_all, target=ps.target if ps else None,
                                        sessions=lambda: self.sessions(live), spec_hash=self.spec_hash(),
                                        leaving=fleet.draining))
        reason = p.reason + (f" (held: {p.held})" if p.held else "")
        direction = (Direction.OUT if p.launch else Direction.IN if p.drain else Direction.HOLD)
        self.store.record_decision(self.name, value=obs.value, desired=p.desired, actual=len(views),
                                   direction=str(direction), reason=reason, details=dict(decision.details),
                                   into=into)
        if p.roll:  # a replacement, not a scaling action: cooldowns and the target stay
            with self.store.transaction():
                self._roll_step(p, obs.value)
            return None
        if p.launch or p.drain:
            with self.store.transaction():  # PERF: the action's rows in one commit (was 3 or more)
                self._act(p, now, views, ps, drain_all, reason, obs.value)
        elif p.held and decision.direction != Direction.HOLD:
            logger.info("policy %s: %s", self.name, reason)
        return None if p.launch or p.drain else live

    def _evaluate_shadow(self, now: float, obs: Observation, real: Fleet, views: list[ReplicaView],
                         live: Sequence[AnyReplica], into: HistorySink | None) -> Sequence[AnyReplica] | None:
        """``mode: shadow``: the same decide -> plan on the would-be fleet; the decision row, and a ``shadow``
        event when the plan would launch or drain; nothing journaled, nothing done. Replicas left from an
        active spell are drained as an operator drain would (docs/daemon.md "Shadow mode")."""
        shadow = self.shadow
        decision = self.decide(self.policy, obs, shadow.fleet(real), now)
        would = shadow.views()
        p = plan(self.policy, PlanInput(decision=decision, active=would, holdings=shadow.holdings(), now=now,
                                        paused=real.paused, sessions=dict, leaving=0))
        reason = p.reason + (f" (held: {p.held})" if p.held else "")
        direction = (Direction.OUT if p.launch else Direction.IN if p.drain else Direction.HOLD)
        self.store.record_decision(self.name, value=obs.value, desired=p.desired, actual=len(would),
                                   direction=str(direction), reason=reason,
                                   details={**decision.details, "mode": "shadow"}, into=into)
        if p.launch or p.drain:
            after = len(would) + p.launch - len(p.drain)
            verb = "scale out" if p.launch else "scale in"
            self.event("shadow", f"would {verb} to {after} ({len(would)} -> {after}), shadow mode: nothing "
                       f"launched or drained: {reason}", would_launch=p.launch, would_drain=len(p.drain),
                       desired=p.desired, value=obs.value)
        shadow.apply(p, now)
        if not views:
            return live
        with self.store.transaction():  # replicas from an active spell: they leave, as on an operator drain
            for r in views:
                self.store.transition(r.id, ReplicaState.DRAINING, reason="policy in shadow mode")
            self.store.save_policy(self.name, target=0)
            self.event("scale-in", f"draining {len(views)} replica(s) ({len(views)} -> 0): the policy is in "
                       "shadow mode, its replicas leave (drained, then released); it acts again once its "
                       "mode is active", replicas=[r.id for r in views], value=obs.value)
        return None

    def _act(self, p: Plan, now: float, views: list[ReplicaView], ps: PolicyState | PolicyFlags | None,
             drain_all: bool, reason: str, value: float | None) -> None:
        """Journal a scaling action: the planned replicas or the drains, the policy's target and cooldown
        marks, the event."""
        obs_value = value
        actual = len(views) - roll_surplus(views, ps.target if ps else None)
        if p.launch:
            planned = self.store.plan_replicas(self.name, p.launch, spec_hash="", reason=p.reason)
            self.store.save_policy(self.name, last_scale_out=now, target=target_after(p, actual))
            self.event("scale-out", f"launching {p.launch} replica(s) ({len(views)} -> {len(views) + p.launch}): "
                       f"{reason}", replicas=[r.id for r, _ in planned], value=obs_value)
        if p.drain:
            for rid in p.drain:
                self.store.transition(rid, ReplicaState.DRAINING, reason=p.reason)
            if drain_all:
                self.store.save_policy(self.name, target=0)
            else:
                self.store.save_policy(self.name, last_scale_in=now, target=target_after(p, actual))
            self.event("scale-in", f"draining {len(p.drain)} replica(s) ({len(views)} -> "
                       f"{len(views) - len(p.drain)}): {reason}", replicas=list(p.drain), value=obs_value)
