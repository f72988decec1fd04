"""The load rig of issue 7 part 5: the REAL daemon (controller/daemon.py: scheduler, per-policy ticks,
lifecycle, reconcile, SQLite state store) and the REAL status app (create_app over that daemon, uvicorn in
a thread of the same process, as in `burstctl run`), managing N replicas on instances of the ECS emulator
through the real EcsComputePool and SDK. Only the node side is a light double (tests/controller/fakes.py:
runtime, load balancer, health probe, workload capture, registry, metric), because N real containers are
too heavy for this machine; the bench says so in its output.

It measures the policy's tick time with no status traffic, under status traffic from client processes
(bench/status_load.py's clients), and with none again, so the slowdown is a ratio measured in one run.
Used by tests/reliability/test_load_ratio.py (small N) and bench/reliability_load.py (N = 100).
"""

from __future__ import annotations

import multiprocessing as mp
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from adapters.aliyun.credentials import CloudCredentials, StaticCredentials
from adapters.aliyun.ecs import EcsComputePool, EcsPoolSettings
from adapters.aliyun.ecs_api import EcsApiSettings
from controller.daemon import Daemon
from controller.loop.edges import Edges, LoopOptions
from controller.status.process import NICE, PUBLISH_INTERVAL, StatusProcess
from controller.store.state import StateStore, sqlite_url
from lab.emulator.ecs import EcsEmulator
from lab.emulator.ecs_records import EcsConfig
from tests.controller.fakes import (
    FakeHealth,
    FakeLB,
    FakeMetrics,
    FakeRegistry,
    FakeRuntime,
    FakeWorkloads,
    policy_dict,
)
from tests.support.net import free_port
from tests.support.policy_docs import dump

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import status_load

__all__ = ["LoadRig", "Phase", "RigResult"]

TOKEN = "load-rig-token-0123456789abcdef"
_TICKS: list[tuple[float, float]] = []  # (end, seconds) of every loop tick, appended by the probe below
_probe_lock = threading.Lock()


def _install_tick_probe() -> None:
    """Time the control loop's tick: every run of the daemon's step job (``step``, one round over the fleet;
    ``tick:<policy>`` in the per-policy layout before it), as ``Daemon._guard`` runs it. A probe around the
    unchanged method, installed before the daemon schedules its jobs."""
    if getattr(Daemon._guard, "_timed", False):
        return
    original = Daemon._guard

    def timed(self: Daemon, job_id: str, fn: Any) -> None:
        if job_id != "step" and not job_id.startswith("tick:"):
            original(self, job_id, fn)
            return
        t0 = time.perf_counter()
        try:
            original(self, job_id, fn)
        finally:
            with _probe_lock:
                _TICKS.append((time.monotonic(), time.perf_counter() - t0))

    timed._timed = True  # type: ignore[attr-defined]
    Daemon._guard = timed  # type: ignore[method-assign]


@dataclass
class Phase:
    name: str
    seconds: float
    ticks: list[float] = field(default_factory=list)
    rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    errors: int = 0

    cpu: float = 0.0  # CPU seconds per second of the daemon's process (the status process is not in it)

    @property
    def tick_median_ms(self) -> float:
        return 1000 * statistics.median(self.ticks) if self.ticks else float("nan")

    @property
    def tick_mean_ms(self) -> float:
        return 1000 * statistics.fmean(self.ticks) if self.ticks else float("nan")


