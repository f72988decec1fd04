"""What one health check of one replica found (``HealthResult``), and the rule that combines Docker's own
health status with the HTTP check (``docker_health_ok``). The checks are made by
``adapters.health.HttpHealthChecker`` (the wiring's probe); the admission and eviction counts live in the
replica's lifecycle (``controller/loop/lifecycle.py``: ``health_passes``, ``health_failures``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HealthResult", "docker_health_ok"]


@dataclass(frozen=True, slots=True)
class HealthResult:
    """One check of one replica: HTTP and Docker's own healthcheck combined into ``ok``."""

    name: str  # the container name
    ok: bool
    detail: str  # why it failed ("HTTP 503", "timeout after 2.0s", "docker health: starting"), or "HTTP 200"
    http_status: int | None = None
    docker_health: str | None = None
    seconds: float = 0.0


def docker_health_ok(status: str | None) -> bool:
    """A container without a Docker healthcheck (None) is judged by HTTP alone; with one, only
    ``healthy`` passes (``starting`` is not yet a pass)."""
    return status is None or status == "healthy"
