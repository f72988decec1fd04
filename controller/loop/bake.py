"""Baked node images: a cloud image whose machines already have Docker and the policy's workload image, so
a burst node skips the install and the pull. ``Baker.bake(policy)`` (``burstctl bake POLICY``) copies the
workload's image to the policy's registry target, launches one builder node with the policy's cloud settings
and the controller's UserData, waits for its Docker API (mutual TLS), pulls the image onto it, leaves none
of the builder's own state for the image's machines to start with, makes a custom image of it (CreateImage),
waits until the image is Available, records it for the workload's spec hash (``StateStore.baked_image``),
and keeps the policy's newest ``keep`` images (DeleteImage for older ones; one instances still run is kept
until they are gone).

The builder is always released, on success and on every failure; it carries the controller's tags and
``TAG_BAKE``, so one a killed bake left behind is released by the next bake of the policy (older than the
bake's whole deadline) or, as an orphan, by the daemon's reconcile after ``orphan_grace``. Wired by
``controller.wiring.build_baker``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from controller.errors import BurstError, PermanentError, TransientError
from controller.loop.edges import Edges
from controller.loop.steps import launch_spec
from controller.ports import (
    TAG_CONTROLLER,
    TAG_POLICY,
    ComputePool,
    Instance,
    InstanceState,
    MachineImages,
    Node,
    Owner,
    WorkloadSpec,
)
from controller.store.models import NodeImageRow
from controller.store.state import StateStore

__all__ = ["SEAL_FILES", "TAG_BAKE", "TAG_SPEC_HASH", "BakeResult", "BakeSettings", "Baker", "BuilderRuntime",
           "retain"]

logger = logging.getLogger(__name__)

TAG_BAKE = "burst-controller:bake"  # on a builder instance: the policy it bakes for
TAG_SPEC_HASH = "burst-controller:spec-hash"  # on a baked image: the workload spec it carries
# What a machine booted from the image must not inherit from the builder, overwritten before CreateImage:
# the engine's TLS drop-in (without it the image's engine starts without its TCP endpoint, and the node's own
# cloud-init writes it with the node's own certificate, then restarts the engine: the start of a replica can
# never race that restart), the builder's server key, its machine id (systemd makes a new one at boot) and
# its cloud-init logs (a node's logs then tell its own boot only).
SEAL_FILES: Mapping[str, bytes] = {
    "/etc/systemd/system/docker.service.d/10-burst-tls.conf":
        b"# emptied when this image was baked: each node's cloud-init writes it with the node's own certificate\n",
    "/etc/docker/tls/server-key.pem": b"",
    "/etc/machine-id": b"",
    "/var/log/cloud-init-output.log": b"",
    "/var/log/cloud-init.log": b"",
}


class BuilderRuntime(Protocol):
    """What a bake asks of the builder's Docker Engine (``adapters.docker_engine.node_runtime.DockerNodeRuntime``)."""

    def ping(self, node: Node) -> None: ...
    def pull(self, node: Node, image: str) -> float | None: ...
    def write_files(self, node: Node, image: str, files: Mapping[str, bytes]) -> None: ...


@dataclass(frozen=True)
class BakeSettings:
    keep: int = 3  # newest images of the policy kept
    boot_timeout: float = 300.0  # launch -> the builder's Docker API answers
    image_timeout: float = 600.0  # CreateImage -> Available
    poll: float = 2.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