@dataclass
class RigResult:
    replicas: int
    instances: int
    phases: list[Phase]
    snapshot_ms: float = float("nan")  # median time the daemon takes to build one status snapshot
    builds: int = 0  # status snapshots built during the measurement
    beside: int = 0  # of those, how many ran (in part) while a step round ran

    def _ticks(self, kind: str) -> list[float]:
        return [t for p in self.phases if p.name.startswith(kind) for t in p.ticks]

    @property
    def noise(self) -> float:
        """The ratio's noise floor in this run: the same ratio between two sets of quiet phases (the odd and
        the even ones, interleaved like quiet and loaded), as |ratio - 1|; 0.05 = 5%."""
        quiet = [p for p in self.phases if p.name.startswith("quiet")]
        odd = [t for p in quiet[0::2] for t in p.ticks]
        even = [t for p in quiet[1::2] for t in p.ticks]
        if not odd or not even:
            return float("nan")
        return abs(statistics.median(even) / statistics.median(odd) - 1)

    @property
    def spread(self) -> float:
        """How far the quiet phases' own medians are apart, (max - min) / min: the drift within the run."""
        quiet = [p.tick_median_ms for p in self.phases if p.name.startswith("quiet")]
        return (max(quiet) - min(quiet)) / min(quiet)

    @property
    def ratio(self) -> float:
        """Median of every tick under load over the median of every quiet tick (phases alternate, so a drift
        of the machine's other load weighs on both alike)."""
        return statistics.median(self._ticks("loaded")) / statistics.median(self._ticks("quiet"))

    @property
    def round_ratios(self) -> list[float]:
        """Each loaded phase's median tick over the median of the two quiet phases around it."""
        out = []
        for k, p in enumerate(self.phases):
            if p.name.startswith("loaded") and 0 < k < len(self.phases) - 1:
                around = self.phases[k - 1].ticks + self.phases[k + 1].ticks
                if p.ticks and around:
                    out.append(statistics.median(p.ticks) / statistics.median(around))
        return out

    @property
    def loaded(self) -> list[Phase]:
        return [p for p in self.phases if p.name.startswith("loaded")]


