"""Capability interfaces (ports) the controller drives, and the value types that cross them.

Adapters in ``adapters/`` implement these; only ``controller/wiring.py`` names a concrete adapter.
Every method may raise ``controller.errors.TransientError`` (retry later) or a ``PermanentError``
subclass; no vendor exception crosses a port. Every mutating call is idempotent: repeating it with the
same arguments (and the same token, where there is one) has the effect of calling it once.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from policies.types import Observation

__all__ = [
    "LABEL_CONTROLLER",
    "LABEL_NODE",
    "LABEL_POLICY",
    "LABEL_REPLICA",
    "LABEL_SPEC_HASH",
    "TAG_CONTROLLER",
    "TAG_INTENT",
    "TAG_POLICY",
    "ComputePool",
    "Container",
    "CopiedFiles",
    "CopyResult",
    "ImageRegistry",
    "Instance",
    "InstanceState",
    "LaunchSpec",
    "LoadBalancer",
    "MachineImage",
    "MachineImages",
    "MetricsSource",
    "Node",
    "NodeRuntime",
    "Owner",
    "ProbeTarget",
    "ReplicaProbe",
    "Server",
    "WorkloadSource",
    "WorkloadSpec",
]

# Identity carried by everything the controller creates outside (design rule 2).
TAG_CONTROLLER = "burst-controller:controller-id"
TAG_POLICY = "burst-controller:policy"
TAG_INTENT = "burst-controller:intent"
LABEL_CONTROLLER = "io.burst-controller.controller-id"
LABEL_POLICY = "io.burst-controller.policy"
LABEL_REPLICA = "io.burst-controller.replica"
LABEL_SPEC_HASH = "io.burst-controller.spec-hash"
# which node (instance id) a replica was started for: several emulated nodes share one Docker Engine
LABEL_NODE = "io.burst-controller.node"


# --------------------------------------------------------------------------- compute


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose resources to list: this controller's, optionally one policy's."""

    controller_id: str
    policy: str | None = None


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """Everything a compute pool needs to launch instances for one policy (no policy internals)."""

    region: str
    instance_types: tuple[str, ...]  # in fallback order
    zones: tuple[str, ...]  # in preference order
    image_id: str
    security_group_id: str
    vswitches: dict[str, str] = field(default_factory=dict)  # zone -> vswitch id
    spot_strategy: str = "NoSpot"  # NoSpot | SpotAsPriceGo | SpotWithPriceLimit
    spot_price_limit: float | None = None
    spot_fallback_on_demand: bool = True
    user_data: str = ""  # rendered cloud-init, plain text; the adapter base64-encodes it
    tags: dict[str, str] = field(default_factory=dict)  # ownership tags (TAG_*) plus any extra
    name_prefix: str = "burst"
    internet_max_bandwidth_out: int = 0


