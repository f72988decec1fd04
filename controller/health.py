"""Health admission: counts consecutive health-check results per replica and says when a replica is
admitted to traffic (N passes in a row) or must leave it (M failures in a row). Pure counting; the
checks themselves are done by a ``HealthProbe`` (``adapters.health.HttpHealthChecker``). Used by the
controller's start and serve steps, and by the rolling update."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from controller.ports import Container

__all__ = ["HealthProbe", "HealthResult", "HealthTracker", "Transition", "docker_health_ok"]


@dataclass(frozen=True, slots=True)
class HealthResult:
    """One check of one replica: HTTP and Docker's own healthcheck combined into ``ok``."""

    name: str  # the container name
    ok: bool
    detail: str  # why it failed ("HTTP 503", "timeout after 2.0s", "docker health: starting"), or "HTTP 200"
    http_status: int | None = None
    docker_health: str | None = None
    seconds: float = 0.0


class HealthProbe(Protocol):
    def check(self, containers: Sequence[Container]) -> dict[str, HealthResult]:
        """Check all at once; results by container name. Never raises for a failing replica."""


def docker_health_ok(status: str | None) -> bool:
    """A container without a Docker healthcheck (None) is judged by HTTP alone; with one, only
    ``healthy`` passes (``starting`` is not yet a pass)."""
    return status is None or status == "healthy"


class Transition(StrEnum):
    ADMIT = "admit"
    EVICT = "evict"


@dataclass
class _Count:
    passes: int = 0
    failures: int = 0
    admitted: bool = False


class HealthTracker:
    """Consecutive-pass / consecutive-failure counting per replica name."""

    def __init__(self, passes: int, failures: int) -> None:
        if passes < 1 or failures < 1:
            raise ValueError("passes and failures must be at least 1")
        self.passes = passes
        self.failures = failures
        self._counts: dict[str, _Count] = {}

    def record(self, name: str, ok: bool) -> Transition | None:
        """Count one result; the transition it causes, if any."""
        c = self._counts.setdefault(name, _Count())
        if ok:
            c.passes += 1
            c.failures = 0
            if not c.admitted and c.passes >= self.passes:
                c.admitted = True
                return Transition.ADMIT
            return None
        c.failures += 1
        c.passes = 0
        if c.admitted and c.failures >= self.failures:
            c.admitted = False
            return Transition.EVICT
        return None

    def record_all(self, results: dict[str, HealthResult]) -> dict[str, Transition]:
        out = {}
        for name in sorted(results):
            t = self.record(name, results[name].ok)
            if t is not None:
                out[name] = t
        return out

    def admitted(self, name: str) -> bool:
        c = self._counts.get(name)
        return bool(c and c.admitted)

    def adopt(self, name: str) -> None:
        """Treat a replica already serving (found after a controller restart) as admitted."""
        self._counts[name] = _Count(passes=self.passes, admitted=True)

    def counts(self, name: str) -> tuple[int, int]:
        c = self._counts.get(name) or _Count()
        return c.passes, c.failures

    def forget(self, name: str) -> None:
        self._counts.pop(name, None)
