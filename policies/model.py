"""The policy file as pydantic models: one ``Policy`` per YAML document (see docs/policies.md).

`policies.loader` builds these from YAML with line numbers; the daemon, the simulator and the decision
engine read them. The ``strategy:`` and ``schedule:`` blocks come from `policies.strategy_config`.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from policies.checks import (
    ContainerName,
    DockerHost,
    EnvName,
    HaproxyName,
    HaproxySocket,
    HttpUrl,
    ImageId,
    InstanceType,
    LoadBalancerId,
    Platform,
    PolicyName,
    RegionId,
    RegistryTarget,
    SecurityGroupId,
    SignalName,
    UrlPath,
    VSwitchId,
    ZoneId,
    cross_section_problems,
    fail,
    label_value,
    no_duplicates,
)
from policies.strategy_config import ScheduleWindow, StrategyConfig
from policies.units import Duration

__all__ = [
    "Bake",
    "Budget",
    "Cloud",
    "Cooldown",
    "Drain",
    "HaproxyMetric",
    "HaproxyTraffic",
    "HealthCheck",
    "Metric",
    "Policy",
    "PrometheusMetric",
    "Registry",
    "Replicas",
    "SlbTraffic",
    "Spot",
    "Traffic",
    "WarmPool",
    "Workload",
]

PositiveDuration = Annotated[Duration, Field(gt=0)]
NonNegativeDuration = Annotated[Duration, Field(ge=0)]
Price = Annotated[float, Field(gt=0, le=100000)]
Port = Annotated[int, Field(ge=1, le=65535)]
LabelValue = Annotated[str, BeforeValidator(label_value)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HealthCheck(_Section):
    """HTTP health check of each cloud replica before it gets traffic and while it serves."""

    path: UrlPath = Field(default="/", description="HTTP path probed on the service port; a 2xx or 3xx answer passes")
    interval: PositiveDuration = Field(default=5.0, description="time between two probes, like 5s")
    timeout: PositiveDuration = Field(default=2.0, description="a probe slower than this fails; must be below interval")
    passes: int = Field(default=3, ge=1, le=100,
                        description="consecutive passes before a replica is admitted to traffic")
    failures: int = Field(default=3, ge=1, le=100,
                          description="consecutive failures before a serving replica is taken out of traffic")

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> HealthCheck:
        if self.timeout >= self.interval:
            fail([(("timeout",), (f"must be below interval ({self.interval:g}s), otherwise probes overlap: "
                                 f"got {self.timeout:g}s"), "value")])
        return self


class Workload(_Section):
    """Which on-prem containers to replicate, and how to check the copies."""

    hosts: tuple[DockerHost, ...] = Field(
        default=("unix:///var/run/docker.sock",), min_length=1,
        description="on-prem Docker Engine endpoints to look for the workload on "
                    "(unix:///var/run/docker.sock, tcp://host:2376, ssh://user@host)")
    selector: dict[str, LabelValue] = Field(
        default_factory=dict, description="container labels that must all match; selector and/or names is required")
    names: tuple[ContainerName, ...] = Field(default=(), description="container names to replicate")
    service_port: Port = Field(description="container port that serves the traffic")
    health: HealthCheck = Field(default_factory=HealthCheck, description="health check of each cloud replica")
    mounts: dict[str, Literal["drop", "tmpfs", "copy", "copy-secret"]] = Field(
        default_factory=dict,
        description="what to do with each non-portable mount (bind mount or volume), by destination path: "
                    "'drop' it, replace it with an empty 'tmpfs', or 'copy' its content (read-only mounts, "
                    "1 MiB in all) to each replica, mounted read-only at the same path; 'copy-secret' copies "
                    "a content that is never logged or stored; an unmapped one makes capture fail")
    secret_env: tuple[EnvName, ...] = Field(
        default=(), description="environment variable names whose values are secrets: never logged or stored in plain text")
    replicas_per_node: int = Field(default=1, ge=1, le=64, description="workload containers started on each cloud instance")
    platforms: tuple[Platform, ...] = Field(
        default=(), description="image platforms to replicate, like linux/amd64; empty means all")

    @model_validator(mode="after")
    def _something_selected(self) -> Workload:
        problems: list[tuple[tuple[str | int, ...], str, str]] = []
        if not self.selector and not self.names:
            problems.append(((), ("give a label selector or container names (or both): "
                                 "otherwise no container can be found to replicate"), "key"))
        problems += no_duplicates(self.names, ("names",))
        problems += no_duplicates(self.hosts, ("hosts",))
        for dest in self.mounts:
            if not dest.startswith("/"):
                problems.append((("mounts", dest), (f"'{dest}' is not a mount destination: "
                                                   "use the absolute path inside the container, like /data"), "key"))
        if problems:
            fail(problems)
        return self


class PrometheusMetric(_Section):
    """A PromQL query whose value is the load metric."""

    url: HttpUrl = Field(description="Prometheus base URL, like http://127.0.0.1:9090")
    query: str = Field(min_length=1, description="PromQL expression returning one number (the load)")


class HaproxyMetric(_Section):
    """An HAProxy backend's current sessions or queue length as the load metric."""

    socket: HaproxySocket = Field(description="HAProxy runtime API: a unix socket path or tcp://host:port")
    backend: HaproxyName = Field(description="backend whose figure is read")
    stat: Literal["sessions", "queue"] = Field(default="sessions", description="current sessions or queued requests")