@dataclass
class BakeResult:
    policy: str
    image_id: str
    spec_hash: str
    workload_image: str
    base_image_id: str
    builder: str
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step
    deleted: list[str] = field(default_factory=list)  # older images deleted
    kept_in_use: list[str] = field(default_factory=list)  # older images instances still run

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Baker:
    def __init__(self, edges: Edges, images: MachineImages, runtime: BuilderRuntime, store: StateStore,
                 controller_id: str, settings: BakeSettings | None = None,
                 say: Callable[[str], None] = lambda msg: logger.info("%s", msg)) -> None:
        self.edges = edges
        self.compute: ComputePool = edges.compute
        self.images = images
        self.runtime = runtime
        self.store = store
        self.controller_id = controller_id
        self.settings = settings or BakeSettings()
        self.say = say

    def bake(self, policy: Any) -> BakeResult:
        s = self.settings
        if s.keep < 1:
            raise PermanentError("keep must be at least 1 (the image just baked)")
        phases: dict[str, float] = {}
        started = s.clock()
        spec = self._workload(policy)
        phases["replicate"] = s.clock() - started
        self._sweep(policy)
        token = f"bake-{uuid.uuid4().hex[:12]}"
        builder = self._launch(policy, token)
        self.say(f"builder {builder.id} launched ({policy.cloud.image_id})")
        try:
            mark = s.clock()
            node = self._wait_node(builder.id)
            phases["boot"] = s.clock() - mark
            self.say(f"builder {builder.id}: Docker API answers on {node.docker_endpoint} ({phases['boot']:.0f}s)")
            mark = s.clock()
            self.runtime.pull(node, spec.image)
            phases["pull"] = s.clock() - mark
            self.say(f"builder {builder.id}: pulled {spec.image} ({phases['pull']:.1f}s)")
            self.runtime.write_files(node, spec.image, SEAL_FILES)
            mark = s.clock()
            image_id = self._create_image(policy, builder.id, spec, token)
            phases["image"] = s.clock() - mark
            self.say(f"image {image_id} Available ({phases['image']:.0f}s)")
        finally:
            self._release(builder.id)
        self.store.record_node_image(NodeImageRow(
            image_id=image_id, policy=policy.name, spec_hash=spec.spec_hash, workload_image=spec.image,
            base_image_id=policy.cloud.image_id, builder_instance=builder.id, created_at=time.time()))
        self.store.record_event("bake", f"baked {image_id} for spec {spec.spec_hash[:12]} ({spec.image})",
                                policy=policy.name, details={"image": image_id, "spec_hash": spec.spec_hash})
        deleted, in_use = self._retain(policy)
        phases["total"] = s.clock() - started
        return BakeResult(policy=policy.name, image_id=image_id, spec_hash=spec.spec_hash, workload_image=spec.image,
                          base_image_id=policy.cloud.image_id, builder=builder.id, phases=phases, deleted=deleted,
                          kept_in_use=in_use)

    # ------------------------------------------------------------------ steps

    def _workload(self, policy: Any) -> WorkloadSpec:
        """The workload as a burst would run it: its image copied to the policy's registry target."""
        src = self.edges.workloads.source_image(policy)
        dst = str(policy.registry.target)
        result = self.edges.registry.replicate(src, dst, tuple(policy.workload.platforms) or None)
        spec = self.edges.workloads.capture(policy, f"{dst}@{result.digest}")
        self.say(f"workload image {src} -> {dst}@{result.digest[:19]} (spec {spec.spec_hash[:12]})")
        return spec

    def _sweep(self, policy: Any) -> None:
        """Builders an earlier, killed bake of this policy left (older than a bake's whole deadline)."""
        deadline = self.settings.boot_timeout + self.settings.image_timeout + 600.0
        now = time.time()
        stale = [i.id for i in self.compute.list(Owner(self.controller_id, policy.name))
                 if i.tags.get(TAG_BAKE) == policy.name and now - (i.created_at or now) > deadline]
        if stale:
            self.say(f"releasing builder(s) an earlier bake left: {', '.join(stale)}")
            self.compute.release(stale)

    def _launch(self, policy: Any, token: str) -> Instance:
        user_data = self.edges.user_data(policy, token)
        spec = launch_spec(policy, self.controller_id, token, token, user_data)
        spec = dataclasses.replace(spec, tags={**spec.tags, TAG_BAKE: policy.name},
                                   name_prefix=f"burst-bake-{policy.name}")
        [inst] = self.compute.launch(spec, 1, token)
        return inst

    def _wait_node(self, instance_id: str) -> Node:
        s = self.settings
        deadline = s.clock() + s.boot_timeout
        last: str = "not Running yet"
        while s.clock() < deadline:
            found = self.compute.get([instance_id])
            if not found:
                raise PermanentError(f"builder {instance_id} vanished while booting")
            inst = found[0]
            if inst.state == InstanceState.RUNNING and inst.private_ip:
                node = Node(inst.id, inst.private_ip, inst.docker_endpoint or self.edges.node_endpoint(inst))
                try:
                    self.runtime.ping(node)
                    return node
                except TransientError as exc:
                    last = str(exc)
            else:
                last = f"instance {inst.state}"
            s.sleep(s.poll)
        raise TransientError(f"builder {instance_id}: its Docker API did not answer within "
                             f"{s.boot_timeout:.0f}s (last: {last})")

    def _create_image(self, policy: Any, instance_id: str, spec: WorkloadSpec, token: str) -> str:
        s = self.settings
        name = f"burst-{policy.name}-{spec.spec_hash[:12]}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
        tags = {TAG_CONTROLLER: self.controller_id, TAG_POLICY: policy.name, TAG_SPEC_HASH: spec.spec_hash}
        image_id = self.images.create_image(instance_id, name, tags, token)
        deadline = s.clock() + s.image_timeout
        try:
            while True:
                found = {i.id: i for i in self.images.images({TAG_CONTROLLER: self.controller_id,
                                                              TAG_POLICY: policy.name})}
                status = found[image_id].status if image_id in found else "missing"
                if status == "Available":
                    return image_id
                if status in ("CreateFailed", "UnAvailable", "missing"):
                    raise PermanentError(f"image {image_id} of builder {instance_id} is {status}")
                if s.clock() >= deadline:
                    raise TransientError(f"image {image_id} not Available within {s.image_timeout:.0f}s ({status})")
                s.sleep(s.poll)
        except BaseException:
            self._quietly(f"delete the unfinished image {image_id}", lambda: self.images.delete_image(image_id))
            raise

    def _release(self, instance_id: str) -> None:
        for attempt in range(3):
            try:
                self.compute.release([instance_id])
                self.say(f"builder {instance_id} released")
                return
            except BurstError as exc:
                logger.warning("releasing builder %s (attempt %d): %s", instance_id, attempt + 1, exc)
                self.settings.sleep(self.settings.poll)
        # the next bake's sweep or the daemon's orphan collection releases it (it carries our tags)
        logger.error("builder %s not released; the next bake or the daemon's reconcile will", instance_id)

    def _retain(self, policy: Any) -> tuple[list[str], list[str]]:
        deleted, in_use = retain(self.images, self.store, self.controller_id, policy.name, self.settings.keep)
        if deleted or in_use:
            self.say(f"kept the newest {self.settings.keep} image(s) at most; deleted {', '.join(deleted) or 'none'}"
                     + (f"; still in use: {', '.join(in_use)}" if in_use else ""))
        return deleted, in_use

    @staticmethod
    def _quietly(what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except BurstError as exc:
            logger.warning("could not %s: %s", what, exc)


def retain(images: MachineImages, store: StateStore, controller_id: str, policy: str,
           keep: int) -> tuple[list[str], list[str]]:
    """Keep the policy's newest ``keep`` Available images; delete the others (failed ones too; one still
    Creating belongs to a bake in flight and is left alone). Returns (deleted, kept because in use)."""
    found = images.images({TAG_CONTROLLER: controller_id, TAG_POLICY: policy})
    newest = [i.id for i in found if i.status == "Available"][:keep]
    deleted: list[str] = []
    in_use: list[str] = []
    for image in found:
        if image.id in newest or image.status == "Creating":
            continue
        if images.delete_image(image.id):
            store.mark_node_image_deleted(image.id)
            deleted.append(image.id)
        else:
            in_use.append(image.id)
    return deleted, in_use
