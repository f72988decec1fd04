"""Fixtures of the replicas area: a real docker-registry holding the test image (so it has a RepoDigest),
on-prem workload containers, emulated nodes (127.0.1.x addresses, the local engine's TLS endpoint) and a
DockerNodeRuntime. Every container started here carries TEST_LABEL and is removed at teardown."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from adapters.docker_engine.node_runtime import DockerNodeRuntime
from adapters.pki import TlsFiles
from controller.ports import Node

TEST_LABEL = "io.burst-controller.test"
TEST_LABEL_VALUE = "replicas"
# Node addresses of this area's tests (127.0.1.192/26); other areas use other parts of 127.0.1.0/24.
NODE_ADDRESS_BASE = 192

# A CGI script behind busybox httpd: /cgi-bin/slow?N sleeps N seconds (default 4) then answers.
SLOW_CGI = ('#!/bin/sh\\nsleep ${QUERY_STRING:-4}\\necho "Content-Type: text/plain"\\necho\\n'
            'echo "slow $(cat /etc/hostname)"\\n')
HTTPD_SCRIPT = (
    "mkdir -p /www/cgi-bin && printf '" + SLOW_CGI + "' > /www/cgi-bin/slow && busybox chmod 755 "
    "/www/cgi-bin/slow && hostname > /www/id && echo \"${VERSION:-}\" > /www/version && echo ok > /www/healthz && "
    # httpd as pid 1 would ignore SIGTERM; a shell that forwards it makes the stop graceful, like a real app
    "httpd -f -p 80 -h /www & pid=$!; trap 'kill $pid; wait $pid; exit 0' TERM; wait $pid"
)


def _cleanup(client: docker.DockerClient, run_id: str) -> None:
    # only this test's containers: other pytest sessions (other areas, run in parallel) load this plugin too
    for c in client.containers.list(all=True, filters={"label": f"{TEST_LABEL}.run={run_id}"}):
        try:
            c.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
    # the volumes of copied mounts (the node runtime removes them with their replica)
    for v in client.volumes.list(filters={"label": f"{TEST_LABEL}.run={run_id}"}):
        try:
            v.remove(force=True)
        except docker.errors.NotFound:
            pass


@pytest.fixture(scope="session")
def replica_registry(docker_client: docker.DockerClient, busybox_image: str) -> Iterator[str]:
    """A real docker-registry on loopback (anonymous); yields its host:port."""
    from lab.localregistry import LocalRegistry

    tmp = Path(tempfile.mkdtemp(prefix="replicas-registry-"))
    registry = LocalRegistry(tmp).start()
    try:
        yield registry.address
    finally:
        registry.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def push_image(client: docker.DockerClient, source: str, registry: str, repo: str, tag: str = "1",
               auth: dict[str, str] | None = None) -> str:
    """Tag and push ``source`` to ``registry/repo:tag``; return the ``repo@sha256:...`` digest reference."""
    image = client.images.get(source)
    image.tag(f"{registry}/{repo}", tag)
    for event in client.api.push(f"{registry}/{repo}", tag=tag, stream=True, decode=True, auth_config=auth):
        assert "error" not in event, event
    digests = client.images.get(f"{registry}/{repo}:{tag}").attrs["RepoDigests"]
    ref = next(d for d in digests if d.startswith(f"{registry}/{repo}@"))
    return str(ref)


@pytest.fixture(scope="session")
def pushed_busybox(docker_client: docker.DockerClient, busybox_image: str, replica_registry: str) -> Iterator[str]:
    """The busybox image pushed to the test registry: ``127.0.0.1:P/replicas/busybox:1`` (has a RepoDigest)."""
    digest_ref = push_image(docker_client, busybox_image, replica_registry, "replicas/busybox")
    yield f"{replica_registry}/replicas/busybox:1"
    for ref in (f"{replica_registry}/replicas/busybox:1", digest_ref):  # names only; layers are busybox's
        try:
            docker_client.images.remove(ref, noprune=True)
        except docker.errors.DockerException:
            pass


@pytest.fixture()
def run_id(docker_client: docker.DockerClient) -> Iterator[str]:
    """A per-test id; every container labelled with it is removed at teardown."""
    rid = uuid.uuid4().hex[:8]
    yield rid
    _cleanup(docker_client, rid)


@pytest.fixture()
def onprem(docker_client: docker.DockerClient, run_id: str) -> Callable[..., Any]:
    """Start an 'on-prem' workload container: ``onprem(image, name=..., **docker run kwargs)``."""

    def start(image: str, name: str | None = None, **kwargs: Any) -> Any:
        labels = dict(kwargs.pop("labels", {}))
        labels.update({TEST_LABEL: TEST_LABEL_VALUE, f"{TEST_LABEL}.run": run_id})
        name = name or f"onprem-{run_id}-{uuid.uuid4().hex[:4]}"
        return docker_client.containers.run(image, name=name, labels=labels, detach=True, **kwargs)

    return start


@pytest.fixture()
def nodes(run_id: str, make_ecs_emulator: Callable[..., Any], make_ecs_pool: Callable[..., Any]) -> Callable[[int], list[Node]]:
    """``nodes(n)``: n running instances of the ECS emulator (real SDK), as the runtime sees them: each has
    its own 127.0.1.x address (this area's part of the pool) and the local engine's mutual-TLS endpoint."""
    from controller.ports import TAG_CONTROLLER, TAG_POLICY, InstanceState, LaunchSpec
    from tests.fixtures_ecs import REGION

    emulator = make_ecs_emulator(boot_delay=0.2, address_pool=f"127.0.1.{NODE_ADDRESS_BASE}/26")
    pool = make_ecs_pool(emulator)
    spec = LaunchSpec(region=REGION, instance_types=("ecs.g7.large",), zones=(f"{REGION}-a",), image_id="img",
                      security_group_id="sg", vswitches={f"{REGION}-a": "vsw"},
                      tags={TAG_CONTROLLER: "ctl-test", TAG_POLICY: "web"})
    launched = iter(range(1000))

    def make(n: int) -> list[Node]:
        ids = [i.id for i in pool.launch(spec, n, f"{run_id}-{next(launched)}")]
        deadline = time.monotonic() + 15
        while True:
            instances = pool.get(ids)
            if all(i.state == InstanceState.RUNNING for i in instances) and len(instances) == n:
                break
            assert time.monotonic() < deadline, f"instances did not boot: {instances}"
            time.sleep(0.05)
        by_id = {i.id: i for i in instances}
        return [Node(instance_id=i, address=str(by_id[i].private_ip), docker_endpoint=str(by_id[i].docker_endpoint))
                for i in ids]

    return make


@pytest.fixture()
def node_runtime(node_tls: TlsFiles, docker_client: docker.DockerClient, run_id: str) -> Iterator[DockerNodeRuntime]:
    runtime = DockerNodeRuntime(node_tls)
    yield runtime
    runtime.close()


def replica_labels(run_id: str, policy: str = "web", replica: str = "r1", controller: str = "ctl-test") -> dict[str, str]:
    from controller.ports import LABEL_CONTROLLER, LABEL_POLICY, LABEL_REPLICA

    return {LABEL_CONTROLLER: controller, LABEL_POLICY: policy, LABEL_REPLICA: replica,
            TEST_LABEL: TEST_LABEL_VALUE, f"{TEST_LABEL}.run": run_id}


@pytest.fixture()
def web_replicas(docker_client: docker.DockerClient, node_runtime: DockerNodeRuntime, nodes: Callable[[int], list[Node]],
                 pushed_busybox: str, run_id: str) -> Callable[..., list[tuple[Node, Any]]]:
    """``web_replicas(n, env=None, delay=0)``: n busybox-httpd replicas, one per new node, started through the
    node runtime (so on the node's address); /id answers the container's hostname, /cgi-bin/slow?N sleeps."""
    from controller.ports import LABEL_SPEC_HASH, WorkloadSpec

    digest_ref = next(d for d in docker_client.images.get(pushed_busybox).attrs["RepoDigests"]
                      if d.startswith(pushed_busybox.rsplit(":", 1)[0] + "@"))

    def start(n: int, env: dict[str, str] | None = None, delay: float = 0.0,
              healthcheck: dict[str, Any] | None = None, spec_hash: str = "h1") -> list[tuple[Node, Any]]:
        script = (f"sleep {delay}; " if delay else "") + HTTPD_SCRIPT
        spec = WorkloadSpec(image=digest_ref, entrypoint=("/bin/sh", "-c"), command=(script,), env=dict(env or {}),
                            exposed_ports=("80/tcp",), healthcheck=healthcheck, spec_hash=spec_hash)
        out = []
        for i, node in enumerate(nodes(n)):
            replica = f"r{i}-{uuid.uuid4().hex[:4]}"
            labels = replica_labels(run_id, replica=replica)
            labels[LABEL_SPEC_HASH] = spec_hash
            out.append((node, node_runtime.start(node, spec, f"ctl-test-web-{replica}", labels)))
        return out

    return start
