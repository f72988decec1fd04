"""A complete local burst environment on one machine, for `burstctl demo` and the end-to-end tests: the ECS
emulator, an on-prem and a cloud registry (Debian's docker-registry), HAProxy with the on-prem server in its
backend, and the on-prem workload container (busybox httpd with a slow CGI page, so sessions rise under
load). It writes the controller config and a policy tuned for a quick cycle, and removes everything it
started in ``stop``.

Its instances are booted nodes (``nodes="booted"``, the default): real Debian machines on a VSwitch network
of their own (a free 10.214.X.0/24), booting the controller's UserData, installing Docker unless the image
has it, serving their Engine API with mutual TLS on their own address and pulling the replica's image from
the cloud registry, which listens on the VSwitch's gateway. ``nodes="shared-engine"`` is only for benches of
hundreds of instances: every instance gets a loopback address and its Docker endpoint is the lab engine's
own TLS endpoint. Everything runs on the project's private Docker Engine (``BURST_DOCKER_HOST``, started by
scripts/services.sh); traffic goes to loopback and to the lab's own nodes only.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from adapters.aliyun.credentials import CloudCredentials, StaticCredentials
from adapters.docker_engine.client import docker_client
from adapters.pki import TlsFiles
from controller.errors import NotFoundError, TransientError
from controller.ports import LABEL_CONTROLLER
from lab.emulator.ecs import EcsEmulator
from lab.emulator.ecs_records import EcsConfig
from lab.localimage import ensure_busybox_image
from lab.localregistry import LocalRegistry
from lab.parts import (
    BAKED_IMAGE,
    DOCKER_HOST,
    EMULATOR_KEY,
    HAPROXY_CFG,
    LAB_HEALTHCHECK,
    LAB_LABEL,
    VSWITCH,
    WORKLOAD_CMD,
    free_node_network,
    free_port,
    wait_port,
)

__all__ = ["Lab", "LabSettings"]

logger = logging.getLogger(__name__)

@dataclass
class LabSettings:
    boot_delay: float = 2.0  # the VM's own boot before its machine starts (booted), or the whole boot (shared)
    pki_dir: Path = Path(os.environ.get("BURST_PKI_DIR", "/var/lib/burst-controller-dev/pki"))
    docker_tls_endpoint: str = os.environ.get("BURST_DOCKER_TLS_ENDPOINT", "tcp://127.0.0.1:2376")
    nodes: str = "booted"  # or "shared-engine" (benches of hundreds of instances only)
    node_image: str = BAKED_IMAGE
    # the on-prem workload's image (busybox httpd inside): bench/time_to_serve.py runs a ~200 MB one
    workload_image: str = "local/busybox:1"
    max_replicas: int = 2
    scale_out_above: float = 6.0  # HAProxy backend sessions
    scale_in_below: float = 2.0
    orphan_grace: str = "20s"
    intervals: dict[str, str] = field(default_factory=lambda: {
        "sample": "0.5s", "evaluate": "1s", "step": "0.5s", "reconcile": "3s", "replicate": "60s", "gc": "60s"})


class Lab:
    def __init__(self, root: Path | None = None, settings: LabSettings | None = None,
                 controller_id: str | None = None) -> None:
        self.settings = settings or LabSettings()
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="burst-lab-"))
        self.id = uuid.uuid4().hex[:6]
        self.controller_id = controller_id or f"lab-{self.id}"
        self.policy_name = "web"
        self.docker: docker.DockerClient | None = None
        self.emulator: EcsEmulator | None = None
        self.registries: list[LocalRegistry] = []
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.frontend_port = 0
        self.status_port = 0
        self.token = uuid.uuid4().hex
        self.onprem_container: Any = None
        # a loopback /24 of its own for shared-engine nodes: other labs or tests on this machine use
        # 127.0.1.x, and two nodes publishing on the same address and port would answer for each other
        self.address_pool = f"127.{random.randint(100, 254)}.{random.randint(0, 255)}.0/24"
        self.node_network = ""  # the VSwitch CIDR of booted nodes
        self._node_clients: dict[str, docker.DockerClient] = {}
        self._ports: list[socket.socket] = []  # reserved by free_port until stop

    @property
    def booted(self) -> bool:
        return self.settings.nodes == "booted"

    # ------------------------------------------------------------------ paths and coordinates

    @property
    def haproxy_socket(self) -> Path:
        return self.root / "haproxy.sock"

    @property
    def config_path(self) -> Path:
        return self.root / "controller.yaml"

    @property
    def policies_dir(self) -> Path:
        return self.root / "policies"

    @property
    def policy_path(self) -> Path:
        return self.policies_dir / "web.yaml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.frontend_port}/cgi-bin/work"

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"

    def credentials(self) -> StaticCredentials:
        return StaticCredentials(CloudCredentials(*EMULATOR_KEY, source="emulator"))

    def env(self) -> dict[str, str]:
        """Environment for a `burstctl run` subprocess against this lab."""
        return {**os.environ, "ALIBABA_CLOUD_ACCESS_KEY_ID": EMULATOR_KEY[0],
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": EMULATOR_KEY[1]}

    # ------------------------------------------------------------------ start

    def start(self, progress: Any = None) -> Lab:
        say = progress or (lambda msg: logger.info("%s", msg))
        try:
            self.docker = docker_client(DOCKER_HOST, None, timeout=120)
            ensure_busybox_image(self.docker, "local/busybox:1")
            config = EcsConfig(boot_delay=self.settings.boot_delay, docker_endpoint=self.settings.docker_tls_endpoint,
                               address_pool=self.address_pool)
            cloud_host = "127.0.0.1"
            if self.booted:
                self.node_network = free_node_network(self.docker)
                config.node_engine, config.vswitches = DOCKER_HOST, {VSWITCH: self.node_network}
                cloud_host = str(ipaddress.ip_network(self.node_network).network_address + 1)  # the gateway
                say(f"starting the ECS emulator (booted nodes on {self.node_network}, image {self.settings.node_image})")
            else:
                say("starting the ECS emulator (shared-engine nodes)")
            self.emulator = EcsEmulator(config=config)
            self.emulator.start()
            say("starting the on-prem and cloud registries")
            self.registries.append(LocalRegistry(self.root / "registry-onprem").start())
            # the cloud registry where nodes reach it: on their VSwitch's gateway
            self.registries.append(LocalRegistry(self.root / "registry-cloud", host=cloud_host).start())
            say("pushing the workload image to the on-prem registry")
            image = self._push_workload_image()
            say("starting the on-prem workload container")
            onprem_port = self._start_onprem(image)
            say("starting HAProxy")
            self._start_haproxy(onprem_port)
            self._write_files()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def onprem_registry(self) -> str:
        return self.registries[0].address

    @property
    def cloud_registry(self) -> str:
        return self.registries[1].address

    def _push_workload_image(self) -> str:
        assert self.docker is not None
        repo = f"{self.onprem_registry}/lab/web"
        self.docker.images.get(self.settings.workload_image).tag(repo, "1")
        for line in self.docker.api.push(repo, tag="1", stream=True, decode=True):
            if isinstance(line, dict) and line.get("error"):
                raise TransientError(f"push to the on-prem registry failed: {line['error']}")
        return f"{repo}:1"

    def _start_onprem(self, image: str) -> int:
        assert self.docker is not None
        port = free_port(self._ports)
        self.onprem_container = self.docker.containers.run(
            image, ["sh", "-c", WORKLOAD_CMD], name=f"burst-lab-onprem-{self.id}", detach=True,
            labels={LAB_LABEL: self.id, "app": f"web-{self.id}"}, ports={"80/tcp": ("127.0.0.1", port)},
            hostname="onprem", healthcheck=LAB_HEALTHCHECK)
        wait_port(port)
        return port

    def _start_haproxy(self, onprem_port: int) -> None:
        exe = shutil.which("haproxy")
        if not exe:
            raise NotFoundError("haproxy is not installed: run scripts/services.sh install")
        self.frontend_port = free_port(self._ports)
        cfg = self.root / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(sock=self.haproxy_socket, root=self.root, port=self.frontend_port,
                                       onprem_port=onprem_port))
        with (self.root / "haproxy.log").open("wb") as log:  # the child keeps its own copy of the descriptor
            self.haproxy = subprocess.Popen([exe, "-W", "-db", "-f", str(cfg)], stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.frontend_port)
        deadline = time.monotonic() + 10
        while not self.haproxy_socket.exists():
            if time.monotonic() > deadline:
                raise TransientError("HAProxy did not open its stats socket")
            time.sleep(0.02)

    def policy_yaml(self, **changes: Any) -> str:
        s = self.settings
        sock = self.haproxy_socket
        text = f"""\
