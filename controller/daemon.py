"""The controller daemon: runs the jobs on an APScheduler thread pool (for the whole fleet: sample and step
rounds, reconcile, reload, gc; per policy: replicate), reloads policies, and answers the status endpoint
(``StatusSource``). Built by ``burstctl run`` and ``burstctl demo`` through controller/wiring.py.

Jobs have max_instances=1 and coalesce; the rounds (controller/loop/rounds.py) keep a slow policy's work to
itself (it sits rounds out while its work runs), and every job catches its errors, so a failing one never
stops another.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from controller import metrics
from controller.errors import BurstError, NotFoundError, StateBusyError
from controller.loop.auto_bake import AutoBake
from controller.loop.edges import Edges, LoopOptions
from controller.loop.policyset import PolicySet
from controller.loop.reconcile import Reconciler
from controller.loop.rounds import FleetRounds
from controller.loop.tick import Decide, PolicyRuntime
from controller.retry import Backoff, retry_call
from controller.status.report import StatusReport
from controller.store.state import StateStore

__all__ = ["Daemon"]

logger = logging.getLogger(__name__)


class Daemon(StatusReport):
    def __init__(self, *, options: LoopOptions, store: StateStore, edges: Edges, policies_dir: str | Path,
                 decide: Decide | None = None, clock: Callable[[], float] = time.time,
                 version: str = "0") -> None:
        self.options, self.store, self.edges, self.clock, self.version = options, store, edges, clock, version
        self.decide = decide
        self.policy_set = PolicySet(policies_dir)
        self.runtimes: dict[str, PolicyRuntime] = {}
        self.reconciler = Reconciler(store, edges, options, clock)
        self.rounds = FleetRounds(store, edges, options, clock, on_store_busy=self._store_busy)
        self.auto_bake = AutoBake(store, edges, options.controller_id, boot_timeout=options.boot_timeout)
        self.started_at = clock()
        self._lock = threading.RLock()
        self._ready, self._why = False, "starting"
        self._stopping = False
        self._running: dict[str, float] = {}  # job id -> start (monotonic), for the job-timeout report
        self._step_done = threading.Condition()  # notified when a step round ends (wait_between_steps)
        self._last_store_error: float | None = None
        # SCALE-HA (controller/ha/pair.py): in an active/standby pair, True only while this process holds the
        # leader lease; no job starts without it (a process resumed after a pause must not act)
        self.leader: Callable[[], bool] | None = None
        # "skipped: maximum number of running instances reached" is the design (a slow policy skips its own
        # late runs), not news; overlong jobs are reported by _guard instead
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=64)},  # threads are made lazily
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone="UTC")

    # ------------------------------------------------------------------ start / stop

    def start(self) -> None:
        """Load policies, reconcile with the cloud, then start the jobs. Returns once running."""
        self.reload(initial=True)
        self._restore_removed()
        report = self._with_retry("start-up reconcile", lambda: self.reconciler.run(self.runtimes))
        pending = self.store.intents(state="pending")
        self.store.record_event("start", f"controller {self.options.controller_id} started: "
                                f"{len(self.runtimes)} policies, {len(pending)} pending intents to resume, "
                                f"reconcile: {report.summary() if report else 'deferred'}")
        self.scheduler.start()
        for name in list(self.runtimes):
            self._schedule_policy(name)
        o = self.options
        # PERF: one sample and one step job for the whole fleet (was two per policy; docs/ha.md "Scale")
        self._add("sample", self.sample_round, o.sample_interval)
        self._add("step", self.step_round, o.step_interval, first=min(1.0, o.step_interval))
        self._add("reconcile", self.reconcile, o.reconcile_interval, first=o.reconcile_interval)
        self._add("reload", self._poll_reload, o.reload_interval)
        self._add("gc", self.gc, o.gc_interval)
        self.freeze_startup_heap()
        self._ready, self._why = True, ""

    @staticmethod
    def freeze_startup_heap() -> None:
        """PERF: what start-up built (policies, runtimes, connection pools, imported modules) lives as long as
        the process; moved out of the cyclic collector's reach, a full collection no longer walks it (at 500
        policies it was a third of a tick's CPU: a round allocates ~100,000 objects, and every few rounds a
        full collection scanned the whole heap). Objects made later are collected as usual; an earlier start's
        frozen objects (a loop rebuilt after an HA takeover) are unfrozen and collected first, so nothing
        accumulates. A runtime dropped by a reload before the next start is freed at that start."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        # a round allocates in bursts (a 5,000-instance listing is ~100,000 short-lived containers): young
        # collections every 700 allocations ran ~270 times in a tick of 500 policies, every 10,000 ~20 times
        gc.set_threshold(10_000, 10, 10)

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful: no new job starts; jobs in flight finish their current step (each step is journaled
        before it acts, so anything cut short is resumed at the next start)."""
        self._stopping = True
        self._ready, self._why = False, "stopping"
        if self.scheduler.running:
            self.scheduler.pause()
            done = threading.Event()

            def shutdown() -> None:
                self.scheduler.shutdown(wait=True)
                done.set()

            threading.Thread(target=shutdown, daemon=True).start()
            started = time.monotonic()
            if not done.wait(timeout):
                logger.warning("jobs still running after %.0fs: %s", timeout, ", ".join(self._running))
            self.rounds.close(max(0.0, timeout - (time.monotonic() - started)))
        else:
            self.rounds.close()
        self.auto_bake.close()  # a bake in flight releases its builder; its intent is resumed at the next start
        for runtime in self.runtimes.values():
            runtime.close()
        self.store.record_event("stop", f"controller {self.options.controller_id} stopped")

    def _with_retry(self, what: str, fn: Callable[[], Any], attempts: int = 5) -> Any:
        """``fn()``, tried ``attempts`` times on any project error (at start-up a cloud API or a node may
        still be coming up); None when every attempt failed: the scheduled job does it again later."""
        try:
            return retry_call(fn, Backoff(attempts, 0.5, 5.0), what, retry_on=lambda exc: isinstance(exc, BurstError))
        except BurstError as exc:
            logger.warning("%s failed after %d attempts: %s", what, attempts, exc)
            return None

    # ------------------------------------------------------------------ jobs

    def _add(self, job_id: str, fn: Callable[[], object], every: float, first: float = 0.0) -> None:
        from datetime import datetime, timedelta

        self.scheduler.add_job(self._guard, "interval", seconds=max(0.2, every), id=job_id, args=(job_id, fn),
                               replace_existing=True,
                               next_run_time=datetime.now(UTC) + timedelta(seconds=first))

    def _store_busy(self) -> None:
        """A job, or a policy's part of a round, found the state store busy: readiness says so for 30 s."""
        self._last_store_error = time.monotonic()

    def _guard(self, job_id: str, fn: Callable[[], object]) -> None:
        """Every job runs through here: timed, its errors caught and reported, never propagated."""
        if self._stopping or (self.leader is not None and not self.leader()):
            return
        started = time.monotonic()
        self._running[job_id] = started
        job = job_id.split(":", 1)[0].removesuffix("-now")  # "replicate:web" -> replicate, "reload-now" -> reload
        try:
            fn()
        except StateBusyError as exc:
            self._store_busy()
            logger.warning("job %s: state store busy, holding: %s", job_id, exc)
            metrics.TICK_ERRORS.labels(job).inc()
        except BurstError as exc:
            logger.warning("job %s failed: %s", job_id, exc)
            metrics.TICK_ERRORS.labels(job).inc()
            policy = job_id.split(":", 1)[1] if ":" in job_id else None
            if policy in self.runtimes:
                self.runtimes[policy].error(f"{job}: {exc}")
        except Exception:
            logger.exception("job %s crashed", job_id)
            metrics.TICK_ERRORS.labels(job).inc()
        finally:
            self._running.pop(job_id, None)
            if job_id == "step":
                with self._step_done:
                    self._step_done.notify_all()
            took = time.monotonic() - started
            metrics.TICK_SECONDS.labels(job).observe(took)
            if took > self.options.job_timeout:
                logger.warning("job %s took %.1fs (over %.0fs)", job_id, took, self.options.job_timeout)

    def _schedule_policy(self, name: str) -> None:
        runtime = self.runtimes[name]
        self._add(f"replicate:{name}", lambda: self._replicate(runtime), self.options.replicate_interval)

    def _replicate(self, runtime: PolicyRuntime) -> None:
        """The replicate job: copy the workload's image ahead of a burst; a new spec hash may start an
        automatic bake (policy ``bake.auto``, controller/loop/auto_bake.py), in the background."""
        runtime.refresh_workload()
        self.auto_bake.consider(runtime.policy, runtime.spec_hash())

    def _unschedule_policy(self, name: str) -> None:
        with contextlib.suppress(JobLookupError):  # already gone
            self.scheduler.remove_job(f"replicate:{name}")

    def sample_round(self, timeout: float | None = -1.0) -> None:
        """Every policy samples its metric (the ``sample`` job). ``timeout``: how long to wait for slow
        sources (default: the sample interval; None: until all are done)."""
        with self._lock:
            runtimes = dict(self.runtimes)
        self.rounds.sample(runtimes, timeout=self.options.sample_interval if timeout == -1.0 else timeout)

    def step_round(self, force_evaluate: bool = False, timeout: float | None = -1.0) -> None:
        """Every policy evaluates when due and advances its replicas (the ``step`` job). ``timeout``: how long
        to wait for the replicas' steps (default: the step interval; None: until all are done)."""
        with self._lock:
            runtimes = dict(self.runtimes)
        self.rounds.step(runtimes, force_evaluate=force_evaluate,
                         timeout=self.options.step_interval if timeout == -1.0 else timeout)

    def wait_between_steps(self, room: float, max_wait: float) -> None:
        """For work that must not slow the control loop (the status snapshot, controller/status/process.py):
        return once no step round is running and the next one is at least ``room`` seconds away, or after
        ``max_wait`` seconds in any case (a loop too busy to leave a gap must not starve the caller)."""
        from datetime import datetime

        deadline = time.monotonic() + max_wait
        while (left := deadline - time.monotonic()) > 0:
            if "step" in self._running:
                with self._step_done:
                    self._step_done.wait_for(lambda: "step" not in self._running, timeout=left)
                continue
            job = self.scheduler.get_job("step") if self.scheduler.running else None
            if job is None or job.next_run_time is None:
                return
            until = (job.next_run_time - datetime.now(UTC)).total_seconds()
            if until >= room:
                return
            # the next round is due within ``room`` (or late, waiting for a thread): let it run first
            time.sleep(min(left, max(until, 0.0) + 0.002))

    def kick(self, name: str) -> None:
        """Evaluate the policy at the next step round, run now (after an operator action) instead of at its
        next evaluation interval."""
        from datetime import datetime

        if self.scheduler.running and name in self.runtimes and self.scheduler.get_job("step"):
            self.rounds.kick(name)
            self.scheduler.modify_job("step", next_run_time=datetime.now(UTC))

    def reconcile(self) -> None:
        with self._lock:
            runtimes = dict(self.runtimes)
        self.reconciler.run(runtimes)

    def gc(self) -> None:
        with self._lock:
            spans = [runtime.history_span() for runtime in self.runtimes.values()]
        now = self.clock()
        # samples stay as long as any policy's strategy reads them (a forecast's weekly season: about 15 days),
        # so a restarted daemon reloads the history the simulator gives the strategy (docs/decisions.md)
        keep = max([self.options.history_retention, *spans])
        counts = self.store.prune(before=now - self.options.history_retention, samples_before=now - keep)
        with self._lock:
            for name, runtime in list(self.runtimes.items()):
                if runtime.removed and not self.store.live_replicas(name) and not self.store.warm_instances(name):
                    self._unschedule_policy(name)
                    runtime.close()
                    del self.runtimes[name]
                    self.store.record_event("policy-forgotten", f"policy {name} removed and fully drained",
                                            policy=name)
        if any(counts.values()):
            logger.info("gc: pruned %s", counts)

    # ------------------------------------------------------------------ policies

    def _poll_reload(self) -> None:
        if self.policy_set.changed():
            self.reload()

    def request_reload(self) -> None:
        """SIGHUP: reload now, from a scheduler thread (never from the signal handler itself)."""
        if self.scheduler.running:
            self._add("reload-now", self.reload, 3600.0)
        else:
            self.reload()

    def reload(self, initial: bool = False) -> None:
        with self._lock:
            result = self.policy_set.reload()
            for name in result.added + result.changed:
                policy = self.policy_set.policies[name]
                self.store.save_policy(name, spec=policy.model_dump_json(),
                                       source_file=self.policy_set.files.get(name), removed=False)
                if name in self.runtimes:
                    was = self.runtimes[name].policy.mode
                    self.runtimes[name].replace_policy(policy)
                    self.runtimes[name].removed = False
                    if was != policy.mode:  # evaluated at the next step round, not at its next interval
                        self._mode_changed(name, policy.mode)
                else:
                    self.runtimes[name] = PolicyRuntime(policy, store=self.store, edges=self.edges,
                                                        options=self.options, decide=self.decide,
                                                        clock=self.clock)
                    if not initial and self.scheduler.running:
                        self._schedule_policy(name)
            for name in result.removed:
                self.store.save_policy(name, removed=True)
                if name in self.runtimes:
                    self.runtimes[name].removed = True
                    self.kick(name)
            if result.touched or result.problems:
                message = (f"policies reloaded: added {result.added or '-'}, changed {result.changed or '-'}, "
                           f"removed {result.removed or '-'}")
                if result.problems:
                    outcome = []
                    if result.kept:
                        outcome.append(f"the last good version of {', '.join(result.kept)} stays in force")
                    if result.unloaded:
                        outcome.append(f"nothing loaded from {', '.join(Path(f).name for f in result.unloaded)} "
                                       "(no earlier good version)")
                    message += f"; rejected {len(result.problems)} problem(s): " + "; ".join(outcome or ["see them"])
                self.store.record_event("reload", message, details={"problems": result.problems[:50]})

    def _mode_changed(self, name: str, mode: str) -> None:
        if mode == "shadow":
            message = (f"policy {name} is now in shadow mode: it decides and records what it would do, and acts "
                       "on nothing; its replicas, if any, are drained")
        else:
            message = f"policy {name} is now active: it acts on its decisions from the next evaluation"
        self.store.record_event("mode", message, policy=name, details={"mode": mode})
        self.kick(name)

    def _restore_removed(self) -> None:
        """A policy removed while its replicas were live (maybe before a restart) is drained from its last
        good spec, kept in the store."""
        from policies.model import Policy

        for ps in self.store.policy_states():
            if ps.policy in self.runtimes or not ps.spec or not self.store.live_replicas(ps.policy):
                continue
            try:
                policy = Policy.model_validate(json.loads(ps.spec))
            except ValueError as exc:
                logger.error("policy %s: stored spec unreadable, its replicas cannot be drained: %s", ps.policy, exc)
                continue
            runtime = PolicyRuntime(policy, store=self.store, edges=self.edges, options=self.options,
                                    decide=self.decide, clock=self.clock)
            runtime.removed = True
            self.runtimes[ps.policy] = runtime
            self.store.save_policy(ps.policy, removed=True)
            self.store.record_event("policy-removed", f"policy {ps.policy} is no longer in "
                                    f"{self.policy_set.directory}: draining its replicas", policy=ps.policy)

    def runtime(self, name: str) -> PolicyRuntime:
        try:
            return self.runtimes[name]
        except KeyError:
            raise NotFoundError(f"no policy named {name!r}") from None
