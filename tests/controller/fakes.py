"""Small in-memory fakes of the ports, for unit tests of the loop only (the adapters are proven against the
real components in tests/adapters and by the end-to-end tests here). They count calls so tests can assert
"no duplicate launch", and they can be told to fail."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from controller.errors import NotFoundError, TransientError
from controller.loop.edges import Edges
from controller.ports import (
    LABEL_CONTROLLER,
    LABEL_POLICY,
    TAG_CONTROLLER,
    TAG_POLICY,
    Container,
    CopyResult,
    Instance,
    InstanceState,
    LaunchSpec,
    Node,
    Owner,
    Server,
    WorkloadSpec,
)
from policies.model import Policy
from policies.types import Observation


class Killed(Exception):
    """The controller process dies here: what the journal holds is what a SIGKILL at this point leaves."""


class FakeCompute:
    def __init__(self, clock: Any, boot_delay: float = 5.0) -> None:
        self.clock = clock
        self.boot_delay = boot_delay
        self.instances: dict[str, dict[str, Any]] = {}
        self.by_token: dict[str, list[str]] = {}
        self.launch_calls = 0
        self.created = 0
        self.fail_next: list[Exception] = []
        self.never_boot = False
        self.stop_calls = self.start_calls = 0
        self.crash_after_call = False  # stop/start raise Killed once the call took effect (a crash before the outcome)
        self._ids = itertools.count(1)

    def launch(self, spec: LaunchSpec, count: int, token: str) -> list[Instance]:
        self.launch_calls += 1
        if self.fail_next:
            raise self.fail_next.pop(0)
        if token not in self.by_token:
            ids = []
            for _ in range(count):
                n = next(self._ids)
                iid = f"i-{n:04d}"
                self.instances[iid] = {"type": spec.instance_types[0], "zone": spec.zones[0], "tags": dict(spec.tags),
                                       "created": self.clock(), "ip": f"127.0.1.{n}", "image": spec.image_id}
                ids.append(iid)
                self.created += 1
            self.by_token[token] = ids
        return self.get(self.by_token[token])

    def _inst(self, iid: str) -> Instance:
        d = self.instances[iid]
        if d.get("stopped") is not None:
            return Instance(id=iid, state=InstanceState.STOPPED, instance_type=d["type"], zone=d["zone"],
                            private_ip=d["ip"], tags=d["tags"], created_at=d["created"],
                            docker_endpoint="tcp://127.0.0.1:2376")
        up = not self.never_boot and self.clock() - d.get("started", d["created"]) >= self.boot_delay
        return Instance(id=iid, state=InstanceState.RUNNING if up else InstanceState.PENDING,
                        instance_type=d["type"], zone=d["zone"], private_ip=d["ip"] if up else None, tags=d["tags"],
                        created_at=d["created"], docker_endpoint="tcp://127.0.0.1:2376")

    def list(self, owner: Owner) -> list[Instance]:
        return [self._inst(i) for i, d in self.instances.items() if d["tags"].get(TAG_CONTROLLER) == owner.controller_id
                and (owner.policy is None or d["tags"].get(TAG_POLICY) == owner.policy)]

    def get(self, ids: Sequence[str]) -> list[Instance]:
        return [self._inst(i) for i in ids if i in self.instances]

    def release(self, ids: Sequence[str]) -> None:
        for i in ids:
            self.instances.pop(i, None)
        if self.crash_after_call:
            raise Killed("killed after DeleteInstances")

    def stop(self, ids: Sequence[str], *, charging: bool = False) -> None:
        """As StopInstances: the instance is Stopped at once here (``stop_calls`` counts the calls)."""
        self.stop_calls += 1
        if self.fail_next:
            raise self.fail_next.pop(0)
        for i in ids:
            if i not in self.instances:
                raise NotFoundError(f"no instance {i}", code="InvalidInstanceId.NotFound")
            if self.instances[i].get("stopped") is None:
                self.instances[i]["stopped"] = self.clock()
                self.instances[i]["mode"] = "KeepCharging" if charging else "StopCharging"
        if self.crash_after_call:
            raise Killed("killed after StopInstances")

    def start(self, ids: Sequence[str]) -> None:
        """As StartInstances: it boots again (``boot_delay``), disk and address kept."""
        self.start_calls += 1
        if self.fail_next:
            raise self.fail_next.pop(0)
        for i in ids:
            if i not in self.instances:
                raise NotFoundError(f"no instance {i}", code="InvalidInstanceId.NotFound")
            if self.instances[i].pop("stopped", None) is not None:
                self.instances[i]["started"] = self.clock()
        if self.crash_after_call:
            raise Killed("killed after StartInstances")

    def close(self) -> None: ...


class FakeRegistry:
    def __init__(self) -> None:
        self.copies = 0

    def replicate(self, src: str, dst: str, platforms: Sequence[str] | None = None, progress: Any = None) -> CopyResult:
        self.copies += 1
        return CopyResult(digest="sha256:" + "a" * 64, copied_blobs=1)

    def has(self, ref: str) -> bool:
        return True

    def close(self) -> None: ...


class FakeRuntime:
    def __init__(self) -> None:
        self.containers: dict[str, Container] = {}
        self.starts = 0
        self.stopped: list[str] = []
        self.unreachable: set[str] = set()
        self.health = "starting"  # Docker health of containers started with a HEALTHCHECK

    def set_health(self, status: str) -> None:
        self.health = status
        for cid, c in list(self.containers.items()):
            if c.health is not None:
                self.containers[cid] = replace(c, health=status)

    def start(self, node: Node, workload: WorkloadSpec, name: str, labels: dict[str, str]) -> Container:
        self.starts += 1
        for c in self.containers.values():
            if c.name == name:
                return c
        # the next free host port on the node, as the real runtime picks them (several replicas per node)
        used = {c.port for c in self.containers.values() if c.node_id == node.instance_id}
        port = next(p for p in range(8080, 8200) if p not in used)
        c = Container(id=f"c{len(self.containers) + 1:063d}", name=name, node_id=node.instance_id, state="running",
                      health=self.health if workload.healthcheck else None, labels=dict(labels),
                      address=node.address, port=port)
        self.containers[c.id] = c
        return c

    def list(self, node: Node, owner: Owner) -> list[Container]:
        if node.instance_id in self.unreachable:
            raise TransientError(f"node {node.instance_id} unreachable")
        return [c for c in self.containers.values() if c.node_id == node.instance_id
                and c.labels.get(LABEL_CONTROLLER) == owner.controller_id
                and (owner.policy is None or c.labels.get(LABEL_POLICY) == owner.policy)]

    def stop(self, node: Node, container_id: str, signal: str, timeout: float) -> None:
        if node.instance_id in self.unreachable:
            raise TransientError(f"node {node.instance_id} unreachable")
        self.stopped.append(container_id)

    def remove(self, node: Node, container_id: str) -> None:
        self.containers.pop(container_id, None)

    def close(self) -> None: ...


class FakeLB:
    def __init__(self) -> None:
        self.servers: dict[tuple[str, str], Server] = {}
        self.sessions_of: dict[str, int] = {}
        self.adds = 0
        self.lists = 0

    def add(self, backend: str, server: Server) -> None:
        self.adds += 1
        self.servers.setdefault((backend, server.name), server)

    def drain(self, backend: str, name: str) -> None:
        if (backend, name) not in self.servers:
            raise NotFoundError(name)
        s = self.servers[(backend, name)]
        self.servers[(backend, name)] = Server(s.name, s.address, s.port, state="drain")

    def sessions(self, backend: str, name: str) -> int:
        return self.sessions_of.get(name, 0)

    def remove(self, backend: str, name: str) -> None:
        self.servers.pop((backend, name), None)

    def list(self, backend: str) -> list[Server]:
        self.lists += 1
        return [replace(s, sessions=self.sessions_of.get(s.name, 0)) for (b, _), s in self.servers.items()
                if b == backend]

    def close(self) -> None: ...


class FakeMetrics:
    def __init__(self) -> None:
        self.value: float | None = 10.0

    def query(self, window: float) -> Observation:
        if self.value is None:
            return Observation(value=None, age=0.0, source="fake", ok=False, error="source down")
        return Observation(value=self.value, age=0.0, source="fake")

    def close(self) -> None: ...


class FakeWorkloads:
    def __init__(self) -> None:
        self.healthcheck: dict[str, object] | None = None  # the captured workload's Docker HEALTHCHECK

    def source_image(self, policy: Any) -> str:
        return "127.0.0.1:5001/web@sha256:" + "a" * 64

    def capture(self, policy: Any, image: str) -> WorkloadSpec:
        return WorkloadSpec(image=image, service_port=80, spec_hash="hash1", healthcheck=self.healthcheck)


class FakeHealth:
    def __init__(self) -> None:
        self.healthy = True
        self.probes = 0

    def probe(self, address: str, port: int, path: str, timeout: float) -> bool:
        self.probes += 1
        return self.healthy

    def probe_many(self, targets: Sequence[tuple[str, int, str, float]]) -> list[bool]:
        return [self.probe(*t) for t in targets]


class World:
    """All fakes together, with the Edges the loop takes."""

    def __init__(self, clock: Any) -> None:
        self.compute = FakeCompute(clock)
        self.registry = FakeRegistry()
        self.runtime = FakeRuntime()
        self.lb = FakeLB()
        self.metrics = FakeMetrics()
        self.health = FakeHealth()
        self.workloads = FakeWorkloads()
        self.edges = Edges(compute=self.compute, registry=self.registry, runtime=self.runtime,
                           workloads=self.workloads, health=self.health, load_balancer=lambda p: self.lb,
                           metrics=lambda p: self.metrics)


def policy_dict(name: str = "web", **overrides: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": name,
        "workload": {"selector": {"app": name}, "service_port": 80,
                     "health": {"path": "/", "interval": "1s", "timeout": "0.5s", "passes": 2, "failures": 2}},
        "metric": {"source": "haproxy", "window": "10s", "stale_after": "60s",
                   "haproxy": {"socket": "/run/haproxy.sock", "backend": name}},
        "strategy": {"type": "threshold", "scale_out_above": 75, "scale_in_below": 40,
                     "sustained_out": "0s", "sustained_in": "0s"},
        "replicas": {"min": 0, "max": 4, "max_step_up": 2, "max_step_down": 2},
        "cooldown": {"scale_out": "30s", "scale_in": "60s"},
        "min_lifetime": "0s",
        "cloud": {"region": "cn-hangzhou", "zones": ["cn-hangzhou-h"], "instance_types": ["ecs.c6.large", "ecs.c5.large"],
                  "image_id": "aliyun_3_x64_20G_alibase_20240819.vhd", "vswitches": {"cn-hangzhou-h": "vsw-aaa"},
                  "security_group": "sg-xxx"},
        "registry": {"target": f"127.0.0.1:5002/team/{name}"},
        "traffic": {"haproxy": {"socket": "/run/haproxy.sock", "backend": name}},
        "drain": {"timeout": "20s", "signal": "SIGTERM", "stop_timeout": "5s"},
        "budget": {"max_per_hour": 10.0, "prices": {"ecs.c6.large": 0.62, "ecs.c5.large": 0.55}},
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            d[section] = {**d[section], field: value}
        else:
            d[section] = value
    return d


def make_policy(name: str = "web", **overrides: Any) -> Policy:
    return Policy.model_validate(policy_dict(name, **overrides))
