"""One policy at run time: its sampling (observe), its tick (decide -> plan -> journal -> act, then advance
every live replica one step) and its image preparation. The daemon (controller/daemon.py) runs these as
separate scheduler jobs per policy, so a slow or failing policy never stalls another.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from controller.budget import Holding, hourly_spend
from controller.edges import Edges, LoopOptions
from controller.errors import BurstError, StateBusyError
from controller.lifecycle import AnyReplica, Lifecycle
from controller.planner import Plan, PlanInput, ReplicaView, plan, roll_surplus
from controller.ports import LoadBalancer, MetricsSource, WorkloadSpec
from controller.service import register_secret
from controller.snapshot import Costing, FleetSnapshot, PolicyFlags
from controller.state import HistorySink, StateStore
from controller.state_models import (
    ACTIVE_STATES,
    JOINABLE_STATES,
    LEAVING_STATES,
    PolicyState,
    ReplicaState,
)
from policies.types import Decision, Direction, Fleet, Observation

__all__ = ["Decide", "PolicyRuntime"]

logger = logging.getLogger(__name__)

Decide = Callable[[Any, Observation, Fleet, float], Decision]
MAX_PARALLEL_STEPS = 16  # replicas of one policy advanced at once


_STEP_POOL: ThreadPoolExecutor | None = None
_STEP_POOL_LOCK = threading.Lock()
# threads are made on demand and then kept for reuse; the bound only matters when this many steps block at
# once (slow pulls, stops), where it queues the rest instead of growing without limit
STEP_THREADS = 256


def _step_pool() -> ThreadPoolExecutor:
    """One executor for every policy's replica steps (PERF), created on first use."""
    global _STEP_POOL
    with _STEP_POOL_LOCK:
        if _STEP_POOL is None:
            _STEP_POOL = ThreadPoolExecutor(max_workers=STEP_THREADS, thread_name_prefix="step")
        return _STEP_POOL


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
        self.lifecycle = Lifecycle(self)
        self.errors: deque[tuple[float, str]] = deque(maxlen=20)
        self.last_observation: Observation | None = None
        self.last_sample_at: float | None = None
        self._history: deque[tuple[float, float]] = deque(maxlen=200_000)
        self._ready_history: deque[tuple[float, int]] = deque(maxlen=20_000)  # (at, serving) at each change
        self._workload: WorkloadSpec | None = None
        self._workload_at = 0.0
        self._workload_lock = threading.Lock()
        self._last_evaluate = 0.0
        self._none_live_at: int | None = None  # replica generation at which advance last found no live replica
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
        spec = self.edges.workloads.capture(self.policy, f"{dst}@{result.digest}")
        for key in spec.secret_env:  # before anything could log the spec: redacted from every log line
            register_secret(spec.env.get(key))
        self.event("replicate", f"image {src} -> {dst}@{result.digest[:19]} ({result.copied_blobs} blobs copied, "
                   f"{result.skipped_blobs} present, {result.seconds:.2f}s)", digest=result.digest)
        return spec

    def refresh_workload(self) -> None:
        """Pre-replication: copy the image ahead of any burst, and pick up a changed on-prem spec."""
        spec = self._prepare()
        with self._workload_lock:
            self._workload, self._workload_at = spec, self.clock()

    def holdings(self, live: Sequence[AnyReplica] | None = None, costing: Costing | None = None) -> list[Holding]:
        """Everything of this policy that costs or may cost money (see controller.budget). ``live`` and
        ``costing``: the policy's live replicas and costing rows when the caller just read them (a round's
        snapshot: no query at all, PERF)."""
        out: list[Holding] = []
        rows, launches = self.store.costing(self.name) if costing is None else costing  # PERF: tuples, one read
        instances = {row[0]: row for row in rows}  # id -> (id, replica_id, instance_type, price_per_hour)
        placed: set[str] = set()
        for r in self.store.live_replicas(self.name) if live is None else live:
            row = instances.get(r.instance_id) if r.instance_id else None
            if row is not None:
                placed.add(row[0])
            out.append(Holding(key=r.id, instance_type=row[2] if row else None,
                               price_per_hour=row[3] if row else None,
                               instance_id=row[0] if row else None, joinable=r.state in JOINABLE_STATES))
        for iid, replica_id, instance_type, price in (v for k, v in instances.items() if k not in placed):
            # its replica gone or unknown: still costs
            out.append(Holding(key=replica_id or f"instance:{iid}", instance_type=instance_type, price_per_hour=price))
        for intent_id, replica_id in launches:
            out.append(Holding(key=replica_id or f"intent:{intent_id}"))
        return out

    def spend_per_hour(self) -> float:
        return hourly_spend(self.policy, self.holdings())

    # ------------------------------------------------------------------ observe

    def _load_history(self) -> None:
        try:
            for s in self.store.samples(self.name, since=self.clock() - self._span()):
                if s.ok and s.value is not None:
                    self._history.append((s.at, s.value))
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
            self._history.append((at, obs.value))
            horizon = at - self._span()
            while self._history and self._history[0][0] < horizon:
                self._history.popleft()
        else:
            self.error(f"metric {obs.source or self.policy.metric.source}: {obs.error or 'no value'}")
        self.last_observation, self.last_sample_at = obs, at
        return obs

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
        # copied in one C call first: the sampling round appends to it meanwhile ("deque mutated during
        # iteration" crashed the tick on a loaded machine)
        history = tuple(p for p in tuple(self._history) if p[0] < at)
        ok, error = obs.ok, obs.error
        if age > float(self.policy.metric.stale_after):
            ok, error = False, f"stale: last sample {age:.0f}s old"
        return Observation(value=obs.value, age=age, source=obs.source, ok=ok, error=error, history=history)

    # ------------------------------------------------------------------ tick

    def tick(self, *, force_evaluate: bool = False) -> None:
        """Evaluate when due, then advance every live replica."""
        now = self.clock()
        if force_evaluate or now - self._last_evaluate >= self.options.evaluate_interval:
            self._last_evaluate = now
            self.advance(self.evaluate(now))
            return
        self.advance()

    def advance(self, replicas: Sequence[AnyReplica] | None = None) -> None:
        """Advance every live replica; in parallel, so one replica's slow pull, stop or probe does not hold
        back the others (each replica is still advanced by one thread at a time). ``replicas``: the live
        replicas when the caller just read them (PERF: one query less per tick)."""
        if replicas is None:
            generation = self.store.replica_generation(self.name)  # taken before the read (see the store)
            if generation == self._none_live_at:
                return  # PERF: no live replica at the last read and none planned since
            replicas = self.store.live_replicas(self.name)
            self._none_live_at = None if replicas else generation
        # PERF: a replica with nothing due (serving, probe not due) would return at once: no thread for it
        due = [r for r in replicas if self.lifecycle.has_work(r)]
        if len(due) <= 1:
            for replica in due:
                self._advance_one(replica)
            return
        # PERF: the process-wide step pool (threads reused across ticks) instead of a pool made and torn
        # down per advance (~2 ms per policy per tick); at most MAX_PARALLEL_STEPS of this policy at once
        pool, queue = _step_pool(), list(reversed(due))
        pending: set[Future[None]] = set()
        while queue or pending:
            while queue and len(pending) < MAX_PARALLEL_STEPS:
                pending.add(pool.submit(self._advance_one, queue.pop()))
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()

    def _advance_one(self, replica: AnyReplica) -> None:
        try:
            self.lifecycle.advance(replica)
        except StateBusyError:
            raise  # the whole tick holds; the scheduler runs it again
        except BurstError as exc:
            self.error(f"replica {replica.id} ({replica.state}): {exc}")
        except Exception as exc:  # a bug in one step must not stop the other replicas
            logger.exception("policy %s: replica %s step crashed", self.name, replica.id)
            self.error(f"replica {replica.id} ({replica.state}): internal error {type(exc).__name__}: {exc}")

    def fleet(self, paused: bool, replicas: Sequence[AnyReplica] | None = None,
              ps: PolicyState | PolicyFlags | None = None) -> tuple[Fleet, list[ReplicaView]]:
        replicas = self.store.live_replicas(self.name) if replicas is None else replicas
        active = [r for r in replicas if r.state in ACTIVE_STATES]
        ps = self.store.policy_state(self.name) if ps is None else ps
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
                      ready_history=tuple(self._ready_history))
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

    def evaluate(self, now: float, snapshot: FleetSnapshot | None = None,
                 into: HistorySink | None = None) -> Sequence[AnyReplica] | None:
        """Decide, plan and journal. Returns the live replicas it read when it changed none of them (the
        tick advances those without reading them again, PERF), else None. A round passes its fleet
        snapshot (no read at all) and takes the decision row into its batch."""
        ps: PolicyState | PolicyFlags | None
        live: Sequence[AnyReplica]
        if snapshot is None:
            ps = self.store.policy_state(self.name)
            live = self.store.live_replicas(self.name)  # read once for the fleet and the holdings
            costing = None
        else:
            ps, live, costing = snapshot.flags.get(self.name), snapshot.live(self.name), snapshot.costs(self.name)
        paused = bool(ps and ps.paused)
        drain_all = self.removed or bool(ps and ps.drain_requested)
        fleet, views = self.fleet(paused, live, ps)
        obs = self.observation(now)
        if drain_all:
            decision = Decision(0, Direction.IN, "policy removed" if self.removed else "operator drain")
        else:
            decision = self.decide(self.policy, obs, fleet, now)
        p = plan(self.policy, PlanInput(decision=decision, active=views, holdings=self.holdings(live, costing), now=now,
                                        observation_ok=obs.usable, paused=paused, drain_all=drain_all,
                                        last_scale_out=fleet.last_scale_out, last_scale_in=fleet.last_scale_in,
                                        target=ps.target if ps else None,
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

    def _act(self, p: Plan, now: float, views: list[ReplicaView], ps: PolicyState | PolicyFlags | None,
             drain_all: bool, reason: str, value: float | None) -> None:
        """Journal a scaling action: the planned replicas or the drains, the policy's target and cooldown
        marks, the event."""
        obs_value = value
        actual = len(views) - roll_surplus(views, ps.target if ps else None)
        if p.launch:
            planned = self.store.plan_replicas(self.name, p.launch, spec_hash="", reason=p.reason)
            self.store.save_policy(self.name, last_scale_out=now, target=actual + p.launch)
            self.event("scale-out", f"launching {p.launch} replica(s) ({len(views)} -> {len(views) + p.launch}): "
                       f"{reason}", replicas=[r.id for r, _ in planned], value=obs_value)
        if p.drain:
            for rid in p.drain:
                self.store.transition(rid, ReplicaState.DRAINING, reason=p.reason)
            if drain_all:
                self.store.save_policy(self.name, target=0)
            else:
                self.store.save_policy(self.name, last_scale_in=now, target=max(0, actual - len(p.drain)))
            self.event("scale-in", f"draining {len(p.drain)} replica(s) ({len(views)} -> "
                       f"{len(views) - len(p.drain)}): {reason}", replicas=list(p.drain), value=obs_value)
