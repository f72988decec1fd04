"""Builds the real objects from the controller config and hands them to the loop: the only controller module
that names concrete adapters. Used by ``burstctl run`` and ``burstctl demo``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adapters.aliyun.acr import AcrTokenCredentials
from adapters.aliyun.credentials import CredentialsProvider, resolve_credentials
from adapters.aliyun.ecs import EcsComputePool, EcsPoolSettings
from adapters.aliyun.ecs_api import EcsApiSettings
from adapters.aliyun.slb import SlbLoadBalancer, SlbSettings
from adapters.docker_engine.bootstrap import BootstrapSettings, NodeBootstrap
from adapters.docker_engine.client import docker_client
from adapters.docker_engine.node_runtime import DockerNodeRuntime
from adapters.docker_engine.workload import DockerWorkloadCapture, selection_from_policy
from adapters.haproxy import HaproxyLoadBalancer, HaproxyMetricsSource
from adapters.health import HttpHealthChecker
from adapters.metrics.docker import DockerCpuMetricsSource
from adapters.metrics.host import HostMetricsSource
from adapters.metrics.prometheus import PrometheusMetricsSource
from adapters.pki import CertificateAuthority, TlsFiles
from adapters.registry.auth import Credentials, CredentialSource, StaticCredentials
from adapters.registry.client import RegistryOptions
from adapters.registry.replication import Replicator
from controller.daemon import Daemon
from controller.errors import ConfigError
from controller.loop.bake import Baker, BakeSettings
from controller.loop.edges import Edges, LoopOptions
from controller.ports import Container, Instance, LoadBalancer, MetricsSource, WorkloadSpec
from controller.secret_files import registry_password
from controller.service import register_secret
from controller.specs import secret_texts
from controller.store.state import StateStore

__all__ = ["build_baker", "build_daemon", "build_edges", "build_store", "loop_options", "node_tls",
           "registry_credentials"]

logger = logging.getLogger(__name__)


def loop_options(cfg: Any) -> LoopOptions:
    i, t = cfg.intervals, cfg.timeouts
    return LoopOptions(controller_id=cfg.controller_id, sample_interval=i.sample, evaluate_interval=i.evaluate,
                       step_interval=i.step, reconcile_interval=i.reconcile, replicate_interval=i.replicate,
                       gc_interval=i.gc, orphan_grace=cfg.orphan_grace, launch_timeout=t.launch,
                       boot_timeout=t.boot, start_timeout=t.start)


def node_tls(cfg: Any) -> TlsFiles:
    """The controller's client certificate for node Docker endpoints (``burstctl pki init`` made it)."""
    pki = Path(cfg.pki_path)
    return TlsFiles(ca=pki / "ca.pem", cert=pki / "controller-cert.pem", key=pki / "controller-key.pem")


class _DockerWorkloads:
    """``WorkloadSource`` over the Docker SDK capture of the on-prem containers."""

    def __init__(self, capture: DockerWorkloadCapture) -> None:
        self._capture = capture

    def source_image(self, policy: Any) -> str:
        src = self._capture.image_source(selection_from_policy(policy))
        if src.repo_digests:
            wanted = src.reference.split("@")[0].rsplit(":", 1)[0]
            for ref in src.repo_digests:
                if ref.split("@")[0] == wanted:
                    return ref
            return src.repo_digests[0]
        return f"docker-daemon:{src.reference}"  # never pushed: the replicator pushes it from the engine

    def capture(self, policy: Any, image: str) -> WorkloadSpec:
        spec = self._capture.capture(selection_from_policy(policy), image=image)
        for text in secret_texts(spec):  # before anything could log the spec: redacted from every log line
            register_secret(text)
        return spec