name: {self.policy_name}
description: "lab workload: busybox httpd behind HAProxy"
workload:
  hosts: ["{DOCKER_HOST}"]
  selector: {{app: web-{self.id}}}
  service_port: 80
  health: {{path: /, interval: 0.5s, timeout: 0.4s, passes: 2, failures: 3}}
metric:
  source: haproxy
  window: 2s
  stale_after: 15s
  haproxy: {{socket: {sock}, backend: web, stat: sessions}}
strategy:
  type: threshold
  scale_out_above: {s.scale_out_above:g}
  scale_in_below: {s.scale_in_below:g}
  sustained_out: 1s
  sustained_in: 3s
  step_out: {s.max_replicas}
  step_in: {s.max_replicas}
replicas: {{min: 0, max: {s.max_replicas}, max_step_up: {s.max_replicas}, max_step_down: {s.max_replicas}}}
cooldown: {{scale_out: 5s, scale_in: 4s}}
min_lifetime: 0s
cloud:
  region: cn-hangzhou
  zones: [cn-hangzhou-h]
  instance_types: [ecs.c6.large]
  image_id: {self.settings.node_image}
  vswitches: {{cn-hangzhou-h: {VSWITCH}}}
  security_group: sg-lab
registry:
  target: {self.cloud_registry}/lab/web
