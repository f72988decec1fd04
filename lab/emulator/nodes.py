"""Booted nodes: every instance of the ECS emulator is a real Linux machine. ``RunInstances`` starts one
container per instance from its image (a Debian root file system of ``node_images``) with systemd as PID 1,
on a Docker network per VSwitch with the VSwitch's CIDR; the instance's ``PrivateIpAddress`` is the node's
address there, and cloud-init's NoCloud source carries the call's UserData and meta-data (instance-id,
hostname). The node then does its own work: cloud-init runs the controller's bootstrap, which installs Docker
from the region's package mirror (served here, on each VSwitch's gateway) unless the image has it, serves
the Engine API with mutual TLS on the node's own address, and pulls the replica's image from the cloud
registry itself.

``CreateImage`` captures a machine (its root file system and its Docker data, ``node_disks``) and
``RunInstances`` boots a custom image like a public one, its Docker data restored from the capture.

An instance is ``Pending`` until its machine is started (``boot_delay`` models the VM's own boot),
``Starting`` until the node's systemd is up, then ``Running``; ``StopInstances`` stops the machine (its
disk, Docker's data included, stays), ``StartInstances`` boots it again, ``DeleteInstances`` removes it
and its disk. A restarted emulator (``--state``) finds its machines again by label.

The nodes and their networks are the project's own test hosts: the controller reaches them (Docker API on
``PRIVATE_IP:2376``, replicas behind HAProxy) and they reach only the VSwitch gateway (mirror, registry);
their DNS points at the gateway, where nothing answers, so no name is ever looked up outside."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import ipaddress
import logging
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, NotFound

from adapters.docker_engine.bootstrap import PIN_BRIDGE_MAC
from lab.emulator.node_disks import NodeDisks
from lab.emulator.node_images import IMAGES, MIRROR_HOST, NodeImageCache, image_by_id

__all__ = ["LABEL_INSTANCE", "LABEL_SCOPE", "NODE_FAULTS", "NodeHost", "VSwitch"]

logger = logging.getLogger(__name__)

LABEL_SCOPE = "io.burst-controller.ecs-emulator"
LABEL_INSTANCE = "io.burst-controller.ecs-instance"
NODE_FAULTS = ("cloud-init-fail", "docker-dies", "network-drop")
_UP = {"starting", "running", "degraded"}  # systemd past basic.target: the machine is up


@dataclass
class VSwitch:
    vswitch_id: str
    cidr: str

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr, strict=False)

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    def docker_name(self, scope: str) -> str:
        return f"ecs-{scope}-{self.vswitch_id}"

    def bridge_name(self, scope: str) -> str:
        return "ecs" + hashlib.sha256(f"{scope}/{self.vswitch_id}".encode()).hexdigest()[:11]  # <= 15 chars


@dataclass
class _Node:
    instance_id: str
    container_id: str = ""
    phase: str = "pending"  # pending -> booting -> up ; stopping -> stopped ; failed
    start_at: float = 0.0  # when the machine starts (after the VM's modelled boot)
    up_at: float | None = None
    error: str = ""
    faults: list[str] = field(default_factory=list)


# /proc/sys outside net/: the host kernel's own settings, not namespaced
_SHARED_SYSCTL_DIRS = ("abi", "crypto", "debug", "dev", "fs", "kernel", "user", "vm")


class _MirrorHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: apt fetches hundreds of files
        logger.debug("mirror: " + fmt, *args)


class NodeHost:
    """The machines behind the emulator's instances, on one Docker Engine."""

    def __init__(self, docker_url: str, vswitches: dict[str, str], scope: str, boot_delay: float,
                 images: NodeImageCache | None = None, clock: Callable[[], float] = time.time) -> None:
        self.client = docker.DockerClient(base_url=docker_url, timeout=300)
        self.scope = scope
        self.boot_delay = boot_delay
        self.images = images or NodeImageCache()
        self.clock = clock
        self.vswitches = {k: VSwitch(k, v) for k, v in vswitches.items()}
        self._nodes: dict[str, _Node] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._mirrors: list[http.server.ThreadingHTTPServer] = []
        self._armed: list[str] = []  # faults for the next launches (cloud-init-fail)
        self._threads: list[threading.Thread] = []  # machines being created or deleted
        self._watcher = threading.Thread(target=self._watch, name="ecs-nodes", daemon=True)
        self.disks = NodeDisks(self.client, scope, LABEL_SCOPE)

    # ------------------------------------------------------------------ set-up

    def start(self) -> None:
        for vsw in self.vswitches.values():
            self._ensure_network(vsw)
            self._serve_mirror(vsw)
        for image in IMAGES:  # import what is built now, so a launch does not wait for it
            if self.images.is_built(image.recipe):
                self.images.ensure_imported(self.client, image)
        self._adopt()
        self._watcher.start()

    def stop(self, remove: bool) -> None:
        """Stop watching; with ``remove`` also delete every machine and network of this scope."""
        self._stop.set()
        for thread in list(self._threads):  # launches and deletions under way finish (or give up) first
            thread.join(timeout=120)
        for srv in self._mirrors:
            srv.shutdown()
            srv.server_close()
        if remove:
            self.remove_all()
        self.client.close()

    def remove_all(self) -> None:
        for c in self.client.containers.list(all=True, filters={"label": f"{LABEL_SCOPE}={self.scope}"}):
            self._remove_container(c.id)
        for vsw in self.vswitches.values():
            with contextlib.suppress(NotFound, APIError):
                self.client.networks.get(vsw.docker_name(self.scope)).remove()
        self.disks.remove_all()

    def _ensure_network(self, vsw: VSwitch) -> None:
        name = vsw.docker_name(self.scope)
        with contextlib.suppress(NotFound):
            self.client.networks.get(name)
            return
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=vsw.cidr, gateway=vsw.gateway)])
        self.client.networks.create(name, driver="bridge", ipam=ipam, labels={LABEL_SCOPE: self.scope},
                                    options={"com.docker.network.bridge.name": vsw.bridge_name(self.scope),
                                             "com.docker.network.bridge.enable_ip_masquerade": "false"})
        # one MAC for the VSwitch's bridge while nodes come and go, or the nodes' replies to the host (the
        # controller, HAProxy) stall whenever another node joins or leaves (deploy/pin-bridge-mac.sh says why)
        done = subprocess.run(["sh", str(PIN_BRIDGE_MAC), vsw.bridge_name(self.scope)], capture_output=True,
                              text=True, check=False, timeout=15)
        if done.returncode:
            logger.warning("could not pin %s's MAC address: %s", vsw.bridge_name(self.scope), done.stderr.strip())

    def _serve_mirror(self, vsw: VSwitch) -> None:
        """The region's package mirror on the VSwitch gateway, port 80 (the node images' apt source)."""
        mirror_root = self.images.root / "_mirror-links"
        mirror_root.mkdir(parents=True, exist_ok=True)
        for image in IMAGES:
            link = mirror_root / f"debian-{image.recipe.suite}"
            target = self.images.mirror_dir(image.recipe)
            if link.is_symlink() and link.resolve() != target:
                link.unlink()
            if not link.exists() and not link.is_symlink():
                link.symlink_to(target)
        handler = functools.partial(_MirrorHandler, directory=str(mirror_root))
        srv = http.server.ThreadingHTTPServer((vsw.gateway, 80), handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, name=f"mirror-{vsw.vswitch_id}", daemon=True).start()
        self._mirrors.append(srv)

    def _adopt(self) -> None:
        """Machines of this scope already in the engine (an emulator restarted with its state file)."""
        for c in self.client.containers.list(all=True, filters={"label": f"{LABEL_SCOPE}={self.scope}"}):
            iid = c.labels.get(LABEL_INSTANCE, "")
            running = c.status == "running"
            self._nodes[iid] = _Node(iid, c.id, phase="booting" if running else "stopped", start_at=self.clock())

    # ------------------------------------------------------------------ the instance lifecycle

    def check_launch(self, image_id: str, vswitch_id: str) -> str | None:
        """Why a RunInstances with these cannot boot (the API's error), or None."""
        if image_id.startswith("m-"):  # a custom image: EcsState checked that it is Available
            if not self.disks.exists(image_id):
                return f"InvalidImageId.NotFound:The image {image_id} has no content on this machine."
            return self._check_vswitch(vswitch_id)
        image = image_by_id(image_id)
        if image is None:
            return f"InvalidImageId.NotFound:The specified ImageId {image_id} does not exist."
        if not self.images.is_built(image.recipe):
            return (f"InvalidImageId.NotFound:The image {image_id} is not built on this machine: "
                    "run `burstctl emulate node-images build`.")
        return self._check_vswitch(vswitch_id)

    def _check_vswitch(self, vswitch_id: str) -> str | None:
        if vswitch_id not in self.vswitches:
            return f"InvalidVSwitchId.NotFound:The specified VSwitchId {vswitch_id} does not exist."
        return None

    def launch(self, instance_id: str, image_id: str, vswitch_id: str, ip: str, hostname: str,
               user_data: bytes) -> None:
        fault = self._armed.pop(0) if self._armed else None
        node = _Node(instance_id, start_at=self.clock() + self.boot_delay, faults=[fault] if fault else [])
        with self._lock:
            self._nodes[instance_id] = node
        thread = threading.Thread(target=self._create, args=(node, image_id, vswitch_id, ip, hostname, user_data),
                                  name=f"boot-{instance_id}", daemon=True)
        self._track(thread)

    def _create(self, node: _Node, image_id: str, vswitch_id: str, ip: str, hostname: str,
                user_data: bytes) -> None:
        try:
            volume = f"ecs-{node.instance_id}-docker"
            if image_id.startswith("m-"):  # the capture's root file system, its Docker data restored first
                tag = self.disks.tag(image_id)
                self.disks.restore(image_id, volume, {LABEL_SCOPE: self.scope})
            else:
                image = image_by_id(image_id)
                assert image is not None
                tag = self.images.ensure_imported(self.client, image)
            vsw = self.vswitches[vswitch_id]
            api = self.client.api
            host_config = api.create_host_config(
                cap_add=["ALL"], cap_drop=["SYS_RESOURCE"],  # this machine kind lacks SYS_RESOURCE (no --privileged)
                security_opt=["seccomp=unconfined", "apparmor=unconfined"],
                tmpfs={"/run": "", "/run/lock": "", "/tmp": ""},
                binds={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}},
                # the node's disk for Docker's data: a volume (overlay2 cannot stack on the node's own root)
                mounts=[docker.types.Mount("/var/lib/docker", volume, type="volume")],
                extra_hosts={MIRROR_HOST: vsw.gateway},
                dns=[vsw.gateway],
            )
            # /proc/sys/net writable, as on a VM: Docker 26 (Debian 13) sets the IPv6 sysctls of each container
            # interface it adds and fails the start when it cannot. Those are per network namespace; the rest
            # of /proc/sys (the host's kernel, shared) stays read-only as Docker's default has it.
            host_config["ReadonlyPaths"] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sysrq-trigger",
                                            *(f"/proc/sys/{d}" for d in _SHARED_SYSCTL_DIRS)]
            networking = api.create_networking_config({
                vsw.docker_name(self.scope): api.create_endpoint_config(ipv4_address=ip)})
            created = api.create_container(
                tag, command=["/lib/systemd/systemd"], name=f"ecs-{node.instance_id}", hostname=hostname,
                labels={LABEL_SCOPE: self.scope, LABEL_INSTANCE: node.instance_id},
                environment={"container": "docker"}, stop_signal="SIGRTMIN+3", host_config=host_config,
                networking_config=networking, detach=True)
            node.container_id = created["Id"]
            if self._stop.is_set():  # the emulator stopped meanwhile: stop() removes what exists now
                return
            if "cloud-init-fail" in node.faults:
                user_data = b"#cloud-config\nruncmd: [ [ sh, -c, 'exit 3' ] ]\nbootcmd: [ [ false ] ]\nwrite_files: 7\n"
            seed = _seed_tar(user_data, node.instance_id, hostname)
            api.put_archive(node.container_id, "/", seed)
            wait = node.start_at - self.clock()
            if wait > 0 and self._stop.wait(wait):
                return
            api.start(node.container_id)
            node.phase = "booting"
        except Exception as exc:  # noqa: BLE001 - a machine that cannot boot stays Starting, as in the cloud
            node.phase, node.error = "failed", str(exc)
            logger.warning("node %s did not boot: %s", node.instance_id, exc)

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                booting = [n for n in self._nodes.values() if n.phase == "booting" and n.container_id]
                stopping = [n for n in self._nodes.values() if n.phase == "stopping" and n.container_id]
            for node in booting:
                with contextlib.suppress(NotFound, APIError):
                    out = self.client.api.exec_create(node.container_id, ["systemctl", "is-system-running"])
                    state = self.client.api.exec_start(out["Id"]).decode(errors="replace").strip()
                    if state in _UP:
                        node.phase, node.up_at = "up", self.clock()
                        logger.info("node %s is up (%s)", node.instance_id, state)
            for node in stopping:
                with contextlib.suppress(NotFound, APIError):
                    if not self.client.api.inspect_container(node.container_id)["State"]["Running"]:
                        node.phase = "stopped"

    def status(self, instance_id: str, default: str) -> str:
        """The API status of an instance from its machine (``default``: the record's own, for instances
        this host has no machine for)."""
        node = self._nodes.get(instance_id)
        if node is None:
            return default
        return {"pending": "Pending", "booting": "Starting", "up": "Running", "failed": "Starting",
                "stopping": "Stopping", "stopped": "Stopped"}[node.phase]

    def stop_instance(self, instance_id: str, force: bool = False) -> None:
        """StopInstances: the machine shuts down (ForceStop: at once), its disk (the container's file system
        and its Docker volume) kept for StartInstances."""
        node = self._nodes.get(instance_id)
        if node is None or not node.container_id:
            return
        node.phase = "stopping"
        grace = 0 if force else 30
        threading.Thread(target=lambda: self._quietly(lambda: self.client.api.stop(node.container_id, timeout=grace)),
                         name=f"stop-{instance_id}", daemon=True).start()

    def start_instance(self, instance_id: str) -> None:
        node = self._nodes.get(instance_id)
        if node is None or not node.container_id:
            return
        node.phase, node.up_at = "booting", None
        self._quietly(lambda: self.client.api.start(node.container_id))

    def create_image(self, instance_id: str, image_id: str, done: Callable[[bool, str], None]) -> None:
        """CreateImage: capture the instance's machine in the background; ``done(ok, error)`` after."""
        node = self._nodes.get(instance_id)

        def capture() -> None:
            if node is None or not node.container_id:
                done(False, f"instance {instance_id} has no machine")
                return
            try:
                seconds = self.disks.capture(node.container_id, f"ecs-{instance_id}-docker", image_id)
                logger.info("image %s captured from %s in %.1fs", image_id, instance_id, seconds)
                done(True, "")
            except Exception as exc:  # noqa: BLE001 - the image becomes CreateFailed, as in the cloud
                logger.warning("image %s from %s failed: %s", image_id, instance_id, exc)
                done(False, str(exc)[:300])

        threading.Thread(target=capture, name=f"image-{image_id}", daemon=True).start()

    def delete_image(self, image_id: str) -> None:
        threading.Thread(target=self.disks.remove, args=(image_id,), name=f"delete-{image_id}", daemon=True).start()

    def delete_instance(self, instance_id: str) -> None:
        with self._lock:
            node = self._nodes.pop(instance_id, None)
        if node is not None:  # stop() waits for it, like for a launch: no machine outlives the emulator
            thread = threading.Thread(target=self._remove_node, args=(node,), name=f"delete-{instance_id}",
                                      daemon=True)
            self._track(thread)

    def _track(self, thread: threading.Thread) -> None:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _remove_node(self, node: _Node) -> None:
        for _ in range(600):  # a launch still creating its machine: wait for it, then remove
            if node.container_id or node.phase == "failed":
                break
            time.sleep(0.1)
        if node.container_id:
            self._remove_container(node.container_id)
        with contextlib.suppress(NotFound, APIError):
            self.client.volumes.get(f"ecs-{node.instance_id}-docker").remove(force=True)

    def _remove_container(self, container_id: str) -> None:
        with contextlib.suppress(NotFound, APIError):
            c = self.client.containers.get(container_id)
            iid = c.labels.get(LABEL_INSTANCE, "")
            c.remove(force=True, v=True)
            with contextlib.suppress(NotFound, APIError):
                self.client.volumes.get(f"ecs-{iid}-docker").remove(force=True)

    @staticmethod
    def _quietly(fn: Callable[[], object]) -> None:
        with contextlib.suppress(NotFound, APIError):
            fn()

    # ------------------------------------------------------------------ faults (admin)

    def inject(self, body: Any) -> dict[str, Any]:
        """``{"kind": "cloud-init-fail", "next": N}`` arms the next N launches; ``{"kind": "docker-dies" |
        "network-drop", "instance_id": ID}`` acts on a running machine now."""
        if not isinstance(body, dict) or body.get("kind") not in NODE_FAULTS:
            raise ValueError(f'the body must be {{"kind": one of {", ".join(NODE_FAULTS)}, ...}}')
        kind = body["kind"]
        if kind == "cloud-init-fail":
            n = body.get("next", 1)
            if not isinstance(n, int) or n < 1:
                raise ValueError("next: a positive integer")
            self._armed += [kind] * n
            return {"armed": len(self._armed)}
        node = self._nodes.get(str(body.get("instance_id", "")))
        if node is None or not node.container_id:
            raise ValueError(f"instance_id: no machine for {body.get('instance_id')!r}")
        if kind == "docker-dies":  # the engine is killed and stays down, and its containers die with it
            # containerd's shims would keep the containers running (and serving, through the engine's NAT
            # rules) without the engine: their processes are killed too, by the PIDs the engine reported, and
            # the call returns once they are gone (a loaded machine takes a moment to tear a container down)
            script = ("pids=$(docker ps -q | xargs -r docker inspect -f '{{.State.Pid}}'); "
                      "systemctl mask --runtime docker.service docker.socket; systemctl kill -s KILL docker.service; "
                      'if [ -n "$pids" ]; then kill -KILL $pids; '
                      "for p in $pids; do for _ in $(seq 200); do kill -0 $p 2>/dev/null || break; sleep 0.05; done; "
                      "done; fi")
            out = self.client.api.exec_create(node.container_id, ["sh", "-c", script])
            self.client.api.exec_start(out["Id"])
        else:  # network-drop: the machine loses its VSwitch
            for net in self.client.api.inspect_container(node.container_id)["NetworkSettings"]["Networks"]:
                self.client.api.disconnect_container_from_network(node.container_id, net, force=True)
        node.faults.append(kind)
        return {"instance_id": node.instance_id, "fault": kind}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {iid: {"phase": n.phase, "container": n.container_id[:12], "error": n.error,
                          "up_at": n.up_at, "faults": list(n.faults)} for iid, n in self._nodes.items()}


def _seed_tar(user_data: bytes, instance_id: str, hostname: str) -> bytes:
    meta = f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("var", "var/lib", "var/lib/cloud", "var/lib/cloud/seed", "var/lib/cloud/seed/nocloud"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, body in (("user-data", user_data), ("meta-data", meta)):
            info = tarfile.TarInfo(f"var/lib/cloud/seed/nocloud/{name}")
            info.size, info.mode = len(body), 0o600
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def scope_for(state_file: str | None) -> str:
    """A stable scope for an emulator with a state file (its restart finds its machines), else a new one."""
    import secrets

    if state_file:
        return hashlib.sha256(str(Path(state_file).resolve()).encode()).hexdigest()[:8]
    return secrets.token_hex(4)
