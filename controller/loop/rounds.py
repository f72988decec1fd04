"""The loop's rounds over every policy at once, run by the daemon (controller/daemon.py) as two jobs for the
whole fleet, ``sample`` every sample interval and ``step`` every step interval, instead of two per policy.

A round reads the fleet in one snapshot (controller/store/snapshot.py), writes its samples and decisions in one
transaction, describes every booting instance in one DescribeInstances per 100, probes the serving replicas
due a health check in one batch, and gives a thread only to a policy with a replica that has something to
do (PERF, docs/ha.md "Scale"); what the batched calls answered is handed to each replica's step as
``RoundFacts``. This is the daemon's only step path. Per-policy work stays in ``PolicyRuntime`` (sample,
evaluate) and ``Lifecycle`` (a replica's steps). A slow policy
(a metric source or a node step that hangs) never holds the fleet: the round waits for its work up to a
bound, the rest finishes in the background, and that policy sits its rounds out until it has.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from controller import metrics
from controller.errors import BurstError, StateBusyError
from controller.loop.edges import Edges, LoopOptions
from controller.loop.steps import AnyReplica, RoundFacts
from controller.loop.tick import PolicyRuntime
from controller.ports import Instance, ProbeTarget
from controller.store.models import ReplicaState
from controller.store.state import StateStore

__all__ = ["FleetRounds"]

logger = logging.getLogger(__name__)
S = ReplicaState
ROUND_THREADS = 64  # policies sampled or stepped at once (the per-policy jobs' executor had 64 too)
DESCRIBE_BATCH = 100  # instance ids per DescribeInstances
MAX_PARALLEL_STEPS = 16  # replicas of one policy advanced at once
# threads are made on demand and then kept for reuse; the bound only matters when this many steps block at
# once (slow pulls, stops), where it queues the rest instead of growing without limit
STEP_THREADS = 256


class _Batch:
    """A round's history rows: written together at ``flush``; a row handed in after that (a sample that
    finished late, in the background) is written on its own."""

    def __init__(self, store: StateStore) -> None:
        self.store, self.closed = store, False
        self.rows: list[Any] = []
        self.lock = threading.Lock()

    def add(self, row: Any) -> None:
        with self.lock:
            if not self.closed:
                self.rows.append(row)
                return
        self.store.record_history([row])

    def flush(self) -> None:
        with self.lock:
            rows, self.rows, self.closed = self.rows, [], True
        self.store.record_history(rows)


class FleetRounds:
    def __init__(self, store: StateStore, edges: Edges, options: LoopOptions,
                 clock: Callable[[], float] = time.time, on_store_busy: Callable[[], None] = lambda: None) -> None:
        self.store, self.edges, self.options, self.clock = store, edges, options, clock
        # told whenever a policy's part of a round found the state store busy (the daemon's readiness)
        self.on_store_busy = on_store_busy
        self._pool = ThreadPoolExecutor(max_workers=ROUND_THREADS, thread_name_prefix="round")
        self._steps = ThreadPoolExecutor(max_workers=STEP_THREADS, thread_name_prefix="step")  # replicas' steps
        self._evaluated: dict[str, float] = {}  # policy -> when its last evaluation ran
        self._sampling: dict[str, Future[Any]] = {}  # policy -> its sample still running from a round
        self._stepping: dict[str, Future[Any]] = {}  # policy -> its replicas' steps still running

    def close(self, timeout: float = 0.0) -> None:
        """Let the work in flight finish its current step (up to ``timeout``), start nothing new."""
        running = [f for f in [*self._sampling.values(), *self._stepping.values()] if not f.done()]
        if running and timeout > 0:
            wait(running, timeout=timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._steps.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _free(running: dict[str, Future[Any]], runtimes: Mapping[str, PolicyRuntime]) -> dict[str, PolicyRuntime]:
        for name in [n for n, f in running.items() if f.done()]:
            del running[name]
        return {name: rt for name, rt in runtimes.items() if name not in running}

    def _guarded(self, rt: PolicyRuntime, job: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
        """A policy's part of a round: its errors are its own (as the per-policy jobs' were). Returns whether
        it ran through, and what it returned."""
        try:
            return True, fn()
        except StateBusyError as exc:
            self.on_store_busy()
            logger.warning("%s of policy %s: state store busy, holding: %s", job, rt.name, exc)
        except BurstError as exc:
            logger.warning("%s of policy %s failed: %s", job, rt.name, exc)
            rt.error(f"{job}: {exc}")
        except Exception as exc:
            logger.exception("%s of policy %s crashed", job, rt.name)
            rt.error(f"{job}: internal error {type(exc).__name__}: {exc}")
        metrics.TICK_ERRORS.labels(job).inc()
        return False, None

    def _wait(self, running: dict[str, Future[Any]], started: dict[str, Future[Any]],
              timeout: float | None) -> None:
        running.update(started)
        if started:
            wait(list(started.values()), timeout=timeout)

    # ------------------------------------------------------------------ sample

    def sample(self, runtimes: Mapping[str, PolicyRuntime], *, timeout: float | None = None) -> None:
        """Every policy queries its metric source (in parallel: sources do I/O); one grouped count gives the
        serving replicas, one transaction writes the samples. Waits up to ``timeout`` (None: until done)."""
        free = self._free(self._sampling, runtimes)
        if not free:
            return
        serving = self.store.serving_counts()
        batch = _Batch(self.store)
        started = {name: self._pool.submit(self._sample_one, rt, serving.get(name, 0), batch)
                   for name, rt in free.items()}
        try:
            self._wait(self._sampling, started, timeout)
        finally:
            batch.flush()

    def _sample_one(self, rt: PolicyRuntime, serving: int, batch: _Batch) -> None:
        self._guarded(rt, "sample", lambda: rt.sample(serving=serving, into=batch.add))

    # ------------------------------------------------------------------ step

    def kick(self, name: str) -> None:
        """Evaluate the policy at the next step round, whatever its evaluation interval says (an operator
        action, a removed policy)."""
        self._evaluated.pop(name, None)

    def step(self, runtimes: Mapping[str, PolicyRuntime], *, force_evaluate: bool = False,
             timeout: float | None = None) -> None:
        """Evaluate every policy whose evaluation is due (all with ``force_evaluate``), then advance every live
        replica that has something to do. Waits for the steps up to ``timeout`` (None: until done)."""
        free = self._free(self._stepping, runtimes)
        if not free:
            return
        now = self.clock()
        snapshot, instances = self.store.fleet()
        pooled = {i.policy for i in instances if i.warm_since is not None}  # policies with a warm pool to tend
        batch = _Batch(self.store)
        live: dict[str, Sequence[AnyReplica]] = {}
        changed: list[str] = []
        try:
            for name, rt in free.items():
                live[name] = snapshot.live(name)
                last = self._evaluated.get(name)
                if force_evaluate or last is None or now - last >= self.options.evaluate_interval:
                    self._evaluated[name] = now
                    ran, kept = self._guarded(rt, "tick", lambda rt=rt: rt.evaluate(  # type: ignore[misc]
                        now, snapshot, into=batch.add))
                    if ran and kept is None:  # it planned or drained: its replicas are read again below
                        changed.append(name)
        finally:
            batch.flush()
        for name in [n for n in self._evaluated if n not in runtimes]:  # a forgotten policy
            del self._evaluated[name]
        if changed:
            again = self.store.live_rows(changed)
            for name in changed:
                live[name] = again.get(name, [])
        described = self._describe(free, live)
        probed = self._probe(free, live)
        started: dict[str, Future[None]] = {}
        for name, rt in free.items():
            lifecycle = rt.lifecycle
            due = [r for r in live[name] if lifecycle.has_work(r)]
            tend = name in pooled
            if not due and not tend:
                continue
            mine = probed.get(name, {})
            steps: list[AnyReplica] = []
            for r in due:
                if mine.get(r.id) and r.health_failures == 0:
                    lifecycle.probe_passed(r, now)  # steady: nothing to write, no thread
                    continue
                steps.append(r)  # a failed check, or a pass after failures: the step records it
            if not steps and not tend:
                continue
            facts = RoundFacts(
                described={r.instance_id: described.get(r.instance_id) for r in steps
                           if r.state == S.BOOTING and r.instance_id and r.instance_id in described},
                probed={r.id: mine[r.id] for r in steps if r.id in mine})
            started[name] = self._pool.submit(self._advance, rt, steps, facts, tend)
        self._wait(self._stepping, started, timeout)

    def _advance(self, rt: PolicyRuntime, steps: list[AnyReplica], facts: RoundFacts, tend: bool = False) -> None:
        """Advance one policy's replicas; in parallel, so one replica's slow pull, stop or probe does not hold
        back the others (each replica is still advanced by one thread at a time). ``tend``: the policy has
        a warm pool; its nodes that should go are released first (controller/loop/warm_pool.py)."""
        if tend:
            self._guarded(rt, "warm-pool", rt.lifecycle.tend_pool)
        if not steps:
            return
        if len(steps) == 1:
            self._advance_one(rt, steps[0], facts)
            return
        # PERF: the rounds' step pool (threads reused across rounds), at most MAX_PARALLEL_STEPS of this
        # policy at once
        queue = list(reversed(steps))
        pending: set[Future[None]] = set()
        while queue or pending:
            while queue and len(pending) < MAX_PARALLEL_STEPS:
                pending.add(self._steps.submit(self._advance_one, rt, queue.pop(), facts))
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()

    def _advance_one(self, rt: PolicyRuntime, replica: AnyReplica, facts: RoundFacts) -> None:
        try:
            rt.lifecycle.advance(replica, facts)
        except StateBusyError as exc:  # this replica holds; the next round runs its step again
            self.on_store_busy()
            logger.warning("step of replica %s (policy %s): state store busy, holding: %s", replica.id, rt.name, exc)
        except BurstError as exc:
            rt.error(f"replica {replica.id} ({replica.state}): {exc}")
        except Exception as exc:  # a bug in one step must not stop the other replicas
            logger.exception("policy %s: replica %s step crashed", rt.name, replica.id)
            rt.error(f"replica {replica.id} ({replica.state}): internal error {type(exc).__name__}: {exc}")

    def _describe(self, free: Mapping[str, PolicyRuntime],
                  live: Mapping[str, Sequence[AnyReplica]]) -> dict[str, Instance | None]:
        """Every booting instance in one DescribeInstances per 100 ids (was one call per instance per step).
        An id missing from the answer maps to None (gone); on an error nothing is known and each boot
        step asks on its own, as before."""
        ids = [r.instance_id for name in free for r in live[name] if r.state == S.BOOTING and r.instance_id]
        if not ids:
            return {}
        out: dict[str, Instance | None] = {}
        for start in range(0, len(ids), DESCRIBE_BATCH):
            chunk = ids[start:start + DESCRIBE_BATCH]
            try:
                found = {i.id: i for i in self.edges.compute.get(chunk)}
            except BurstError as exc:
                logger.info("batched boot check of %d instance(s) failed, steps check their own: %s", len(chunk), exc)
                continue
            out.update({iid: found.get(iid) for iid in chunk})
        return out

    def _probe(self, free: Mapping[str, PolicyRuntime],
               live: Mapping[str, Sequence[AnyReplica]]) -> dict[str, dict[str, bool]]:
        """The health checks due on serving replicas, all at once (``ReplicaProbe.probe_many``): policy ->
        replica id -> passed."""
        targets: list[tuple[str, str, ProbeTarget]] = []
        for name, rt in free.items():
            health = rt.policy.workload.health
            for r in live[name]:
                if r.state == S.SERVING and r.address and r.port and rt.lifecycle.has_work(r):
                    targets.append((name, r.id, (r.address, int(r.port), str(health.path), float(health.timeout))))
        if not targets:
            return {}
        results = list(self.edges.health.probe_many([t for _, _, t in targets]))
        out: dict[str, dict[str, bool]] = {}
        for (name, rid, _), ok in zip(targets, results, strict=True):
            out.setdefault(name, {})[rid] = bool(ok)
        for name, results_of in out.items():  # a workload with a Docker HEALTHCHECK: that must pass too
            lifecycle = free[name].lifecycle
            passed = [r for r in live[name] if results_of.get(r.id)]
            if passed and lifecycle.has_docker_health():
                docker_ok = lifecycle.docker_health(passed)
                for r in passed:
                    results_of[r.id] = docker_ok.get(r.id, False)
        return out