traffic:
  haproxy: {{socket: {sock}, backend: web}}
drain: {{timeout: 15s, signal: SIGTERM, stop_timeout: 2s}}
budget: {{max_per_hour: 5.0, prices: {{ecs.c6.large: 0.62}}}}
"""
        for old, new in changes.items():
            text = text.replace(old, new)
        return text

    def _write_files(self) -> None:
        assert self.emulator is not None
        self.status_port = free_port(self._ports)
        self.policies_dir.mkdir(parents=True, exist_ok=True)
        self.policy_path.write_text(self.policy_yaml())
        token_file = self.root / "status.token"
        token_file.write_text(self.token + "\n")
        token_file.chmod(0o600)
        intervals = "\n".join(f"  {k}: {v}" for k, v in self.settings.intervals.items())
        if self.booted:  # the cloud's own way: each node's engine on its private address, a cert for the VSwitch
            nodes = f'  node_docker_endpoint: "tcp://{{private_ip}}:2376"\n  node_networks: ["{self.node_network}"]'
        else:
            nodes = f'  node_docker_endpoint: "{self.settings.docker_tls_endpoint}"'
        self.config_path.write_text(f"""\
controller_id: {self.controller_id}
state:
  url: sqlite:///{self.root}/state.db
state_dir: {self.settings.pki_dir.parent}
status:
  listen: 127.0.0.1:{self.status_port}
  token_file: {token_file}
policies_dir: {self.policies_dir}
onprem:
  docker_hosts: ["{DOCKER_HOST}"]
  registry: {self.onprem_registry}
cloud:
  region: cn-hangzhou
  endpoint: {self.emulator.url}
  credentials: {{source: env}}
{nodes}
cloud_registry:
  url: {self.cloud_registry}
  insecure: true
  auth: {{type: none}}
