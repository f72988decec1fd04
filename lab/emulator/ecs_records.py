"""The ECS emulator's records: list prices, its configuration (``EcsConfig``), the hooks a node backend
implements (``NodeHooks``: booted machines, lab/emulator/nodes.py), one instance (``InstanceRecord``) and
one RunInstances request (``LaunchRequest``) and one custom image (``ImageRecord``). The world that holds
them is lab/emulator/ecs_state.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["DEFAULT_PRICES", "SPOT_DISCOUNT", "EcsConfig", "ImageRecord", "InstanceRecord", "LaunchRequest", "NodeHooks"]

# Pay-as-you-go list prices (CNY per hour) for the types the emulator offers. Emulator figures in the
# right order of magnitude, for cost arithmetic in tests and demos; override with --price TYPE=PRICE.
DEFAULT_PRICES: dict[str, float] = {
    "ecs.t6-c1m1.large": 0.16,
    "ecs.c6.large": 0.40,
    "ecs.g6.large": 0.50,
    "ecs.c7.large": 0.45,
    "ecs.g7.large": 0.55,
    "ecs.r7.large": 0.72,
    "ecs.c7.xlarge": 0.90,
    "ecs.g7.xlarge": 1.10,
    "ecs.c7.2xlarge": 1.80,
    "ecs.g7.2xlarge": 2.20,
}
SPOT_DISCOUNT = 0.2  # spot instances cost this fraction of the on-demand price


@dataclass
class EcsConfig:
    boot_delay: float = 20.0  # seconds from RunInstances to Running (Pending first quarter, then Starting)
    stop_delay: float = 1.0  # seconds in Stopping after StopInstances
    address_pool: str = "127.0.1.0/24"
    docker_endpoint: str = "tcp://127.0.0.1:2376"
    prices: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    quotas: dict[str, int] = field(default_factory=dict)  # "*" or instance type -> max live instances
    stock: dict[str, int] = field(default_factory=dict)  # "zone/type", "type" or "zone" -> instances left
    state_file: str | None = None
    # booted nodes (lab/emulator/nodes.py): the Docker Engine their machines run on, and the VSwitches
    # (id -> CIDR) whose networks they get addresses from; None: shared-engine nodes on loopback addresses
    node_engine: str | None = None
    vswitches: dict[str, str] = field(default_factory=dict)


class NodeHooks(Protocol):
    """What the instance lifecycle asks of the machines behind it (``nodes.NodeHost``)."""

    def check_launch(self, image_id: str, vswitch_id: str) -> str | None: ...
    def launch(self, instance_id: str, image_id: str, vswitch_id: str, ip: str, hostname: str,
               user_data: bytes) -> None: ...
    def status(self, instance_id: str, default: str) -> str: ...
    def stop_instance(self, instance_id: str, force: bool = False) -> None: ...
    def start_instance(self, instance_id: str) -> None: ...
    def delete_instance(self, instance_id: str) -> None: ...
    def create_image(self, instance_id: str, image_id: str, done: Callable[[bool, str], None]) -> None: ...
    def delete_image(self, image_id: str) -> None: ...


@dataclass
class InstanceRecord:
    id: str
    seq: int
    region: str
    zone: str
    instance_type: str
    image_id: str
    security_group_ids: list[str]
    vswitch_id: str
    name: str
    charge_type: str
    spot_strategy: str
    spot_price_limit: float
    bandwidth_out: int
    private_ip: str
    price_per_hour: float
    launch_id: str
    created_at: float
    tags: dict[str, str]
    stopped_at: float | None = None
    deleted_at: float | None = None
    started_at: float | None = None  # the last StartInstances (None: never stopped)
    # how the last StopInstances stopped it: KeepCharging (billed as running) or StopCharging (economical
    # mode: only its disks are billed, its compute resources go back to the zone's stock)
    stopped_mode: str = ""
    host_name: str = ""  # as RunInstances set it; "" = the default (ecs_shapes.default_host_name)


@dataclass(frozen=True)
class LaunchRequest:
    """A validated RunInstances call (``fingerprint`` covers every parameter that defines it)."""

    region: str
    zone: str
    instance_type: str
    image_id: str
    security_group_id: str
    vswitch_id: str
    name: str
    charge_type: str
    spot_strategy: str
    spot_price_limit: float
    bandwidth_out: int
    amount: int
    min_amount: int
    tags: tuple[tuple[str, str], ...]
    user_data: str
    client_token: str | None
    fingerprint: str
    host_name: str = ""
    unique_suffix: bool = False


@dataclass
class ImageRecord:
    """A custom image (public ones are ``node_images.IMAGES``)."""

    id: str
    region: str
    name: str
    description: str
    instance_id: str  # the instance it was made from
    source_image_id: str  # that instance's image (OS facts are inherited from it)
    created_at: float
    status: str = "Creating"
    error: str = ""
    deleted_at: float | None = None
    tags: dict[str, str] = field(default_factory=dict)
    client_token: str = ""
