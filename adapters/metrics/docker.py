"""``DockerCpuMetricsSource``: the CPU use of a workload's on-prem containers (Docker stats), summed over
one or more Docker hosts, as a ``MetricsSource``. Built by the daemon's wiring for ``metric.source:
workload_cpu``; called by the sampler each tick.

The value is a percentage of the workload's CPU capacity. With ``relative_to="limit"`` (the default) the
capacity is the sum of the selected containers' CPU limits (``--cpus`` / NanoCpus, or CpuQuota/CpuPeriod),
a container without a limit counting as all of its host's CPUs; with ``relative_to="host"`` it is the sum
of the CPUs of the hosts that run selected containers. 100 means the workload uses all of it.

Usage is measured between two readings of each container's cumulative CPU counter (the docker CLI's
formula: container CPU delta / host CPU delta x host CPUs), so a query costs one one-shot stats call per
container after the first; the first sight of a container takes a two-sample reading (about a second).
A host that fails, or a selection that matches no running container, gives ok=False: a partial sum would
under-report the load and could trigger a scale-in on missing data.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import docker
import requests
from docker.errors import DockerException, NotFound

from adapters.docker_engine.client import docker_client
from adapters.metrics.window import DEFAULT_HORIZON, SampleWindow
from adapters.pki import TlsFiles
from controller.ports import LABEL_CONTROLLER
from policies.types import Observation

__all__ = ["ContainerCpu", "DockerCpuMetricsSource"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ContainerCpu:
    """One container's share of the measurement (cores used and the capacity it counts for)."""

    host: str
    name: str
    used_cores: float
    capacity_cores: float


@dataclass(slots=True)
class _Reading:
    container_total: int  # ns of CPU the container used since it started
    system_total: int  # ns of CPU the whole host used since boot (all CPUs)
    online_cpus: int


def _reading(stats: Mapping[str, Any], key: str = "cpu_stats") -> _Reading | None:
    cpu = stats.get(key) or {}
    total = (cpu.get("cpu_usage") or {}).get("total_usage")
    system = cpu.get("system_cpu_usage")
    if total is None or system is None:
        return None
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    return _Reading(int(total), int(system), int(online))


def _limit_cores(attrs: Mapping[str, Any], host_cpus: int) -> float:
    hc = attrs.get("HostConfig") or {}
    if hc.get("NanoCpus"):
        return float(hc["NanoCpus"]) / 1e9
    quota, period = hc.get("CpuQuota") or 0, hc.get("CpuPeriod") or 100_000
    if quota > 0:
        return float(quota) / float(period)
    return float(host_cpus)


def _describe(exc: Exception) -> str:
    """A short reason, not requests' nested retry message."""
    text = str(exc)
    if isinstance(exc, requests.ConnectionError):
        return "connection refused" if "refused" in text.lower() else "cannot connect"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return (text.splitlines()[0][:300] if text else type(exc).__name__)


