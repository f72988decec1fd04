"""`burstctl bake` on booted nodes (controller/loop/bake.py through the wiring, against the lab's ECS emulator,
registries and on-prem workload): a builder booted from the policy's image pulls the workload's image and
becomes a custom image; a node launched from it has the workload image already (its replica starts without
a pull and serves) and none of the builder's identity; the builder is released on success and when it
never comes up. The policy's image is Debian 12 with Docker (the lab's default): the stock image's Docker
install is the bootstrap's, tested in tests/lab/emulator/test_booted_nodes.py and by `burstctl demo`, and would
add minutes per bake here. Needs the private Docker Engine and the node images (scripts/services.sh)."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapters.aliyun.ecs import EcsComputePool, EcsPoolSettings
from adapters.aliyun.ecs_api import EcsApiSettings
from controller.config import load_config
from controller.errors import BurstError, TransientError
from controller.loop.bake import SEAL_FILES, TAG_BAKE, BakeSettings
from controller.loop.steps import launch_spec
from controller.ports import TAG_CONTROLLER, Node
from controller.wiring import build_baker
from lab.lab import Lab, LabSettings
from lab.parts import BAKED_IMAGE
from policies.loader import load_policies

pytestmark = pytest.mark.timeout(2400)  # booted nodes: a bake is minutes on a shared machine


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    the_lab = Lab(settings=LabSettings(node_image=BAKED_IMAGE, boot_delay=1.0)).start()
    yield the_lab
    the_lab.stop()


def _policy(lab: Lab) -> Any:
    return load_policies([str(lab.policy_path)]).policies["web"]


def _baker(lab: Lab, **settings: Any) -> tuple[Any, Any]:
    cfg = load_config(lab.config_path)
    return build_baker(cfg, settings=BakeSettings(poll=1.0, **settings), credentials=lab.credentials())


def _pool(lab: Lab) -> EcsComputePool:
    assert lab.emulator is not None
    return EcsComputePool(EcsPoolSettings(api=EcsApiSettings(region="cn-hangzhou", credentials=lab.credentials(),
                                                             endpoint=lab.emulator.url)))


def _arm(lab: Lab, kind: str) -> None:
    assert lab.emulator is not None
    req = urllib.request.Request(f"{lab.emulator.url}/_admin/ecs/node-faults", method="POST",
                                 data=json.dumps({"kind": kind}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as answer:
        assert answer.status == 200


def test_a_builder_that_never_answers_is_released_and_no_image_is_made(lab):
    baker, close = _baker(lab, boot_timeout=25)
    try:
        _arm(lab, "cloud-init-fail")  # its cloud-init fails: no Docker, no TLS endpoint
        with pytest.raises(TransientError, match="did not answer within 25s"):
            baker.bake(_policy(lab))
        assert lab.live_instances() == []  # the builder went with the failure
        assert baker.images.images({TAG_CONTROLLER: lab.controller_id}) == []
        assert baker.store.node_images("web") == []
    finally:
        close()


def test_a_baked_image_boots_nodes_with_docker_and_the_workload_image_and_no_pull(lab):
    baker, close = _baker(lab, keep=1, boot_timeout=900)
    policy = _policy(lab)
    pool = _pool(lab)
    seen: set[str] = set()
    real_launch = baker.compute.launch

    def launch(spec, count, token):  # the builder: with the policy's image and settings, tagged as a builder
        assert spec.image_id == BAKED_IMAGE and spec.tags[TAG_BAKE] == "web" and spec.user_data
        found = real_launch(spec, count, token)
        seen.update(i.id for i in found)
        return found

    baker.compute.launch = launch
    try:
        result = baker.bake(policy)
        assert result.image_id.startswith("m-") and result.builder in seen
        assert lab.live_instances() == []  # the builder is released
        assert baker.store.baked_image("web", result.spec_hash) == result.image_id
        [image] = baker.images.images({TAG_CONTROLLER: lab.controller_id})
        assert (image.id, image.status) == (result.image_id, "Available")
        print(f"bake phases: {result.phases}")

        # a node of the baked image: Docker and the workload image are there before anything is pulled
        spec = launch_spec(policy, lab.controller_id, "check", "check-intent", baker.edges.user_data(policy, "check"))
        spec = dataclasses.replace(spec, image_id=result.image_id)
        [inst] = pool.launch(spec, 1, "check-baked-node")
        try:
            node = _wait_node(pool, baker.runtime, inst.id)
            assert baker.runtime.has_image(node, result.workload_image)
            log = _exec(lab, inst.id, "cat /var/log/cloud-init-output.log")
            assert "Setting up docker.io" not in log, log[-1500:]  # baked in, not installed
            for path, body in SEAL_FILES.items():  # the builder's engine config, key and id were not carried
                if path.endswith(".conf"):
                    assert "ExecStart=" in _exec(lab, inst.id, f"cat {path}")  # this node's own, rewritten
                if path == "/etc/machine-id":
                    assert _exec(lab, inst.id, f"cat {path}").strip() not in ("", body.decode())
            workload = baker.edges.workloads.capture(policy, result.workload_image)
            container = baker.runtime.start(node, workload, "web-baked", {"io.burst-controller.controller-id":
                                                                          lab.controller_id})
            assert container.pull_seconds is None  # nothing pulled
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://{node.address}:{container.port}/", timeout=3).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the replica on the baked node does not serve"
                time.sleep(0.5)
        finally:
            pool.release([inst.id])
        # keep=1: a second image of the policy makes the first one go (it is no longer in use)
        again = baker.bake(policy)
        assert again.deleted == [result.image_id]
        assert [i.id for i in baker.images.images({TAG_CONTROLLER: lab.controller_id})] == [again.image_id]
        assert [r.image_id for r in baker.store.node_images("web")] == [again.image_id]
        assert lab.live_instances() == []
    finally:
        pool.close()
        close()


def _wait_node(pool: EcsComputePool, runtime: Any, instance_id: str) -> Node:
    deadline = time.monotonic() + 300
    last: object = None
    while time.monotonic() < deadline:
        [inst] = pool.get([instance_id])
        if inst.state.value == "running" and inst.private_ip:
            node = Node(inst.id, inst.private_ip, f"tcp://{inst.private_ip}:2376")
            try:
                runtime.ping(node)
                return node
            except BurstError as exc:
                last = exc
        time.sleep(1)
    raise AssertionError(f"node {instance_id}: no Docker API (last: {last!r})")


def _exec(lab: Lab, instance_id: str, cmd: str) -> str:
    assert lab.docker is not None
    out = lab.docker.containers.get(f"ecs-{instance_id}").exec_run(["sh", "-c", cmd]).output
    return out.decode(errors="replace")


def test_burstctl_bake_keeps_the_policys_bake_keep_by_default(lab, capsys, monkeypatch):
    """`burstctl bake web` with no --keep keeps what the policy's ``bake.keep`` says, as the daemon's own bakes
    do: with ``keep: 1`` the policy's older image goes."""
    from controller.cli.main import main

    for key, value in lab.env().items():
        if key.startswith("ALIBABA_CLOUD_"):
            monkeypatch.setenv(key, value)
    original = lab.policy_path.read_text()
    lab.policy_path.write_text(original + "bake: {auto: false, keep: 1}\n")
    try:
        results = []
        for _ in range(2):
            assert main(["bake", "web", "--config", str(lab.config_path), "--json"]) == 0
            results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
        first, second = results
        assert first["image_id"] in second["deleted"], second
        baker, close = _baker(lab)
        try:
            assert [i.id for i in baker.images.images({TAG_CONTROLLER: lab.controller_id})] == [second["image_id"]]
        finally:
            close()
        assert lab.live_instances() == []
    finally:
        lab.policy_path.write_text(original)