MetricSource = Literal["host_cpu", "workload_cpu", "prometheus", "haproxy"]


class Metric(_Section):
    """Where the load figure the strategy sees comes from."""

    source: MetricSource = Field(
        description="host_cpu (on-prem hosts' CPU %), workload_cpu (the workload containers' CPU %), "
                    "prometheus (a PromQL query) or haproxy (backend sessions or queue)")
    window: PositiveDuration = Field(default=60.0, description="aggregation window of each reading, like 1m")
    stale_after: PositiveDuration = Field(
        default=180.0, description="an older reading counts as missing: the policy holds and never scales in on it")
    prometheus: PrometheusMetric | None = Field(default=None, description="required when source is prometheus")
    haproxy: HaproxyMetric | None = Field(default=None, description="required when source is haproxy")

    @model_validator(mode="after")
    def _source_block(self) -> Metric:
        problems: list[tuple[tuple[str | int, ...], str, str]] = []
        for block in ("prometheus", "haproxy"):
            given = getattr(self, block) is not None
            if self.source == block and not given:
                problems.append(((), f"source is {block}: add a '{block}:' block saying what to read", "key"))
            elif given and self.source != block:
                problems.append(((block,), (f"only used when source is {block}, but source is {self.source}: "
                                           f"remove this block or set source: {block}"), "key"))
        if problems:
            fail(problems)
        return self


class Replicas(_Section):
    """Bounds on the number of cloud replicas."""

    min: int = Field(default=0, ge=0, le=1000, description="cloud replicas kept at all times (usually 0)")
    max: int = Field(ge=0, le=1000, description="never more cloud replicas than this")
    max_step_up: int = Field(default=4, ge=1, le=1000, description="most replicas added by one decision")
    max_step_down: int = Field(default=2, ge=1, le=1000, description="most replicas removed by one decision")

    @model_validator(mode="after")
    def _min_below_max(self) -> Replicas:
        if self.min > self.max:
            fail([(("min",), f"min ({self.min}) is above max ({self.max})", "value")])
        return self


class Cooldown(_Section):
    """Quiet periods after a scaling action, during which the same direction is not taken again."""

    scale_out: NonNegativeDuration = Field(default=120.0, description="wait after a scale-out before the next one")
    scale_in: NonNegativeDuration = Field(default=600.0, description="wait after any scaling action before a scale-in")


