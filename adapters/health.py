"""Concurrent HTTP health checks of replicas (httpx), combined with each container's Docker health
status: the probe the wiring gives the controller's admission and serve steps."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import httpx

from controller.health import HealthResult, docker_health_ok
from controller.ports import Container

__all__ = ["HttpHealthChecker"]

logger = logging.getLogger(__name__)


class HttpHealthChecker:
    """GET ``http://<address>:<port><path>`` on every replica at once; 2xx/3xx within ``timeout`` passes.

    Redirects are not followed (a redirect answer is the application answering). Proxies from the
    environment never apply: replicas are reached directly on their node address.
    """

    def __init__(self, path: str = "/", timeout: float = 2.0, concurrency: int = 64) -> None:
        self.path = path if path.startswith("/") else "/" + path
        self.timeout = timeout
        self.concurrency = max(1, concurrency)

    def check(self, containers: Sequence[Container]) -> dict[str, HealthResult]:
        if not containers:
            return {}
        return asyncio.run(self._check_all(containers))

    async def _check_all(self, containers: Sequence[Container]) -> dict[str, HealthResult]:
        limit = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=self.timeout, trust_env=False, follow_redirects=False,
                                     limits=limits) as client:
            results = await asyncio.gather(*(self._check_one(client, limit, c) for c in containers))
        return {r.name: r for r in results}

    async def _check_one(self, client: httpx.AsyncClient, limit: asyncio.Semaphore, c: Container) -> HealthResult:
        started = time.monotonic()
        status: int | None = None
        if c.state != "running":
            return HealthResult(c.name, False, f"container {c.state}", None, c.health, 0.0)
        if not c.port:
            return HealthResult(c.name, False, "no published service port", None, c.health, 0.0)
        async with limit:
            try:
                response = await client.get(f"http://{c.address}:{c.port}{self.path}")
                status = response.status_code
                http_ok = 200 <= status < 400
                detail = f"HTTP {status}"
            except httpx.TimeoutException:
                http_ok, detail = False, f"timeout after {self.timeout:g}s"
            except httpx.HTTPError as exc:
                http_ok, detail = False, f"{type(exc).__name__}: {exc}"[:200]
        seconds = time.monotonic() - started
        ok = http_ok and docker_health_ok(c.health)
        if http_ok and not ok:
            detail = f"docker health: {c.health}"
        return HealthResult(c.name, ok, detail, status, c.health, seconds)
