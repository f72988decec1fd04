"""Booted nodes: the ECS emulator's instances are real Debian machines (systemd as PID 1) that run the
controller's own UserData. A stock Debian 12 and a stock Debian 13 node install Docker from the region's
mirror, serve the Engine API over mutual TLS on their own address, pull the replica's image from the cloud
registry themselves (with the credential the controller passes with the pull) and serve it; a node with
Docker baked in skips the install. The metadata block survives a Docker restart and a reboot; Stop, Start
and Delete act on the machine. Needs the private Docker Engine and the node images (scripts/services.sh)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from aliyunsdkecs.request.v20140526.StartInstancesRequest import StartInstancesRequest
from aliyunsdkecs.request.v20140526.StopInstancesRequest import StopInstancesRequest

from adapters.docker_engine.bootstrap import BootstrapSettings, NodeBootstrap
from adapters.docker_engine.client import docker_client
from adapters.docker_engine.node_runtime import DockerNodeRuntime
from adapters.pki import CertificateAuthority, TlsFiles
from controller.errors import BurstError
from controller.ports import TAG_CONTROLLER, LaunchSpec, Node, WorkloadSpec
from lab.emulator.ecs import EcsEmulator
from lab.emulator.ecs_records import EcsConfig
from lab.emulator.node_images import IMAGES, NodeImageCache
from lab.emulator.nodes import LABEL_SCOPE
from lab.localregistry import LocalRegistry
from tests.fixtures_ecs import REGION, new_pool
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(1200)  # a machine boots in ~30-90 s alone, minutes on a loaded 2-core machine

DOCKER_HOST = os.environ.get("BURST_DOCKER_HOST", "unix:///var/lib/burst-controller-dev/docker.sock")
PKI_DIR = Path(os.environ.get("BURST_PKI_DIR", "/var/lib/burst-controller-dev/pki"))
STOCK_12, BAKED_12, STOCK_13 = (i.image_id for i in IMAGES)
USER, PASSWORD = "burst", "pull-secret-5519"


def _wait(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    return wait_until(what, check, timeout, every,
                      retry=(BurstError, docker.errors.DockerException, OSError, httpx.HTTPError))


@pytest.fixture(scope="module")
def lab_engine() -> Iterator[docker.DockerClient]:
    client = docker_client(DOCKER_HOST, None, timeout=300)
    client.ping()
    cache = NodeImageCache()
    missing = [i.image_id for i in IMAGES if not cache.is_built(i.recipe)]
    assert not missing, f"node images not built: {missing}; run scripts/services.sh start"
    yield client
    client.close()


@pytest.fixture(scope="module")
def cloud(lab_engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An emulator with booted nodes on a VSwitch of its own, and a password-protected cloud registry on
    that VSwitch's gateway holding a small web image."""
    cidr = f"10.214.{random.randint(1, 254)}.0/28"
    emu = EcsEmulator(access_keys={"test-key": "test-secret-0123456789"},
                      config=EcsConfig(boot_delay=0.5, stop_delay=0.2, node_engine=DOCKER_HOST,
                                       vswitches={"vsw-t": cidr}))
    emu.start()
    gateway = str(ipaddress.ip_network(cidr).network_address + 1)
    registry = LocalRegistry(tmp_path_factory.mktemp("cloudreg"), host=gateway, users={USER: PASSWORD}).start()
    try:
        from lab.localimage import ensure_busybox_image

        ensure_busybox_image(lab_engine, "local/busybox:1")
        repo = f"{registry.address}/t/web"
        lab_engine.images.get("local/busybox:1").tag(repo, "1")
        for line in lab_engine.api.push(repo, tag="1", stream=True, decode=True,
                                        auth_config={"username": USER, "password": PASSWORD}):
            assert not (isinstance(line, dict) and line.get("error")), line
        digest = lab_engine.images.get_registry_data(
            f"{repo}:1", auth_config={"username": USER, "password": PASSWORD}).id
        yield {"emu": emu, "cidr": cidr, "registry": registry, "image": f"{repo}@{digest}"}
    finally:
        registry.stop()
        emu.stop()
        with contextlib.suppress(docker.errors.DockerException):  # the push's tag, not the layers (busybox's)
            lab_engine.images.remove(f"{registry.address}/t/web:1", noprune=True)
    scope = f"{LABEL_SCOPE}={emu.nodes.scope if emu.nodes else ''}"
    assert lab_engine.containers.list(all=True, filters={"label": scope}) == [], "the emulator left machines"


@pytest.fixture(scope="module")
def tls() -> TlsFiles:
    return TlsFiles(ca=PKI_DIR / "ca.pem", cert=PKI_DIR / "controller-cert.pem", key=PKI_DIR / "controller-key.pem")


def _user_data(cloud: dict[str, Any]) -> str:
    boot = NodeBootstrap(BootstrapSettings(ca=CertificateAuthority(PKI_DIR), node_networks=(cloud["cidr"],),
                                           insecure_registries=(cloud["registry"].address,)))
    return boot.render("booted-test")


def _spec(image_id: str, vswitch: str, user_data: str) -> LaunchSpec:
    return LaunchSpec(region=REGION, instance_types=("ecs.c6.large",), zones=("cn-test-a",), image_id=image_id,
                      security_group_id="sg-t", vswitches={"cn-test-a": vswitch}, user_data=user_data,
                      tags={TAG_CONTROLLER: "booted-test"})