class Spot(_Section):
    """Spot (preemptible) instances and what to do when none are available."""

    strategy: Literal["NoSpot", "SpotAsPriceGo", "SpotWithPriceLimit"] = Field(
        default="NoSpot", description="NoSpot (on-demand), SpotAsPriceGo (spot at market price) or "
                                      "SpotWithPriceLimit (spot up to price_limit)")
    price_limit: Price | None = Field(default=None, description="highest spot price per hour; only with SpotWithPriceLimit")
    fallback_on_demand: bool = Field(default=True, description="launch on-demand when no spot capacity is available")

    @model_validator(mode="after")
    def _price_limit(self) -> Spot:
        if self.strategy == "SpotWithPriceLimit" and self.price_limit is None:
            fail([((), "strategy SpotWithPriceLimit needs a price_limit", "key")])
        if self.strategy != "SpotWithPriceLimit" and self.price_limit is not None:
            fail([(("price_limit",), f"only used with strategy SpotWithPriceLimit, but strategy is {self.strategy}",
                   "key")])
        return self


class Cloud(_Section):
    """Where and on what the cloud replicas run (Alibaba Cloud ECS)."""

    region: RegionId = Field(description="region id, like cn-hangzhou")
    zones: tuple[ZoneId, ...] = Field(min_length=1, description="zones in order of preference, like cn-hangzhou-h")
    instance_types: tuple[InstanceType, ...] = Field(
        min_length=1, description="instance types in fallback order (the next is tried when one is sold out)")
    image_id: ImageId = Field(description="ECS image the instances boot (with Docker Engine)")
    vswitches: dict[str, VSwitchId] = Field(description="vSwitch id for each zone; every zone needs one")
    security_group: SecurityGroupId = Field(description="security group of the instances, like sg-xxx")
    spot: Spot = Field(default_factory=Spot, description="spot instances and on-demand fallback")

    @model_validator(mode="after")
    def _placement(self) -> Cloud:
        problems = no_duplicates(self.zones, ("zones",)) + no_duplicates(self.instance_types, ("instance_types",))
        for i, zone in enumerate(self.zones):
            if not zone.startswith(self.region + "-"):
                problems.append((("zones", i), f"zone {zone} is not in region {self.region}", "value"))
        missing = [z for z in self.zones if z not in self.vswitches]
        for zone in missing:
            problems.append((("vswitches",), f"no vSwitch for zone {zone} (every zone in cloud.zones needs one)", "key"))
        for zone in self.vswitches:
            if zone not in self.zones:
                close = difflib.get_close_matches(zone, missing, n=1)
                hint = f"; did you mean {close[0]}?" if close else " (add it to cloud.zones or remove this line)"
                problems.append((("vswitches", zone), f"zone {zone} is not listed in cloud.zones{hint}", "key"))
        if problems:
            fail(problems)
        return self


class Registry(_Section):
    """Where the workload's image is copied to, so cloud nodes pull it from nearby."""

    target: RegistryTarget = Field(
        description="cloud repository (host/path, no tag: the source image's digest is kept), "
                    "like registry.cn-hangzhou.aliyuncs.com/team/web")


class HaproxyTraffic(_Section):
    """Cloud replicas are added as servers of an HAProxy backend."""

    socket: HaproxySocket = Field(description="HAProxy runtime API: a unix socket path or tcp://host:port")
    backend: HaproxyName = Field(description="backend the replicas join")
    weight: int | None = Field(
        default=None, ge=1, le=256,
        description="HAProxy weight of each cloud replica; null: the weight of the backend's on-prem servers "
                    "(read from HAProxy when a replica joins), so a replica takes the share of one of them")


class SlbTraffic(_Section):
    """Cloud replicas are added to an Alibaba Cloud SLB listener's backend servers."""

    load_balancer_id: LoadBalancerId = Field(description="SLB instance id, like lb-xxx")
    port: Port = Field(description="backend port on the replicas")


class Traffic(_Section):
    """How requests reach the cloud replicas: exactly one of haproxy or slb."""

    haproxy: HaproxyTraffic | None = Field(default=None, description="an HAProxy backend")
    slb: SlbTraffic | None = Field(default=None, description="an Alibaba Cloud Server Load Balancer")

    @model_validator(mode="after")
    def _exactly_one(self) -> Traffic:
        if self.haproxy is None and self.slb is None:
            fail([((), "give exactly one of haproxy: or slb:", "key")])
        if self.haproxy is not None and self.slb is not None:
            fail([(("slb",), "give exactly one of haproxy: or slb:, not both", "key")])
        return self


