"""What the control loop needs from the outside world, bundled: the ports (every capability the loop uses is
declared in controller/ports.py), and the loop's own timing options. Built by controller/wiring.py (real
adapters) or by tests (fakes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.ports import (
    ComputePool,
    ImageRegistry,
    Instance,
    LoadBalancer,
    MetricsSource,
    NodeRuntime,
    ReplicaProbe,
    WorkloadSource,
)

__all__ = ["Edges", "LoopOptions"]


@dataclass
class Edges:
    compute: ComputePool
    registry: ImageRegistry
    runtime: NodeRuntime
    workloads: WorkloadSource
    health: ReplicaProbe
    load_balancer: Callable[[Any], LoadBalancer]  # policy -> its LB (cached by the factory)
    metrics: Callable[[Any], MetricsSource]  # policy -> its metrics source
    # where a node's Docker Engine answers, when the compute pool does not say
    node_endpoint: Callable[[Instance], str] = lambda inst: f"tcp://{inst.private_ip}:2376"
    user_data: Callable[[Any, str], str] = lambda policy, replica_id: ""
    close: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class LoopOptions:
    controller_id: str
    sample_interval: float = 15.0
    evaluate_interval: float = 30.0
    step_interval: float = 2.0  # how often each policy's replicas advance (boot checks, probes, drains)
    reconcile_interval: float = 60.0
    replicate_interval: float = 300.0
    gc_interval: float = 300.0
    reload_interval: float = 5.0  # policy files' mtimes are polled this often
    orphan_grace: float = 600.0
    launch_timeout: float = 300.0  # retrying a launch (same ClientToken) for longer than this fails it
    boot_timeout: float = 600.0  # launched -> Running and its Docker endpoint answering
    start_timeout: float = 300.0  # container started -> healthy
    history_retention: float = 7 * 86400.0  # samples, decisions, events, finished intents
    job_timeout: float = 120.0  # a job running longer is reported (threads cannot be killed)