class DockerCpuMetricsSource:
    def __init__(self, hosts: Sequence[str], *, selector: Mapping[str, str] | None = None,
                 names: Sequence[str] = (), tls: TlsFiles | None = None,
                 relative_to: Literal["limit", "host"] = "limit", timeout: float = 10.0,
                 horizon: float = DEFAULT_HORIZON) -> None:
        if not hosts:
            raise ValueError("at least one Docker host is needed")
        if not selector and not names:
            raise ValueError("select the workload's containers by labels (selector) and/or names")
        if relative_to not in ("limit", "host"):
            raise ValueError(f"relative_to must be limit or host, not {relative_to!r}")
        self.hosts = tuple(hosts)
        self.selector = dict(selector or {})
        self.names = tuple(n.lstrip("/") for n in names)
        self.relative_to = relative_to
        self.name = "workload_cpu"
        self._tls = tls
        self._timeout = timeout
        self._clients: dict[str, docker.DockerClient] = {}
        self._last: dict[tuple[str, str], _Reading] = {}
        self._window = SampleWindow(horizon)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="docker-stats")
        self.last_breakdown: tuple[ContainerCpu, ...] = ()

    def _client(self, host: str) -> docker.DockerClient:
        client = self._clients.get(host)
        if client is None:
            tls = self._tls if host.startswith(("tcp://", "https://")) else None
            client = docker_client(host, tls, timeout=self._timeout)
            self._clients[host] = client
        return client

    def _selected(self, client: docker.DockerClient) -> list[Any]:
        found: dict[str, Any] = {}
        if self.selector:
            labels = [f"{k}={v}" for k, v in self.selector.items()]
            for c in client.containers.list(filters={"label": labels, "status": "running"},
                                             ignore_removed=True):
                found[c.id] = c
        for name in self.names:
            for c in client.containers.list(filters={"name": f"^/{name}$", "status": "running"},
                                             ignore_removed=True):
                found[c.id] = c
        # the controller's own replicas copy the workload's labels: wherever they run (an engine shared with
        # on-prem, a node named here by mistake), they are the burst's capacity, never the on-prem load
        return [c for c in found.values() if LABEL_CONTROLLER not in (c.labels or {})]

    def _measure(self, host: str, container: Any) -> ContainerCpu | None:
        """Cores used since the previous reading of this container (None: it stopped meanwhile)."""
        key = (host, container.id)
        try:
            previous = self._last.get(key)
            if previous is None:
                # first sight: the engine takes two samples about a second apart (precpu_stats)
                stats = container.stats(stream=False)
                previous = _reading(stats, "precpu_stats")
            else:
                stats = container.stats(stream=False, one_shot=True)
        except NotFound:
            self._last.pop(key, None)
            return None
        current = _reading(stats)
        if current is None:
            return None
        self._last[key] = current
        used = 0.0
        if previous is not None:
            d_container = current.container_total - previous.container_total
            d_system = current.system_total - previous.system_total
            if d_system > 0 and d_container >= 0:
                used = d_container / d_system * current.online_cpus
        host_cpus = current.online_cpus
        capacity = _limit_cores(container.attrs, host_cpus) if self.relative_to == "limit" else 0.0
        return ContainerCpu(host, container.name, used, capacity)

    def _host(self, host: str, seen: set[tuple[str, str]]) -> tuple[list[ContainerCpu], int]:
        client = self._client(host)
        containers = self._selected(client)
        seen.update((host, c.id) for c in containers)
        results = [r for r in self._pool.map(lambda c: self._measure(host, c), containers) if r is not None]
        cpus = max((self._last[(host, c.id)].online_cpus for c in containers if (host, c.id) in self._last),
                   default=0)
        if cpus == 0 and results:
            cpus = int(client.info().get("NCPU") or 1)
        return results, cpus

    def query(self, window: float) -> Observation:
        with self._lock:  # one measurement at a time: readings are deltas against the previous one
            parts: list[ContainerCpu] = []
            host_cpus = 0
            seen: set[tuple[str, str]] = set()
            for host in self.hosts:
                try:
                    found, cpus = self._host(host, seen)
                except (DockerException, requests.RequestException, OSError) as exc:
                    self._clients.pop(host, None)
                    message = f"docker host {host}: {_describe(exc)}"
                    logger.warning("workload cpu: host failed", extra={"host": host, "error": message})
                    return Observation(value=None, age=0.0, source=self.name, ok=False, error=message,
                                       history=self._window.history())
                parts.extend(found)
                if found:
                    host_cpus += cpus
            self._last = {k: v for k, v in self._last.items() if k in seen}  # containers gone: forget them
            self.last_breakdown = tuple(parts)
            if not parts:
                what = " and ".join(filter(None, [
                    f"labels {self.selector}" if self.selector else "", f"names {list(self.names)}" if self.names else ""]))
                return Observation(value=None, age=0.0, source=self.name, ok=False,
                                   error=f"no running container matches {what} on {', '.join(self.hosts)}",
                                   history=self._window.history())
            used = sum(p.used_cores for p in parts)
            capacity = sum(p.capacity_cores for p in parts) if self.relative_to == "limit" else float(host_cpus)
            sample = 100.0 * used / capacity if capacity > 0 else 0.0
            self._window.add(time.time(), sample)
            value = self._window.mean(time.time(), window)
        return Observation(value=round(value if value is not None else sample, 3), age=0.0, source=self.name,
                           history=self._window.history())

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for client in self._clients.values():
            try:
                client.close()
            except (DockerException, requests.RequestException, OSError) as exc:  # closing is best effort
                logger.debug("docker client close failed", extra={"error": str(exc)})
        self._clients.clear()
