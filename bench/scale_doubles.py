"""The in-memory doubles of bench/scale.py (node runtime, load balancer, registry, workload capture, health
probe, metrics source: they answer at once), the policy it writes, and the ECS emulator it runs in its own
process; ``make_edges`` wires them with the real EcsComputePool as controller/wiring.py would."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.aliyun.credentials import CloudCredentials, StaticCredentials
from adapters.aliyun.ecs import EcsComputePool, EcsPoolSettings
from adapters.aliyun.ecs_api import EcsApiSettings
from controller.loop.edges import Edges
from controller.ports import (
    Container,
    CopyResult,
    Node,
    Owner,
    Server,
    WorkloadSpec,
)
from controller.store.state import new_id
from policies.types import Observation

CONTROLLER = "bench"
KEY = ("bench", "bench-secret")
HOLD, HIGH, LOW = 50.0, 95.0, 5.0  # metric values: hold band, above scale_out_above, below scale_in_below


# ----------------------------------------------------------------------------- the doubles


class Registry:
    def replicate(self, src: str, dst: str, platforms: Sequence[str] | None = None, progress: Any = None) -> CopyResult:
        return CopyResult(digest="sha256:" + "b" * 64)

    def has(self, ref: str) -> bool:
        return True

    def close(self) -> None: ...


class Runtime:
    """Containers by node, in memory."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_node: dict[str, dict[str, Container]] = {}
        self.calls = 0

    def start(self, node: Node, workload: WorkloadSpec, name: str, labels: dict[str, str]) -> Container:
        c = Container(id=new_id("c"), name=name, node_id=node.instance_id, state="running", health=None,
                      labels=dict(labels), address=node.address, port=8080)
        with self.lock:
            self.calls += 1
            self.by_node.setdefault(node.instance_id, {})[c.id] = c
        return c

    def list(self, node: Node, owner: Owner) -> list[Container]:
        with self.lock:
            self.calls += 1
            return list(self.by_node.get(node.instance_id, {}).values())

    def stop(self, node: Node, container_id: str, signal: str, timeout: float) -> None:
        with self.lock:
            self.calls += 1

    def remove(self, node: Node, container_id: str) -> None:
        with self.lock:
            self.calls += 1
            self.by_node.get(node.instance_id, {}).pop(container_id, None)

    def close(self) -> None: ...


class Balancer:
    """Servers by backend, in memory (one per policy)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.servers: dict[str, dict[str, Server]] = {}
        self.calls = 0

    def add(self, backend: str, server: Server) -> None:
        with self.lock:
            self.calls += 1
            self.servers.setdefault(backend, {})[server.name] = server

    def drain(self, backend: str, name: str) -> None:
        with self.lock:
            self.calls += 1

    def sessions(self, backend: str, name: str) -> int:
        return 0

    def remove(self, backend: str, name: str) -> None:
        with self.lock:
            self.calls += 1
            self.servers.get(backend, {}).pop(name, None)

    def list(self, backend: str) -> list[Server]:
        with self.lock:
            self.calls += 1
            return list(self.servers.get(backend, {}).values())

    def close(self) -> None: ...


class Metrics:
    def __init__(self, values: dict[str, float], name: str) -> None:
        self.values, self.name = values, name

    def query(self, window: float) -> Observation:
        return Observation(value=self.values.get(self.name, HOLD), age=0.0, source="bench")

    def close(self) -> None: ...


class Workloads:
    def source_image(self, policy: Any) -> str:
        return "onprem.example/app:1"

    def capture(self, policy: Any, image: str) -> WorkloadSpec:
        return WorkloadSpec(image=image, service_port=80, spec_hash="bench-spec")


class Probe:
    def probe(self, address: str, port: int, path: str, timeout: float) -> bool:
        return True

    def probe_many(self, targets: Sequence[tuple[str, int, str, float]]) -> list[bool]:
        return [True for _ in targets]


# ----------------------------------------------------------------------------- setup


POLICY = """\
name: {name}
workload:
  hosts: ["unix:///var/run/docker.sock"]
  selector: {{app: {name}}}
  service_port: 80
  health: {{path: /, interval: 1s, timeout: 0.5s, passes: 1, failures: 3}}
metric:
  source: haproxy
  window: 2s
  stale_after: 60s
  haproxy: {{socket: /run/bench/haproxy.sock, backend: {name}, stat: sessions}}
strategy:
  type: threshold
  scale_out_above: 80
  scale_in_below: 20
  sustained_out: 0s
  sustained_in: 0s
  step_out: 1
  step_in: 1
replicas: {{min: 0, max: {max}, max_step_up: 1, max_step_down: 1}}
cooldown: {{scale_out: 0s, scale_in: 0s}}
min_lifetime: 0s
cloud:
  region: cn-bench
  zones: [cn-bench-a]
  instance_types: [ecs.c6.large]
  image_id: img-bench
  vswitches: {{cn-bench-a: vsw-bench}}
  security_group: sg-bench
registry:
  target: registry.example/bench/{name}
traffic:
  haproxy: {{socket: /run/bench/haproxy.sock, backend: {name}}}
drain: {{timeout: 30s, signal: SIGTERM, stop_timeout: 2s}}
budget: {{max_per_hour: 1000.0, prices: {{ecs.c6.large: 0.62}}}}
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Emulator:
    """`burstctl emulate ecs` in its own process (its CPU and memory are not the controller's)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli.main", "emulate", "ecs", "--listen", f"127.0.0.1:{self.port}",
             "--access-key", f"{KEY[0]}:{KEY[1]}", "--boot-delay", "0s", "--address-pool", "127.16.0.0/16"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.calls()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the ECS emulator did not start") from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _admin(self, method: str, path: str) -> Any:
        req = urllib.request.Request(self.url + path, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def calls(self) -> dict[str, int]:
        return dict(self._admin("GET", "/_admin/calls")["calls"])

    def reset(self) -> None:
        self._admin("DELETE", "/_admin/calls")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def make_edges(emulator: Emulator, values: dict[str, float]) -> tuple[Edges, Runtime, Balancer]:
    api = EcsApiSettings(region="cn-bench", credentials=StaticCredentials(CloudCredentials(*KEY)),
                         endpoint=emulator.url)
    # as controller/wiring.py builds it for the daemon (the loop's boot check describes launched instances)
    compute = EcsComputePool(EcsPoolSettings(api=api, docker_endpoint_template="tcp://{private_ip}:2376",
                                             describe_after_launch=False))
    runtime, balancer = Runtime(), Balancer()
    edges = Edges(compute=compute, registry=Registry(), runtime=runtime, workloads=Workloads(), health=Probe(),
                  load_balancer=lambda policy: balancer, metrics=lambda policy: Metrics(values, policy.name),
                  close=compute.close)
    return edges, runtime, balancer