class Drain(_Section):
    """How a replica leaves: no new requests, wait for open ones, then stop the container."""

    timeout: PositiveDuration = Field(default=300.0, description="longest wait for open sessions to end")
    signal: SignalName = Field(default="SIGTERM", description="signal that asks the container to stop, like SIGTERM")
    stop_timeout: PositiveDuration = Field(default=30.0, description="wait after the signal before the container is killed")


class Budget(_Section):
    """A spending cap: no launch that would take the hourly spend of this policy above max_per_hour."""

    max_per_hour: Price = Field(description="highest spend per hour for all of this policy's instances")
    prices: dict[str, Price] = Field(description="price per instance-hour of each instance type; every type needs one")


class WarmPool(_Section):
    """Stopped nodes kept for the next burst (ECS economical mode): a scale-in stops up to ``size`` drained
    nodes instead of releasing them, with the workload's image still on their disk; a scale-out starts them
    before it launches new ones (docs/daemon.md "The warm pool")."""

    size: int = Field(default=0, ge=0, le=1000,
                      description="drained nodes kept stopped for the next burst; 0: none (every node is released)")
    max_age: PositiveDuration = Field(
        default=86400.0, description="a stopped node older than this (from its launch) is released, like 1d")
    disk_price: Price | None = Field(
        default=None, description="price per hour of one stopped node (its disks: ECS stops charging for "
                                  "CPU and memory); null: the controller's default, 0.03/h (a 40 GiB ESSD PL0 "
                                  "system disk, docs/daemon.md)")


class Bake(_Section):
    """Baked node images made by the daemon itself (``burstctl bake`` does the same by hand): in the background,
    once per workload spec hash, journaled; docs/operations.md "Automatic bakes"."""

    auto: bool = Field(default=False, description="bake a node image whenever the workload's spec changes "
                                                   "(a new image digest, env...), at most once per spec; a "
                                                   "failed bake is an event, never a reason to hold a burst")
    keep: int = Field(default=2, ge=1, le=20, description="newest baked images of the policy kept")


class Policy(_Section):
    """One burst policy: which workload, when to burst, where to, and how to route and drain."""

    name: PolicyName = Field(description="unique policy name: lowercase letters, digits and dashes, at most 40")
    description: str = Field(default="", description="free text for people")
    mode: Literal["active", "shadow"] = Field(
        default="active",
        description="active: the controller acts on its decisions; shadow: it samples, decides and records what "
                    "it would do (decisions, status, 'shadow' events) but never copies images, launches, routes "
                    "or drains; replicas left from an active spell are drained. A reload switches modes")
    workload: Workload = Field(description="which on-prem containers to replicate")
    metric: Metric = Field(description="the load figure the strategy decides on")
    strategy: StrategyConfig = Field(description="when to scale: threshold, target, predictive or forecast")
    schedule: tuple[ScheduleWindow, ...] = Field(default=(), description="floors by time of week, on top of the strategy")
    replicas: Replicas = Field(description="bounds on the number of cloud replicas")
    cooldown: Cooldown = Field(default_factory=Cooldown, description="quiet periods after scaling")
    min_lifetime: NonNegativeDuration = Field(default=600.0, description="a replica is not scaled in before this age")
    cloud: Cloud = Field(description="ECS placement of the replicas")
    registry: Registry = Field(description="cloud registry the image is copied to")
    traffic: Traffic = Field(description="how requests reach the replicas")
    drain: Drain = Field(default_factory=Drain, description="how replicas leave without dropping requests")
    budget: Budget = Field(description="spending cap and instance prices")
    warm_pool: WarmPool = Field(default_factory=WarmPool, description="stopped nodes kept for the next burst")
    bake: Bake = Field(default_factory=Bake, description="baked node images made automatically")

    @model_validator(mode="after")
    def _across_sections(self) -> Policy:
        problems = cross_section_problems(self)
        if problems:
            fail(problems)
        return self