def _launch(cloud: dict[str, Any], image_id: str) -> tuple[Any, Node]:
    pool = new_pool(cloud["emu"], read_timeout=30)
    [inst] = pool.launch(_spec(image_id, "vsw-t", _user_data(cloud)), 1, f"intent-{random.randint(0, 1 << 30)}")
    [inst] = pool.get([inst.id])
    assert inst.private_ip and ipaddress.ip_address(inst.private_ip) in ipaddress.ip_network(cloud["cidr"])
    return pool, Node(inst.id, inst.private_ip, f"tcp://{inst.private_ip}:2376")


def _exec(lab_engine: docker.DockerClient, instance_id: str, cmd: str) -> str:
    container = lab_engine.containers.get(f"ecs-{instance_id}")
    return container.exec_run(["sh", "-c", cmd]).output.decode(errors="replace")


def _serves(node: Node, port: int) -> bool:
    r = httpx.get(f"http://{node.address}:{port}/", timeout=3)
    return r.status_code == 200


@pytest.mark.parametrize("image_id", [STOCK_12, STOCK_13, BAKED_12])
def test_a_node_boots_the_controllers_user_data_pulls_and_serves(cloud, lab_engine, tls, image_id):
    pool, node = _launch(cloud, image_id)
    runtime = DockerNodeRuntime(tls, registry_auth={cloud["registry"].address: (USER, PASSWORD)})
    try:
        _wait("instance Running", lambda: pool.get([node.instance_id])[0].state.value == "running", 300, 1)
        started = time.monotonic()
        _wait("the node's Docker API over mutual TLS", lambda: runtime.ping(node) is None, 600, 2)
        engine_s = time.monotonic() - started
        baked = "docker" in image_id
        log = _exec(lab_engine, node.instance_id, "cat /var/log/cloud-init-output.log")
        assert ("docker.io" in log and "Setting up docker.io" in log) != baked, log[-2000:]
        workload = WorkloadSpec(image=cloud["image"], command=("httpd", "-f", "-p", "80", "-h", "/www"),
                                service_port=80)
        container = runtime.start(node, workload, "web-1", {"io.burst-controller.controller": "booted-test"})
        assert container.address == node.address
        _wait("the replica serving on the node's own address", lambda: _serves(node, container.port), 120, 0.5)
        # the node pulled the image itself from the cloud registry, and keeps no registry credential
        assert _exec(lab_engine, node.instance_id, "cat /root/.docker/config.json 2>/dev/null; echo end") == "end\n"
        ud = _exec(lab_engine, node.instance_id, "cat /var/lib/cloud/instance/user-data.txt")
        assert PASSWORD not in ud and "BEGIN PRIVATE KEY" in ud
        # containers never reach the metadata service, after a Docker restart too
        rule = "iptables -C DOCKER-USER -d 100.100.100.200 -j REJECT && echo blocked"
        assert "blocked" in _exec(lab_engine, node.instance_id, rule)
        _exec(lab_engine, node.instance_id, "iptables -F DOCKER-USER; systemctl restart docker")
        _wait("the rule back after a Docker restart", lambda: "blocked" in _exec(lab_engine, node.instance_id, rule),
              60)
        print(f"{image_id}: Docker API answered {engine_s:.1f}s after Running")
    finally:
        runtime.close()
        pool.release([node.instance_id])
    _wait("the machine removed", lambda: not lab_engine.containers.list(
        all=True, filters={"name": f"ecs-{node.instance_id}"}), 60)


def test_stop_start_reboots_the_machine_and_the_metadata_block_survives(cloud, lab_engine, tls):
    pool, node = _launch(cloud, BAKED_12)
    runtime = DockerNodeRuntime(tls)
    api = pool.api
    rule = "iptables -C DOCKER-USER -d 100.100.100.200 -j REJECT && echo blocked"
    try:
        _wait("the node's Docker API", lambda: runtime.ping(node) is None, 600, 2)
        boot_id = _exec(lab_engine, node.instance_id, "cat /proc/sys/kernel/random/boot_id; systemctl show -p "
                        "ActiveEnterTimestampMonotonic docker")
        stop = StopInstancesRequest()
        stop.set_InstanceIds([node.instance_id])
        api.call(stop)
        _wait("Stopped", lambda: pool.get([node.instance_id])[0].state.value == "stopped", 60, 0.5)
        assert lab_engine.containers.get(f"ecs-{node.instance_id}").status == "exited"
        start = StartInstancesRequest()
        start.set_InstanceIds([node.instance_id])
        api.call(start)
        _wait("Running again", lambda: pool.get([node.instance_id])[0].state.value == "running", 300, 1)
        _wait("the node's Docker API after the reboot", lambda: runtime.ping(node) is None, 300, 2)
        assert _exec(lab_engine, node.instance_id, "systemctl show -p ActiveEnterTimestampMonotonic docker") \
            not in boot_id
        assert "blocked" in _exec(lab_engine, node.instance_id, rule)
    finally:
        runtime.close()
        pool.release([node.instance_id])


def test_unknown_image_and_vswitch_are_refused_like_the_api(cloud):
    pool = new_pool(cloud["emu"])
    for image, vsw, code in (("m-nope", "vsw-t", "InvalidImageId.NotFound"),
                             (STOCK_12, "vsw-nope", "InvalidVSwitchId.NotFound")):
        with pytest.raises(BurstError) as err:
            pool.launch(_spec(image, vsw, ""), 1, f"bad-{code}")
        assert err.value.code == code, err.value
    assert cloud["emu"].live_instances() == [] or all(i["image_id"] != "m-nope" for i in cloud["emu"].live_instances())
    pool.close()
