"""Automatic bakes (policy ``bake: {auto: true, keep: N}``): when a policy's workload spec hash is new, the
daemon bakes a node image for it with the same Baker as ``burstctl bake`` (controller/loop/bake.py), in a
background thread of its own, so a burst never waits for it (until the image is Available, bursts boot
``cloud.image_id`` as before). Called by the daemon's replicate job (controller/daemon.py) after each refresh
of the workload.

The rule, journaled: a bake is an intent of kind ``bake`` on the policy, its target the spec hash. At most one
bake per (policy, spec hash): an intent done or failed for it is never run again; a pending one (its daemon
was killed or stopped mid-bake) is run again, at most ``MAX_ATTEMPTS`` times in all; a spec hash that already
has an image (baked by hand) starts none. One bake at a time per daemon (a queue of one: a later spec hash
waits for the next replicate after the running bake ends). A failure is an event (``bake-failed``) and never
holds a burst. The Baker keeps the policy's newest ``keep`` images and deletes the others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from controller.errors import BurstError, TransientError
from controller.loop.bake import Baker, BakeResult, BakeSettings
from controller.loop.edges import Edges
from controller.loop.steps import in_shadow
from controller.store.models import Intent, IntentKind, IntentState
from controller.store.state import StateStore

__all__ = ["MAX_ATTEMPTS", "AutoBake", "BakeRunner"]

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # runs of one pending bake intent (each restart in the middle of a bake is one)


class BakeRunner(Protocol):
    def bake(self, policy: Any) -> BakeResult: ...


class _Stopping(TransientError):
    """The daemon is stopping: the bake ends through its clean-up (the builder released), its intent stays
    pending for the next start."""


class AutoBake:
    """The daemon's automatic bakes. ``make_baker(settings)`` builds the Baker (default: on the daemon's own
    edges and store; None when the compute pool cannot make images)."""

    def __init__(self, store: StateStore, edges: Edges | None, controller_id: str, *, boot_timeout: float = 600.0,
                 make_baker: Callable[[BakeSettings], BakeRunner] | None = None) -> None:
        self.store, self.edges, self.controller_id = store, edges, controller_id
        self.boot_timeout = boot_timeout
        self._make = make_baker or self._default_baker
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _default_baker(self, settings: BakeSettings) -> BakeRunner:
        edges = self.edges
        compute, runtime = getattr(edges, "compute", None), getattr(edges, "runtime", None)
        if edges is None or not all(hasattr(compute, m) for m in ("create_image", "images", "delete_image")) \
                or not all(hasattr(runtime, m) for m in ("ping", "pull", "write_files")):
            raise BurstError("this controller's compute pool or node runtime cannot make node images")
        return Baker(edges, compute, runtime, self.store, self.controller_id, settings)  # type: ignore[arg-type]

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def consider(self, policy: Any, spec_hash: str) -> str | None:
        """Start a bake of ``policy`` for ``spec_hash`` in the background when the rule says so; the bake
        intent's id, or None (no bake: not asked for, already baked or tried, another bake running)."""
        bake = getattr(policy, "bake", None)
        if bake is None or not bake.auto or not spec_hash or in_shadow(policy) or self._stop.is_set():
            return None
        name = str(policy.name)
        with self._lock:
            if self.busy:
                return None
            tried = [i for i in self.store.intents(policy=name, kind=IntentKind.BAKE) if i.target == spec_hash]
            pending = [i for i in tried if i.state == IntentState.PENDING]
            if tried and not pending:
                return None  # done or failed for this spec hash: at most one bake per spec hash
            if not pending and self.store.baked_image(name, spec_hash, str(policy.cloud.image_id)):
                return None  # baked by hand (`burstctl bake`)
            if pending and pending[0].attempts >= MAX_ATTEMPTS:
                with self.store.transaction():
                    self.store.fail(pending[0].id, f"gave up after {pending[0].attempts} interrupted attempts")
                    self.store.record_event("bake-failed", f"automatic bake for spec {spec_hash[:12]}: gave up after "
                                            f"{pending[0].attempts} interrupted attempts", policy=name,
                                            details={"spec_hash": spec_hash, "intent": pending[0].id})
                return None
            intent = self.store.pool_intent(name, IntentKind.BAKE, target=spec_hash,
                                            payload={"base_image": str(policy.cloud.image_id)})
            self.store.record_event("bake-started", f"automatic bake for spec {spec_hash[:12]} (attempt "
                                    f"{intent.attempts}): a builder node boots {policy.cloud.image_id}",
                                    policy=name, details={"spec_hash": spec_hash, "intent": intent.id})
            self._thread = threading.Thread(target=self._run, args=(policy, spec_hash, intent),
                                            name=f"bake-{name}", daemon=True)
            self._thread.start()
            return intent.id

    def _run(self, policy: Any, spec_hash: str, intent: Intent) -> None:
        name = str(policy.name)
        try:
            baker = self._make(BakeSettings(keep=int(policy.bake.keep), boot_timeout=self.boot_timeout,
                                            sleep=self._sleep))
            result = baker.bake(policy)
        except _Stopping:
            logger.info("automatic bake of policy %s interrupted by the stop; resumed at the next start", name)
            return
        except Exception as exc:  # a failed bake is an event, never a crash of the daemon
            why = str(exc) if isinstance(exc, BurstError) else f"internal error {type(exc).__name__}: {exc}"
            if not isinstance(exc, BurstError):
                logger.exception("automatic bake of policy %s crashed", name)
            with self.store.transaction():
                self.store.fail(intent.id, why[:500])
                self.store.record_event("bake-failed", f"automatic bake for spec {spec_hash[:12]} failed: {why}",
                                        policy=name, details={"spec_hash": spec_hash, "intent": intent.id})
            return
        outcome = {"image": result.image_id, "spec_hash": result.spec_hash, "deleted": result.deleted}
        self.store.complete(intent.id, outcome=outcome)
        if result.spec_hash != spec_hash:  # the workload changed during the bake: the next replicate bakes it
            logger.info("policy %s: baked spec %s, asked for %s", name, result.spec_hash[:12], spec_hash[:12])

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopping("the controller is stopping")

    def close(self, timeout: float = 30.0) -> None:
        """Stop: a bake in flight ends through its clean-up (its builder released) within ``timeout``."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
