"""One member of an active/standby pair: runs the control loop (a fresh ``Daemon``) only while it holds the
leader lease (controller/ha/leader.py), and otherwise serves the status endpoint read-only as a standby.
Built by ``burstctl run`` (controller/cli/run.py) when the config says ``ha: {enabled: true}``.

Three guards keep an old leader from acting: the daemon's jobs do not start without the lease
(``Daemon.leader``), every call to the cloud, a node or the load balancer checks it first (``fenced_edges``),
and every state write checks the epoch in its own transaction (``StateStore.fence``). A takeover adopts the
fleet the way a restart does: the new daemon's start-up reconcile (cloud tags + journal) and the pending
intents, re-run with their ClientTokens, so nothing is launched twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from controller.daemon import Daemon
from controller.errors import BurstError, FencedError
from controller.ha.leader import Leadership, LeaseSettings, LeaseTable
from controller.loop.edges import Edges
from controller.loop.tick import PolicyRuntime
from controller.ports import ComputePool, ImageRegistry, LoadBalancer, NodeRuntime
from controller.status.models import ControllerStatus, EventPage, MetricPoint, SampleRow
from controller.store.state import StateStore
from policies.types import Observation

__all__ = ["HaDaemon", "build_ha_daemon", "fenced_edges"]

logger = logging.getLogger(__name__)

VIEW_TTL = 5.0  # how stale the standby's picture of the fleet may be (it reads the active's journal)


class _Guarded:
    """A port whose every call first checks the lease (``ensure`` raises FencedError): an old leader that
    wakes up from a pause cannot reach the cloud, a node or the load balancer, even mid-step."""

    def __init__(self, target: Any, ensure: Callable[[], object]) -> None:
        self._target, self._ensure = target, ensure

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr) or name == "close":
            return attr

        def guarded(*args: Any, **kwargs: Any) -> Any:
            self._ensure()
            return attr(*args, **kwargs)

        return guarded


def fenced_edges(edges: Edges, ensure: Callable[[], object]) -> Edges:
    """The same edges, with the ports that act on the world guarded by the lease."""
    make_lb = edges.load_balancer
    return replace(edges, compute=cast(ComputePool, _Guarded(edges.compute, ensure)),
                   registry=cast(ImageRegistry, _Guarded(edges.registry, ensure)),
                   runtime=cast(NodeRuntime, _Guarded(edges.runtime, ensure)),
                   load_balancer=lambda policy: cast(LoadBalancer, _Guarded(make_lb(policy), ensure)))


class HaDaemon:
    """``StatusSource`` and the run interface of ``Daemon`` (start, stop, ready, request_reload, runtimes),
    switching between an active daemon and a read-only standby view as the lease comes and goes."""

    def __init__(self, *, leadership: Leadership, store: StateStore, make_daemon: Callable[[], Daemon],
                 controller_id: str, version: str = "0", clock: Callable[[], float] = time.time) -> None:
        self.leadership, self.store, self.make_daemon = leadership, store, make_daemon
        self.controller_id, self.version, self.clock = controller_id, version, clock
        self.daemon: Daemon | None = None  # the running loop, while active
        self.started_at = clock()
        self.takeovers = 0
        self._transition = threading.RLock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._view: Daemon | None = None
        self._view_at = -VIEW_TTL
        self._view_specs: dict[str, str] = {}
        self._view_lock = threading.Lock()

    # ------------------------------------------------------------------ start / stop

    @property
    def role(self) -> str:
        return "active" if self.daemon is not None and self.leadership.holds() else "standby"

    @property
    def standby(self) -> bool:
        """A healthy standby: not acting, and still taking part in the election (systemd's watchdog)."""
        return self.role == "standby" and not self._stopping.is_set()

    def start(self) -> None:
        """One election attempt now (a lone controller starts active, after its start-up reconcile, like a
        plain daemon), then the election thread and the supervisor that follows it."""
        self.leadership.try_acquire()
        self.leadership.start()
        self._follow()
        self._supervisor = threading.Thread(target=self._supervise, name="ha-supervisor", daemon=True)
        self._supervisor.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the loop (if active), then give the lease up so the standby takes over at once."""
        self._stopping.set()
        self.leadership.changed.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        with self._transition:
            self._deactivate(timeout, "shutting down")
        self.leadership.stop(resign=True)

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            self.leadership.changed.wait(0.5)
            self.leadership.changed.clear()
            if self._stopping.is_set():
                return
            try:
                self._follow()
            except Exception:  # the supervisor must outlive any surprise
                logger.exception("ha: role change failed")

    def _follow(self) -> None:
        with self._transition:
            if self.leadership.holds() and self.daemon is None:
                self._activate()
            elif not self.leadership.holds() and self.daemon is not None:
                self._deactivate(30.0, "lost the lease")

    def _activate(self) -> None:
        epoch = self.leadership.epoch
        previous = self.leadership.last_seen
        began = time.monotonic()
        daemon = self.make_daemon()
        daemon.leader = self.leadership.holds
        try:
            daemon.start()  # start-up reconcile: adopt the fleet by tags and journal, resume pending intents
        except BurstError as exc:
            logger.error("ha: could not start the loop as active (epoch %s): %s", epoch, exc)
            self._stop_quietly(daemon, 10.0)
            if not isinstance(exc, FencedError):
                self.leadership.resign()  # let the other one try
            return
        self.daemon = daemon
        self.takeovers += 1
        took = time.monotonic() - began
        before = f" (previous holder {previous.holder}, epoch {previous.epoch})" if previous and \
            previous.holder and previous.holder != self.leadership.holder else ""
        try:
            self.store.record_event("leader", f"controller {self.controller_id}: {self.leadership.holder} is "
                                    f"active with lease epoch {epoch}{before}; fleet adopted in {took:.1f}s",
                                    details={"holder": self.leadership.holder, "epoch": epoch})
        except BurstError as exc:
            logger.warning("ha: leader event not stored: %s", exc)

    def _deactivate(self, timeout: float, why: str) -> None:
        daemon, self.daemon = self.daemon, None
        if daemon is None:
            return
        logger.warning("ha: stopping the loop (%s); this process is now a standby", why)
        self._stop_quietly(daemon, timeout)

    @staticmethod
    def _stop_quietly(daemon: Daemon, timeout: float) -> None:
        try:
            daemon.stop(timeout)  # in-flight jobs are fenced at their next write or call
        except BurstError as exc:  # its closing event cannot be written once fenced
            logger.info("ha: loop stopped (%s)", exc)

    # ------------------------------------------------------------------ the standby's view

    def _standby_view(self) -> Daemon:
        """A daemon that never starts, whose runtimes are the active's policies as stored in the journal."""
        with self._view_lock:
            now = time.monotonic()
            if self._view is not None and now - self._view_at < VIEW_TTL:
                return self._view
            from policies.model import Policy

            view = self._view or self.make_daemon()
            runtimes: dict[str, PolicyRuntime] = {}
            specs: dict[str, str] = {}
            for ps in self.store.policy_states():
                if not ps.spec or (ps.removed and not self.store.live_replicas(ps.policy)):
                    continue
                runtime = view.runtimes.get(ps.policy)
                if runtime is None or self._view_specs.get(ps.policy) != ps.spec:
                    try:
                        policy = Policy.model_validate(json.loads(ps.spec))
                    except ValueError as exc:
                        logger.warning("ha: stored policy %s unreadable: %s", ps.policy, exc)
                        continue
                    runtime = PolicyRuntime(policy, store=self.store, edges=view.edges, options=view.options,
                                            clock=self.clock)
                runtime.removed = ps.removed
                last = self.store.samples(ps.policy, since=self.clock() - float(runtime.policy.metric.stale_after))
                if last:
                    s = last[-1]
                    runtime.last_observation = Observation(value=s.value, age=0.0, source=s.source, ok=s.ok,
                                                           error=s.error)
                    runtime.last_sample_at = s.at
                runtimes[ps.policy], specs[ps.policy] = runtime, ps.spec
            view.runtimes, self._view_specs = runtimes, specs
            self._view, self._view_at = view, now
            return view

    def _source(self) -> Daemon:
        daemon = self.daemon
        return daemon if daemon is not None and self.leadership.holds() else self._standby_view()

    def _standby_reason(self) -> str:
        seen, me = self.leadership.last_seen, self.leadership.holder
        if self.leadership.last_error:
            return f"standby: state database unreachable: {self.leadership.last_error}"
        if seen is None or not seen.holder or seen.holder == me or not seen.live:
            return "standby: no active controller holds the lease; taking over at the next attempt"
        return (f"standby: {seen.holder} is active (lease epoch {seen.epoch}, expires in "
                f"{max(0.0, seen.remaining):.1f}s unless renewed)")

    # ------------------------------------------------------------------ the Daemon interface

    @property
    def runtimes(self) -> dict[str, PolicyRuntime]:
        return self._source().runtimes

    def request_reload(self) -> None:
        daemon = self.daemon
        if daemon is not None:
            daemon.request_reload()

    # ------------------------------------------------------------------ StatusSource

    def status(self) -> ControllerStatus:
        source = self._source()
        st = source.status()
        if source is self.daemon:
            return st
        return st.model_copy(update={"role": "standby", "ready": False, "ready_reason": self._standby_reason(),
                                     "started_at": self.started_at, "version": self.version})

    def ready(self) -> tuple[bool, str]:
        daemon = self.daemon
        if daemon is not None and self.leadership.holds():
            return daemon.ready()
        return False, self._standby_reason()

    def events(self, *, cursor: int | None, limit: int, policy: str | None) -> EventPage:
        return self._source().events(cursor=cursor, limit=limit, policy=policy)

    def wait_between_steps(self, room: float, max_wait: float) -> None:
        """The active daemon's gap between step rounds (``Daemon.wait_between_steps``); a standby runs none."""
        daemon = self.daemon
        if daemon is not None and self.leadership.holds():
            daemon.wait_between_steps(room, max_wait)

    def history(self, policy: str, since: float, limit: int) -> list[MetricPoint]:
        return self._source().history(policy, since, limit)

    def history_rows(self, *, after: int, since: float, limit: int) -> list[SampleRow]:
        return self._source().history_rows(after=after, since=since, limit=limit)

    def _active(self) -> Daemon:
        daemon = self.daemon
        if daemon is None or not self.leadership.holds():
            raise FencedError(f"this controller is a standby; {self._standby_reason()[len('standby: '):]}")
        return daemon

    def pause(self, policy: str) -> None:
        self._active().pause(policy)

    def resume(self, policy: str) -> None:
        self._active().resume(policy)

    def drain(self, policy: str) -> None:
        self._active().drain(policy)


def build_ha_daemon(cfg: Any, *, edges: Edges, store: StateStore, version: str = "0") -> HaDaemon:
    """Wire a pair member: the lease of ``cfg.controller_id`` in ``cfg.state.url``, the store's write
    fence, the guarded edges, and a factory for a fresh daemon at each takeover."""
    from controller.wiring import build_daemon

    settings = LeaseSettings(ttl=float(cfg.ha.lease_ttl), renew_every=float(cfg.ha.renew_every))
    leadership = Leadership(LeaseTable(cfg.state.url, cfg.controller_id), settings)
    store.fence = leadership.fence
    guarded = fenced_edges(edges, leadership.ensure)
    logger.info("ha: pair member %s for controller %s (lease ttl %gs, renewed every %gs)", leadership.holder,
                cfg.controller_id, settings.ttl, settings.renew_every)
    return HaDaemon(leadership=leadership, store=store, version=version, controller_id=cfg.controller_id,
                    make_daemon=lambda: build_daemon(cfg, edges=guarded, store=store, version=version))