class _HttpProbe:
    """``ReplicaProbe`` over the replicas engineer's HTTP health checker."""

    def probe(self, address: str, port: int, path: str, timeout: float) -> bool:
        return self.probe_many([(address, port, path, timeout)])[0]

    def probe_many(self, targets: Sequence[tuple[str, int, str, float]]) -> list[bool]:
        """Many probes at once, concurrently (a step round's health checks, controller/loop/rounds.py)."""
        groups: dict[tuple[str, float], list[Container]] = {}
        for n, (address, port, path, timeout) in enumerate(targets):
            groups.setdefault((path, timeout), []).append(
                Container(id=str(n), name=str(n), node_id="", state="running", health=None, labels={},
                          address=address, port=port))
        ok: dict[str, bool] = {}
        for (path, timeout), containers in groups.items():
            results = HttpHealthChecker(path, timeout, concurrency=256).check(containers)
            ok.update({name: r.ok for name, r in results.items()})
        return [ok.get(str(n), False) for n in range(len(targets))]


def _metrics(cfg: Any, tls: TlsFiles | None) -> Any:
    def build(policy: Any) -> MetricsSource:
        m = policy.metric
        if m.source == "host_cpu":
            return HostMetricsSource("cpu")
        if m.source == "workload_cpu":
            w = policy.workload
            return DockerCpuMetricsSource(list(w.hosts), selector=dict(w.selector), names=list(w.names), tls=tls)
        if m.source == "prometheus":
            return PrometheusMetricsSource(m.prometheus.url, m.prometheus.query)
        if m.source == "haproxy":
            return HaproxyMetricsSource(m.haproxy.socket, m.haproxy.backend, m.haproxy.stat)
        raise ConfigError(f"policy {policy.name}: metric source {m.source} is not supported")
    return build


def _load_balancers(cfg: Any, provider: CredentialsProvider) -> Any:
    cache: dict[str, LoadBalancer] = {}

    def build(policy: Any) -> LoadBalancer:
        traffic = policy.traffic
        if traffic.haproxy is not None:
            key = f"haproxy:{traffic.haproxy.socket}"
            if key not in cache:
                cache[key] = HaproxyLoadBalancer(str(traffic.haproxy.socket), own_prefix=f"{cfg.controller_id}-")
        else:  # SLB: one client per region; the backend is the load balancer id
            key = f"slb:{policy.cloud.region}"
            if key not in cache:
                cache[key] = SlbLoadBalancer(SlbSettings(region=policy.cloud.region, credentials=provider,
                                                         endpoint=cfg.cloud.endpoint))
        return cache[key]
    return build


RegistryPairs = dict[str, tuple[str, str]]


def registry_credentials(cfg: Any, provider: CredentialsProvider
                          ) -> tuple[CredentialSource, RegistryPairs | Callable[[], RegistryPairs] | None]:
    """The cloud registry's credentials: for the replicator (a ``CredentialSource``) and for the nodes' pulls
    (host -> (username, password), or a callable giving the current ones: ACR tokens expire)."""
    auth = cfg.cloud_registry.auth
    host = cfg.cloud_registry.url.split("/", 1)[0]
    if auth.type == "basic":
        # the config's reader: refuses a file others can read, honours systemd's LoadCredential, and
        # registers the password for log redaction (RELIABILITY: a 0644 file used to be accepted)
        password = registry_password(cfg) or ""
        return StaticCredentials({host: Credentials(auth.username, password)}), {host: (auth.username, password)}
    if auth.type == "acr":
        # a temporary login from GetAuthorizationToken (docs/replication.md), fetched again before it expires;
        # the ACR API is reached at cloud.endpoint when one is set (the emulator), like ECS and SLB
        acr = AcrTokenCredentials(auth.instance_id, cfg.cloud.region, [host], provider,
                                  endpoint=cfg.cloud.endpoint, fallback=StaticCredentials())

        def current() -> RegistryPairs:
            token = acr.token().credentials  # cached; a node pull always gets one that is still valid
            register_secret(token.password)
            return {host: (token.username, token.password)}
        return acr, current
    return StaticCredentials(), None