class InstanceState(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    state: InstanceState
    instance_type: str
    zone: str
    private_ip: str | None
    tags: dict[str, str]
    created_at: float | None = None  # epoch seconds
    spot: bool = False
    price_per_hour: float | None = None
    # where the node's Docker Engine answers (mutual TLS), e.g. "tcp://127.0.0.1:2376"
    docker_endpoint: str | None = None


class ComputePool(Protocol):
    def launch(self, spec: LaunchSpec, count: int, token: str) -> list[Instance]:
        """Launch ``count`` instances. The same ``token`` always yields the same instances."""

    def list(self, owner: Owner) -> list[Instance]:
        """Every live instance carrying the owner's tags."""

    def get(self, ids: Sequence[str]) -> builtins.list[Instance]:  # `list` here is the method above
        """The named instances that still exist."""

    def release(self, ids: Sequence[str]) -> None:
        """Delete instances; ids already gone are not an error."""

    def stop(self, ids: Sequence[str], *, charging: bool = False) -> None:
        """Stop running instances, their disks kept (``charging`` False: the cloud stops charging for CPU and
        memory, ECS economical mode); stopping or stopped ones are not an error."""

    def start(self, ids: Sequence[str]) -> None:
        """Start stopped instances again (same disk, same address); starting or running ones are not an
        error."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class MachineImage:
    """A custom image of the compute pool (a baked node image)."""

    id: str
    name: str
    status: str  # the cloud's word: Creating, Available, CreateFailed, ...
    created_at: float | None
    tags: dict[str, str]
    in_use: bool = False  # instances run it


class MachineImages(Protocol):
    """Custom machine images: made from an instance's disk, listed by tags, deleted."""

    def create_image(self, instance_id: str, name: str, tags: dict[str, str], token: str) -> str:
        """Start making an image of the instance; its id (Creating at first). The same token, the same image."""

    def images(self, tags: dict[str, str]) -> builtins.list[MachineImage]:
        """Every custom image carrying these tags, whatever its status, newest first."""

    def delete_image(self, image_id: str) -> bool:
        """Delete an image; False when instances still use it (kept). A gone image is not an error."""


# --------------------------------------------------------------------------- images


@dataclass(frozen=True, slots=True)
class CopyResult:
    digest: str  # manifest digest now at the destination
    copied_blobs: int = 0
    skipped_blobs: int = 0
    mounted_blobs: int = 0
    bytes_copied: int = 0
    seconds: float = 0.0


ProgressCallback = Callable[[str, int, int], None]  # (blob digest, bytes done, bytes total)


class ImageRegistry(Protocol):
    def replicate(
        self,
        src: str,
        dst: str,
        platforms: Sequence[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> CopyResult:
        """Copy the image ``src`` (tag or digest reference) to ``dst``, only what is missing."""

    def has(self, ref: str) -> bool:
        """Whether the manifest ``ref`` exists."""

    def close(self) -> None: ...


# --------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class CopiedFiles:
    """The content of one read-only mount of the on-prem containers (``workload.mounts: copy``), carried to
    each replica and mounted read-only at the same path.

    ``archive`` is a tar stream whose entries all sit under one top-level entry named after the last element
    of ``dest`` (what the Docker API's ``GET /containers/{id}/archive?path=dest`` answers). ``secret``: the
    content is never logged, shown or stored (``copy-secret``).
    """

    dest: str
    archive: bytes
    secret: bool = False

    def __repr__(self) -> str:
        # never the content: a secret file's bytes would reach logs and tracebacks
        return f"CopiedFiles(dest={self.dest!r}, bytes={len(self.archive)}, secret={self.secret})"


@dataclass(frozen=True)
class WorkloadSpec:
    """The runnable spec of an on-prem container, captured so a cloud replica is identical.

    ``image`` is a digest reference (``repo@sha256:...``). ``secret_env`` names env keys whose values
    must never be logged or stored in plain text; ``files`` marked secret likewise.
    """

    image: str
    entrypoint: tuple[str, ...] | None = None
    command: tuple[str, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)
    secret_env: frozenset[str] = frozenset()
    service_port: int = 80  # container port that serves traffic
    exposed_ports: tuple[str, ...] = ()  # "80/tcp", ...
    labels: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    working_dir: str | None = None
    healthcheck: dict[str, object] | None = None
    mem_limit: int | None = None  # bytes
    nano_cpus: int | None = None
    restart_policy: dict[str, object] | None = None
    log_config: dict[str, object] | None = None
    stop_signal: str | None = None
    spec_hash: str = ""
    # container path -> tmpfs options ("size=64m"): tmpfs mounts, and non-portable mounts the policy maps
    # to "tmpfs"
    tmpfs: dict[str, str] = field(default_factory=dict)
    # read-only mounts whose content travels with the spec (``workload.mounts: copy`` / ``copy-secret``)
    files: tuple[CopiedFiles, ...] = ()

    def __repr__(self) -> str:
        # The dataclass default would print secret env values into logs and tracebacks.
        env = {k: ("***" if k in self.secret_env else v) for k, v in self.env.items()}
        return (f"WorkloadSpec(image={self.image!r}, entrypoint={self.entrypoint!r}, command={self.command!r}, "
                f"env={env!r}, service_port={self.service_port}, files={[f.dest for f in self.files]!r}, "
                f"spec_hash={self.spec_hash!r})")


@dataclass(frozen=True, slots=True)
class Node:
    """A cloud instance as the container runtime sees it."""

    instance_id: str
    address: str  # where its containers are published (the instance's private IP)
    docker_endpoint: str  # tcp://host:2376, always mutual TLS


@dataclass(frozen=True, slots=True)
class Container:
    id: str
    name: str
    node_id: str
    state: str  # docker's: created, running, exited, ...
    health: str | None  # docker healthcheck status, if any
    labels: dict[str, str]
    address: str  # host address traffic reaches it on
    port: int  # host port traffic reaches it on
    pull_seconds: float | None = None  # the image pull this start did (None: the node had the image)


@runtime_checkable
class NodeRuntime(Protocol):
    def start(self, node: Node, workload: WorkloadSpec, name: str, labels: dict[str, str]) -> Container:
        """Pull by digest and run one replica named ``name``; an existing one of that name is returned."""

    def list(self, node: Node, owner: Owner) -> list[Container]: ...

    def stop(self, node: Node, container_id: str, signal: str, timeout: float) -> None: ...

    def remove(self, node: Node, container_id: str) -> None: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- traffic


@dataclass(frozen=True, slots=True)
class Server:
    name: str  # carries identity: "<controller>-<policy>-<replica>"
    address: str
    port: int
    state: str = "ready"  # ready | drain | maint
    # None: the load balancer's choice (HAProxy: the weight of the backend's own servers, so the cloud
    # replicas share the traffic as one more of them; SLB: 100); a number: this weight (a policy's setting)
    weight: int | None = None
    sessions: int = 0
    # the ECS instance behind the server: SLB addresses backends by instance id, not address
    instance_id: str = ""


class LoadBalancer(Protocol):
    def add(self, backend: str, server: Server) -> None:
        """Add the server and admit it to traffic; adding one that exists is a no-op."""

    def drain(self, backend: str, name: str) -> None:
        """Stop sending new requests to the server; requests in flight continue."""

    def sessions(self, backend: str, name: str) -> int:
        """Active sessions (requests in flight) on the server."""

    def remove(self, backend: str, name: str) -> None:
        """Take the server out; removing one that is gone is a no-op."""

    def list(self, backend: str) -> list[Server]: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- metrics


class MetricsSource(Protocol):
    def query(self, window: float) -> Observation:
        """The metric aggregated over the last ``window`` seconds. Failures come back as an
        Observation with ok=False and the error, never as an exception."""

    def close(self) -> None: ...


# --------------------------------------------------------------------------- the on-prem workload


class WorkloadSource(Protocol):
    """The on-prem side of a policy's workload."""

    def source_image(self, policy: Any) -> str:
        """The image reference the selected on-prem containers run (what the registry copies)."""

    def capture(self, policy: Any, image: str) -> WorkloadSpec:
        """The runnable spec of the selected containers, with ``image`` (the cloud copy, by digest)."""


# --------------------------------------------------------------------------- replica health

ProbeTarget = tuple[str, int, str, float]  # address, port, path, timeout


class ReplicaProbe(Protocol):
    def probe(self, address: str, port: int, path: str, timeout: float) -> bool:
        """One HTTP health check: True on a 2xx/3xx answer within ``timeout``; never raises."""

    def probe_many(self, targets: Sequence[ProbeTarget]) -> list[bool]:
        """Many checks at once, concurrently (a step round's, controller/loop/rounds.py), answers in the order
        asked; never raises."""
