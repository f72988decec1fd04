"""Custom images of booted nodes (``nodes.NodeHost``): what CreateImage captures of a machine and how a
launch from it gets it back. A machine is a container whose root file system is its image plus its own
changes, and whose Docker data (``/var/lib/docker``) is a volume, which ``docker commit`` leaves out. So a
capture freezes the machine (``docker pause``: one consistent moment; a machine that cannot be frozen is
synced and captured running, crash-consistent as a running instance's snapshot is), commits the
container to ``ecs-SCOPE/m-...:image`` and copies the Docker volume into a snapshot volume
``ecs-SCOPE-m-...-docker`` (``cp -a``: devices, owners, extended attributes and hard links kept, so the
overlay2 layers of pulled images stay intact), then thaws it. A launch from the image fills the new
instance's Docker volume from that snapshot before the machine starts, within the VM's modelled boot: the
node then has every image the builder pulled, with no pull.
"""

from __future__ import annotations

import contextlib
import logging
import time

import docker
from docker.errors import APIError, ImageNotFound, NotFound

__all__ = ["CUSTOM_LABEL", "NodeDisks"]

logger = logging.getLogger(__name__)

CUSTOM_LABEL = "io.burst-controller.ecs-image"
_PRIVILEGES = {"cap_add": ["ALL"], "cap_drop": ["SYS_RESOURCE"],  # trusted.* xattrs (overlay2) need SYS_ADMIN
               "security_opt": ["seccomp=unconfined", "apparmor=unconfined"]}


class NodeDisks:
    """Capture, restore and removal of custom images on the nodes' engine, for one emulator scope."""

    def __init__(self, client: docker.DockerClient, scope: str, scope_label: str) -> None:
        self.client = client
        self.scope = scope
        self.scope_label = scope_label

    def tag(self, image_id: str) -> str:
        return f"ecs-{self.scope}/{image_id}:image"

    def snapshot_volume(self, image_id: str) -> str:
        return f"ecs-{self.scope}-{image_id}-docker"

    def exists(self, image_id: str) -> bool:
        try:
            self.client.images.get(self.tag(image_id))
            return True
        except ImageNotFound:
            return False

    def capture(self, container_id: str, machine_volume: str, image_id: str) -> float:
        """Commit the machine and snapshot its Docker volume; the seconds it took."""
        started = time.monotonic()
        api = self.client.api
        repo, _, tag = self.tag(image_id).rpartition(":")
        info = api.inspect_container(container_id)
        paused = False
        if info["State"]["Running"] and not info["State"]["Paused"]:
            try:
                api.pause(container_id)
                paused = True
            except APIError as exc:
                # a machine whose systemd made cgroups of its own may refuse to freeze: then the capture is
                # crash-consistent, as a snapshot of a running ECS instance's disk is, after a sync
                logger.info("machine %s not paused (%s): capturing it running", container_id[:12], exc)
                exec_id = api.exec_create(container_id, ["sync"])["Id"]
                api.exec_start(exec_id)
        try:
            labels = {self.scope_label: self.scope, CUSTOM_LABEL: image_id}
            api.commit(container_id, repository=repo, tag=tag, pause=False,
                       message=f"ECS emulator custom image {image_id}", conf={"Labels": labels})
            self.client.volumes.create(self.snapshot_volume(image_id), labels=labels)
            self._copy(machine_volume, self.snapshot_volume(image_id), image_id)
        except BaseException:
            self.remove(image_id)
            raise
        finally:
            if paused:
                with contextlib.suppress(NotFound, APIError):
                    api.unpause(container_id)
        return time.monotonic() - started

    def restore(self, image_id: str, machine_volume: str, instance_label: dict[str, str]) -> None:
        """Fill a new machine's Docker volume from the image's snapshot (before the machine starts)."""
        self.client.volumes.create(machine_volume, labels=instance_label)
        self._copy(self.snapshot_volume(image_id), machine_volume, image_id)

    def _copy(self, source: str, target: str, image_id: str) -> None:
        """``cp -a`` from one volume to another in a short-lived container of the image itself."""
        out = self.client.containers.run(
            self.tag(image_id), ["cp", "-a", "/from/.", "/to/"], entrypoint=[], remove=True, network_mode="none",
            volumes={source: {"bind": "/from", "mode": "ro"}, target: {"bind": "/to", "mode": "rw"}},
            labels={self.scope_label: self.scope}, stderr=True, **_PRIVILEGES)
        if out:
            logger.debug("volume copy %s -> %s: %s", source, target, out[-500:])

    def remove(self, image_id: str) -> None:
        with contextlib.suppress(NotFound, APIError):
            self.client.volumes.get(self.snapshot_volume(image_id)).remove(force=True)
        with contextlib.suppress(NotFound, APIError):
            self.client.images.remove(self.tag(image_id), force=True)

    def remove_all(self) -> None:
        """Every custom image of this scope (an emulator without a state file takes them with it)."""
        for volume in self.client.volumes.list(filters={"label": f"{self.scope_label}={self.scope}"}):
            if CUSTOM_LABEL in (volume.attrs.get("Labels") or {}):
                with contextlib.suppress(NotFound, APIError):
                    volume.remove(force=True)
        for image in self.client.images.list(filters={"label": f"{CUSTOM_LABEL}"}):
            if (image.labels or {}).get(self.scope_label) == self.scope:
                with contextlib.suppress(NotFound, APIError):
                    self.client.images.remove(image.id, force=True)