class LoadRig:
    def __init__(self, replicas: int, *, step: float = 1.0, root: Path | None = None,
                 publish_interval: float = PUBLISH_INTERVAL, status_nice: int = NICE) -> None:
        self.replicas, self.step, self.publish_interval = replicas, step, publish_interval
        self.status_nice = status_nice
        self.root = root or Path(tempfile.mkdtemp(prefix="burst-loadrig-"))
        self.emulator = EcsEmulator(access_keys={"rig": "rig-secret-0123"},
                                    config=EcsConfig(boot_delay=0.5, address_pool="127.0.2.0/24"
                                                     if replicas <= 250 else "127.2.0.0/16"))
        self.daemon: Daemon | None = None
        self.server: StatusProcess | None = None
        self.store: StateStore | None = None
        self.url = ""

    def start(self) -> LoadRig:
        _install_tick_probe()
        self.emulator.start()
        compute = EcsComputePool(EcsPoolSettings(api=EcsApiSettings(
            region="cn-hangzhou", credentials=StaticCredentials(CloudCredentials("rig", "rig-secret-0123", source="rig")),
            endpoint=self.emulator.url, backoff_base=0.05, backoff_cap=0.5, rng=random.Random(1)),
            docker_endpoint_template=self.emulator.docker_endpoint))
        metrics, lb = FakeMetrics(), FakeLB()
        metrics.value = 1000.0  # far above scale_out_above: the policy wants its maximum and keeps it
        edges = Edges(compute=compute, registry=FakeRegistry(), runtime=FakeRuntime(), workloads=FakeWorkloads(),
                      health=_BatchHealth(), load_balancer=lambda p: lb, metrics=lambda p: metrics, close=compute.close)
        policies = self.root / "policies"
        policies.mkdir(parents=True, exist_ok=True)
        n = self.replicas
        (policies / "web.yaml").write_text(dump(policy_dict(
            "web", strategy={"type": "threshold", "scale_out_above": 75, "scale_in_below": 40, "sustained_out": "0s",
                             "sustained_in": "0s", "step_out": n, "step_in": 1},
            replicas={"min": 0, "max": n, "max_step_up": n, "max_step_down": 1},
            cooldown={"scale_out": "1s", "scale_in": "1h"},
            budget={"max_per_hour": 1.0 * n, "prices": {"ecs.c6.large": 0.62, "ecs.c5.large": 0.55}})))
        self.store = StateStore(sqlite_url(self.root / "state.db"))
        options = LoopOptions(controller_id="rig", sample_interval=1.0, evaluate_interval=2.0, step_interval=self.step,
                              reconcile_interval=10.0, replicate_interval=600.0, gc_interval=600.0)
        self.daemon = Daemon(options=options, store=self.store, edges=edges, policies_dir=policies)
        self.daemon.start()
        port = free_port()
        self.server = StatusProcess(self.daemon, TOKEN, "127.0.0.1", port, interval=self.publish_interval,
                                    nice=self.status_nice)
        self.server.start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    def serving(self) -> int:
        assert self.store is not None
        return sum(r.state == "serving" for r in self.store.live_replicas("web"))

    def wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.serving() < self.replicas:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.serving()}/{self.replicas} replicas serving after {timeout:.0f}s")
            time.sleep(0.5)

    def measure(self, seconds: float, clients: int, concurrency: int, mix: str = "mixed",
                client_nice: int = 0, rounds: int = 1, rate: float = 0.0) -> RigResult:
        """quiet, loaded, quiet (``rounds`` loaded phases, each between quiet ones): tick times in each;
        request rate and latency in the loaded ones. ``rate`` 0: the clients send as fast as they are
        answered (the endpoint's capacity); > 0: that many requests per second in all, on a fixed schedule."""
        phases = [Phase("quiet-1", seconds)]
        for k in range(1, rounds + 1):
            phases += [Phase("loaded" if rounds == 1 else f"loaded-{k}", seconds), Phase(f"quiet-{k + 1}", seconds)]
        httpx.get(f"{self.url}/v1/status", timeout=30, trust_env=False)  # warm
        ctx = mp.get_context("spawn")
        paths = [p.replace("/v1/policies/p3", "/v1/policies/web") for p in status_load.MIXES[mix]]
        me = psutil.Process()
        first = time.monotonic()
        for phase in phases:
            t0 = time.monotonic()
            c0, w0 = sum(me.cpu_times()[:2]), time.monotonic()
            if phase.name.startswith("loaded"):
                args = _Args(seconds=seconds, clients=clients, concurrency=concurrency, client_nice=client_nice,
                             rate=rate)
                phase.rate, phase.p50_ms, phase.p99_ms, _, phase.requests, phase.errors, t0 = status_load._phase(
                    ctx, self.url, paths, args)
                t1 = t0 + seconds  # the clients' window (their start-up and exit are not status traffic)
            else:
                time.sleep(seconds)
                t1 = time.monotonic()
            phase.cpu = (sum(me.cpu_times()[:2]) - c0) / (time.monotonic() - w0)
            with _probe_lock:
                phase.ticks = [s for end, s in _TICKS if t0 + 0.5 < end <= t1]  # skip a tick begun before
        last = time.monotonic()

        spans = list(self.server.build_spans) if self.server is not None else []
        with _probe_lock:
            ticks = [(end - s, end) for end, s in _TICKS if first <= end]
        spans = [(a, b) for a, b in spans if first <= a <= last]
        beside = sum(any(a < t1 and t0 < b for t0, t1 in ticks) for a, b in spans)
        return RigResult(self.replicas, len(self.emulator.live_instances()), phases,
                         1000 * statistics.median(b - a for a, b in spans) if spans else float("nan"), builds=len(spans),
                         beside=beside)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.daemon is not None:
            self.daemon.stop(timeout=30)
            self.daemon.edges.close()
        if self.store is not None:
            self.store.close()
        self.emulator.stop()


class _BatchHealth(FakeHealth):
    """The health double with ``probe_many``, the shape of the daemon's real probe (controller/wiring.py):
    a round's checks go out as one batch, not one pool thread each."""

    def probe_many(self, targets: list[tuple[str, int, str, float]]) -> list[bool]:
        return [self.probe(*t) for t in targets]


@dataclass
class _Args:
    seconds: float
    clients: int
    concurrency: int
    client_nice: int = 0
    rate: float = 0.0