def build_edges(cfg: Any, *, credentials: CredentialsProvider | None = None) -> Edges:
    tls = node_tls(cfg)
    c = cfg.cloud.credentials
    provider = credentials or resolve_credentials(c.source, path=getattr(c, "path", None),
                                                  role_name=getattr(c, "role_name", None))
    compute = EcsComputePool(EcsPoolSettings(
        api=EcsApiSettings(region=cfg.cloud.region, credentials=provider, endpoint=cfg.cloud.endpoint),
        docker_endpoint_template=cfg.cloud.node_docker_endpoint,
        describe_after_launch=False))  # the loop's boot check describes booting instances, 100 per call
    reg_creds, reg_pairs = registry_credentials(cfg, provider)
    insecure = {cfg.cloud_registry.url.split("/", 1)[0]} if cfg.cloud_registry.insecure else set()
    if cfg.onprem.registry:
        insecure.add(cfg.onprem.registry)
    onprem_host = cfg.onprem.docker_hosts[0]
    onprem_tls = None
    if cfg.onprem.docker_tls is not None:
        t = cfg.onprem.docker_tls
        onprem_tls = TlsFiles(ca=Path(t.ca), cert=Path(t.cert), key=Path(t.key))
    registry = Replicator(RegistryOptions(credentials=reg_creds, insecure_hosts=frozenset(insecure)),
                          docker_factory=lambda: docker_client(onprem_host, onprem_tls if onprem_host.startswith("tcp")
                                                               else None))
    runtime = DockerNodeRuntime(tls, registry_auth=reg_pairs)
    capture = DockerWorkloadCapture(tls=onprem_tls)
    template = cfg.cloud.node_docker_endpoint

    def node_endpoint(inst: Instance) -> str:
        return str(template).format(private_ip=inst.private_ip, instance_id=inst.id, zone=inst.zone)

    def close() -> None:
        for thing in (compute, registry, runtime, capture):
            try:
                thing.close()
            except Exception as exc:  # noqa: BLE001 - closing is best effort at shutdown
                logger.debug("close %s: %s", type(thing).__name__, exc)

    user_data = _user_data(cfg)
    return Edges(compute=compute, registry=registry, runtime=runtime, workloads=_DockerWorkloads(capture),
                 user_data=user_data,
                 health=_HttpProbe(), load_balancer=_load_balancers(cfg, provider), metrics=_metrics(cfg, onprem_tls),
                 node_endpoint=node_endpoint, close=close)


def _user_data(cfg: Any) -> Any:
    """Cloud-init for real nodes (Docker Engine with a short-lived server certificate from the controller's
    CA), when the config names the networks node addresses come from; the emulator needs none."""
    networks = tuple(cfg.cloud.node_networks)
    if not networks:
        return lambda policy, replica_id: ""
    insecure = (cfg.cloud_registry.url.split("/", 1)[0],) if cfg.cloud_registry.insecure else ()
    bootstrap = NodeBootstrap(BootstrapSettings(ca=CertificateAuthority(cfg.pki_path),
                                                node_networks=networks, insecure_registries=insecure))
    return lambda policy, replica_id: bootstrap.render(f"{policy.name}-{replica_id}")


def build_baker(cfg: Any, *, settings: BakeSettings | None = None, say: Callable[[str], None] | None = None,
                credentials: CredentialsProvider | None = None) -> tuple[Baker, Callable[[], None]]:
    """The node image baker (``burstctl bake``) on the config's edges, and how to close what it uses."""
    edges = build_edges(cfg, credentials=credentials)
    store = build_store(cfg)
    compute, runtime = edges.compute, edges.runtime
    assert isinstance(compute, EcsComputePool) and isinstance(runtime, DockerNodeRuntime)
    baker = Baker(edges, compute, runtime, store, cfg.controller_id, settings,
                  **({"say": say} if say is not None else {}))

    def close() -> None:
        edges.close()
        store.close()
    return baker, close


def build_store(cfg: Any) -> StateStore:
    return StateStore(cfg.state.url)


def build_daemon(cfg: Any, *, edges: Edges | None = None, store: StateStore | None = None,
                 version: str = "0") -> Daemon:
    return Daemon(options=loop_options(cfg), store=store or build_store(cfg), edges=edges or build_edges(cfg),
                  policies_dir=cfg.policies_dir, version=version)
