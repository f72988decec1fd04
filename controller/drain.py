"""Scale-in of one replica without dropping a request: out of new traffic, wait for its sessions to end
(or the drain timeout), out of the load balancer, stop the container with the policy's signal and stop
timeout, remove it. Called by the controller's drain step and by the rolling update; every step is
idempotent, so a drain interrupted by a crash is finished by running it again."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.errors import TransientError
from controller.ports import LoadBalancer, Node, NodeRuntime

__all__ = ["DrainOutcome", "DrainSettings", "DrainTarget", "drain_replica", "drain_settings_from_policy"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DrainSettings:
    timeout: float  # longest wait for sessions to reach zero; then the drain is forced
    signal: str = "SIGTERM"
    stop_timeout: float = 30.0  # after the signal, before SIGKILL
    poll_interval: float = 0.5
    remove_container: bool = True  # the instance goes next anyway; on a shared engine this keeps it clean


def drain_settings_from_policy(policy: Any) -> DrainSettings:
    return DrainSettings(timeout=float(policy.drain.timeout), signal=str(policy.drain.signal),
                         stop_timeout=float(policy.drain.stop_timeout))


@dataclass(frozen=True, slots=True)
class DrainTarget:
    backend: str
    server: str  # the load-balancer server name
    node: Node
    container_id: str


@dataclass(frozen=True, slots=True)
class DrainOutcome:
    server: str
    waited: float  # seconds between taking it out of new traffic and sessions reaching zero (or timeout)
    forced: bool  # the timeout passed with sessions still open
    sessions_left: int


def drain_replica(
    lb: LoadBalancer,
    runtime: NodeRuntime,
    target: DrainTarget,
    settings: DrainSettings,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DrainOutcome:
    """Drain, wait, remove from the load balancer, stop, remove. Returns when the instance may go."""
    lb.drain(target.backend, target.server)
    started = clock()
    deadline = started + settings.timeout
    sessions = -1
    while True:
        try:
            sessions = lb.sessions(target.backend, target.server)
        except TransientError as exc:
            # an unreadable count is not zero: keep waiting, the timeout still bounds it
            logger.warning("drain: sessions of %s unreadable: %s", target.server, exc)
            sessions = -1
        if sessions == 0 or clock() >= deadline:
            break
        sleep(min(settings.poll_interval, max(0.0, deadline - clock())))
    waited = clock() - started
    forced = sessions != 0
    if forced:
        logger.warning("drain timeout: %s still had %s sessions after %.1fs; forcing", target.server,
                       "unknown" if sessions < 0 else sessions, waited,
                       extra={"server": target.server, "backend": target.backend})
    lb.remove(target.backend, target.server)
    runtime.stop(target.node, target.container_id, settings.signal, settings.stop_timeout)
    if settings.remove_container:
        runtime.remove(target.node, target.container_id)
    logger.info("drained", extra={"server": target.server, "waited": round(waited, 2), "forced": forced})
    return DrainOutcome(server=target.server, waited=waited, forced=forced, sessions_left=max(sessions, 0))