intervals:
{intervals}
timeouts: {{launch: 30s, boot: {"600s" if self.booted else "30s"}, start: {"180s" if self.booted else "30s"}}}
orphan_grace: {self.settings.orphan_grace}
log_format: text
log_level: INFO
""")

    # ------------------------------------------------------------------ observation helpers

    def live_instances(self) -> list[dict[str, Any]]:
        return [] if self.emulator is None else self.emulator.live_instances()

    def machine_up(self, instance_id: str) -> float | None:
        """When the emulator saw a booted node's systemd up (wall clock), None for shared-engine nodes."""
        nodes = self.emulator.nodes if self.emulator is not None else None
        return None if nodes is None else nodes.snapshot().get(instance_id, {}).get("up_at")

    def node_tls(self) -> TlsFiles:
        pki = self.settings.pki_dir
        return TlsFiles(ca=pki / "ca.pem", cert=pki / "controller-cert.pem", key=pki / "controller-key.pem")

    def node_client(self, instance: dict[str, Any]) -> docker.DockerClient:
        """A client for one instance's Docker Engine, over mutual TLS as the controller reaches it (kept
        until ``stop``, so the containers it lists can be reloaded)."""
        endpoint = instance["docker_endpoint"]
        if endpoint not in self._node_clients:
            self._node_clients[endpoint] = docker_client(endpoint, self.node_tls(), timeout=30)
        return self._node_clients[endpoint]

    def replica_rows(self, *, running_only: bool = False) -> list[dict[str, Any]]:
        """The low-level listing of this controller's replica containers wherever they run (no per-container
        inspect, which races the controller removing one): dicts with ``Id``, ``Names``, ``Labels``, ..."""
        flt: dict[str, Any] = {"label": f"{LABEL_CONTROLLER}={self.controller_id}"}
        if running_only:
            flt["status"] = "running"
        if self.docker is None:
            return []
        if not self.booted:
            return list(self.docker.api.containers(all=True, filters=flt))
        out: list[dict[str, Any]] = []
        for inst in self.live_instances():
            try:
                out += self.node_client(inst).api.containers(all=True, filters=flt)
            except (docker.errors.DockerException, OSError) as exc:  # a node still booting or gone
                logger.debug("lab: node %s: %s", inst["id"], exc)
        return out

    def cloud_containers(self) -> list[Any]:
        """This controller's replica containers, wherever they run (on every live node's engine)."""
        if self.docker is None:
            return []
        flt = {"label": f"{LABEL_CONTROLLER}={self.controller_id}"}
        if not self.booted:  # ignore_removed: the controller may remove one between the listing and its inspect
            return self.docker.containers.list(all=True, filters=flt, ignore_removed=True)
        out: list[Any] = []
        for inst in self.live_instances():
            try:
                out += self.node_client(inst).containers.list(all=True, filters=flt, ignore_removed=True)
            except (docker.errors.DockerException, OSError) as exc:  # a node still booting or gone
                logger.debug("lab: node %s: %s", inst["id"], exc)
        return out

    def haproxy_command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.haproxy_socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def cloud_servers(self) -> list[str]:
        """Names of this controller's servers in the HAProxy backend."""
        out = []
        for line in self.haproxy_command("show stat").splitlines():
            parts = line.split(",")
            if len(parts) > 1 and parts[0] == "web" and parts[1].startswith(f"{self.controller_id}-"):
                out.append(parts[1])
        return out

    # ------------------------------------------------------------------ stop

    def _remove_lab_images(self) -> None:
        """The tag pushed on-prem and the copies nodes pulled from the cloud registry (the layers are
        busybox's own, shared with local/busybox:1, so only references go)."""
        assert self.docker is not None
        prefixes = tuple(f"{r.address}/" for r in self.registries)
        if not prefixes:
            return
        try:
            for image in self.docker.images.list():
                refs = [*image.tags, *(image.attrs.get("RepoDigests") or [])]
                for ref in refs:
                    if ref.startswith(prefixes):
                        try:
                            self.docker.images.remove(ref, noprune=True)
                        except docker.errors.DockerException as exc:
                            logger.debug("lab cleanup: image %s: %s", ref, exc)
        except docker.errors.DockerException as exc:
            logger.warning("lab cleanup: images: %s", exc)

    def _remove_containers(self, flt: dict[str, str]) -> None:
        """Every container matching ``flt``, each on its own (one that fails does not keep the others), a few
        tries each: on a loaded machine a removal can time out or still be in progress when listed again."""
        assert self.docker is not None
        for attempt in range(4):
            try:
                left = self.docker.containers.list(all=True, filters=flt, ignore_removed=True)
            except docker.errors.DockerException as exc:
                logger.warning("lab cleanup: listing containers: %s", exc)
                left = []
            if not left:
                return
            for c in left:
                try:
                    c.remove(force=True)
                except docker.errors.NotFound:
                    pass
                except docker.errors.DockerException as exc:
                    if attempt == 3:
                        logger.warning("lab cleanup: container %s: %s", c.name, exc)
            time.sleep(1.0 * attempt)

    def stop(self) -> None:
        """Remove everything this lab started; safe to call twice and after a partial start."""
        if self.docker is not None:
            for flt in ({"label": f"{LABEL_CONTROLLER}={self.controller_id}"}, {"label": f"{LAB_LABEL}={self.id}"}):
                self._remove_containers(flt)
            try:  # the volumes of the replicas' copied mounts (on booted nodes they go with the node)
                for volume in self.docker.volumes.list(filters={"label": f"{LABEL_CONTROLLER}={self.controller_id}"}):
                    volume.remove(force=True)
            except docker.errors.DockerException as exc:
                logger.warning("lab cleanup: volumes: %s", exc)
        if self.haproxy is not None:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
            self.haproxy = None
        if self.docker is not None:
            self._remove_lab_images()
        for reg in self.registries:
            reg.stop()
        self.registries.clear()
        for client in self._node_clients.values():
            client.close()
        self._node_clients.clear()
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        if self.docker is not None:
            self.docker.close()
            self.docker = None
        for sock in self._ports:
            sock.close()
        self._ports.clear()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
