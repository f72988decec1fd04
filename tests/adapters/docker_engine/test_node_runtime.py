"""DockerNodeRuntime against the real engine's mutual-TLS endpoint (every emulated node points at it):
the endpoint refuses clients without our certificate, pulls by digest with registry auth, listing is per
node and per owner, stop honours the signal and the timeout, remove is idempotent."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import docker
import pytest
import requests
from docker.tls import TLSConfig

from adapters.docker_engine.node_runtime import DockerNodeRuntime
from adapters.pki import CertificateAuthority
from controller.errors import AuthError, PermanentError
from controller.ports import Owner, WorkloadSpec
from lab.localregistry import LocalRegistry
from tests.conftest import DOCKER_TLS_ENDPOINT
from tests.fixtures_replicas import TEST_LABEL, push_image, replica_labels


def _raw_client(tls: TLSConfig | bool) -> docker.DockerClient:
    client = docker.DockerClient(base_url=DOCKER_TLS_ENDPOINT, tls=tls, version="1.41", timeout=10)
    client.api.trust_env = False
    return client


def test_endpoint_refuses_a_client_without_certificate(node_tls, nodes):
    # TLS that verifies the node but presents no client certificate: the handshake is refused
    no_cert = _raw_client(TLSConfig(ca_cert=str(node_tls.ca), verify=True))
    with pytest.raises(requests.exceptions.RequestException) as err:
        no_cert.ping()
    assert "certificate" in str(err.value).lower() or "handshake" in str(err.value).lower() or \
        "reset" in str(err.value).lower()
    # no TLS at all: refused too
    plain = docker.DockerClient(base_url=DOCKER_TLS_ENDPOINT.replace("tcp://", "http://"), version="1.41", timeout=10)
    plain.api.trust_env = False
    with pytest.raises((requests.exceptions.RequestException, docker.errors.APIError)):
        plain.ping()
    # a certificate from another CA: refused, and the runtime says it is an authentication problem
    with tempfile.TemporaryDirectory() as d:
        other = CertificateAuthority(Path(d)).client_files()
        stranger = DockerNodeRuntime(dataclasses.replace(other, ca=node_tls.ca))
        with pytest.raises(AuthError, match="mutual TLS"):
            stranger.ping(nodes(1)[0])
        stranger.close()
    # with our certificate: accepted
    ours = DockerNodeRuntime(node_tls)
    ours.ping(nodes(1)[0])
    ours.close()


def test_plain_endpoints_are_rejected_by_the_runtime(node_tls):
    from controller.ports import Node

    runtime = DockerNodeRuntime(node_tls)
    with pytest.raises(PermanentError, match="mutual TLS"):
        runtime.ping(Node("i-x", "127.0.1.250", "unix:///var/run/docker.sock"))


def test_pull_by_digest_with_registry_auth(docker_client, busybox_image, nodes, node_tls, run_id, onprem):
    tmp = Path(tempfile.mkdtemp(prefix="replicas-authreg-"))
    registry = LocalRegistry(tmp, users={"puller": "pw-" + run_id}).start()
    auth = {"username": "puller", "password": "pw-" + run_id}
    base = onprem(busybox_image, command=["sh", "-c", f"echo {run_id} > /marker; sleep 300"])
    time.sleep(0.3)
    image = base.commit(repository=f"local/replicas-pull-{run_id}", tag="1")
    repo = f"{registry.address}/replicas/pull-{run_id}"
    try:
        ref = push_image(docker_client, image.id, registry.address, f"replicas/pull-{run_id}", auth=auth)
        # the node must not have it: remove every local name of the image
        for tag in (f"{repo}:1", f"local/replicas-pull-{run_id}:1"):
            docker_client.images.remove(tag)  # the last name removes the image itself
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(ref)

        spec = WorkloadSpec(image=ref, command=("sleep", "300"), spec_hash="h")
        node = nodes(1)[0]
        anonymous = DockerNodeRuntime(node_tls)
        with pytest.raises(AuthError):
            anonymous.start(node, spec, f"ctl-test-pull-{run_id}", replica_labels(run_id))
        anonymous.close()

        runtime = DockerNodeRuntime(node_tls, registry_auth={registry.address: ("puller", "pw-" + run_id)})
        c = runtime.start(node, spec, f"ctl-test-pull-{run_id}", replica_labels(run_id))
        assert c.state == "running"
        assert runtime.inspect(node, c.id)["Image"] == docker_client.images.get(ref).id
        runtime.remove(node, c.id)
        runtime.close()
    finally:
        registry.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        for c in docker_client.containers.list(all=True, filters={"label": f"{TEST_LABEL}.run={run_id}"}):
            c.remove(force=True)
        try:
            docker_client.images.remove(image.id, force=True)
        except docker.errors.NotFound:
            pass


def test_list_stop_remove(docker_client, pushed_busybox, nodes, node_runtime, run_id):
    digest_ref = docker_client.images.get(pushed_busybox).attrs["RepoDigests"][0]
    graceful = WorkloadSpec(
        image=digest_ref,
        command=("sh", "-c", "trap 'echo got-TERM; exit 0' TERM; while true; do sleep 0.1; done"),
        restart_policy={"Name": "always", "MaximumRetryCount": 0},
        stop_signal="SIGQUIT",  # differs from the drain signal: the engine must still not restart it
        spec_hash="h1")
    stubborn = WorkloadSpec(image=digest_ref, command=("sleep", "300"), spec_hash="h1")  # pid 1 ignores TERM
    n1, n2 = nodes(2)
    a = node_runtime.start(n1, graceful, f"ctl-test-a-{run_id}", replica_labels(run_id, replica="a"))
    b = node_runtime.start(n1, stubborn, f"ctl-test-b-{run_id}", replica_labels(run_id, replica="b"))
    c = node_runtime.start(n2, stubborn, f"ctl-test-c-{run_id}",
                           replica_labels(run_id, replica="c", policy="other"))
    assert (a.address, a.port) == (n1.address, 80) and (b.address, b.port) == (n1.address, 81)
    assert [x.name for x in node_runtime.list(n1, Owner("ctl-test"))] == sorted([a.name, b.name])
    assert [x.name for x in node_runtime.list(n2, Owner("ctl-test"))] == [c.name]
    assert node_runtime.list(n2, Owner("ctl-test", "web")) == []
    assert node_runtime.list(n1, Owner("another-controller")) == []

    started = time.monotonic()
    node_runtime.stop(n1, a.id, "SIGTERM", 10)
    assert time.monotonic() - started < 5
    info = docker_client.api.inspect_container(a.id)
    assert info["State"]["ExitCode"] == 0 and "got-TERM" in docker_client.containers.get(a.id).logs().decode()
    time.sleep(1.0)  # a restart policy "always" would have brought it back by now
    assert docker_client.api.inspect_container(a.id)["State"]["Running"] is False

    started = time.monotonic()
    node_runtime.stop(n1, b.id, "SIGTERM", 1.0)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 8
    assert docker_client.api.inspect_container(b.id)["State"]["ExitCode"] == 137  # killed after the timeout

    node_runtime.stop(n1, b.id, "SIGTERM", 1.0)  # already stopped: no-op
    for node, cid in ((n1, a.id), (n1, b.id), (n2, c.id)):
        node_runtime.remove(node, cid)
        node_runtime.remove(node, cid)  # gone: no error
    assert node_runtime.list(n1, Owner("ctl-test")) == [] and node_runtime.list(n2, Owner("ctl-test")) == []


def test_replicas_started_at_once_on_one_node_get_distinct_ports(docker_client, pushed_busybox, nodes, node_runtime,
                                                                  run_id):
    """replicas_per_node > 1: the controller starts a node's replicas in parallel; each must get a host port of
    its own (choosing the port and creating the container are one step per node) and run."""
    from concurrent.futures import ThreadPoolExecutor

    digest_ref = docker_client.images.get(pushed_busybox).attrs["RepoDigests"][0]
    spec = WorkloadSpec(image=digest_ref, command=("sleep", "300"), spec_hash="h1")
    [node] = nodes(1)
    names = [f"ctl-test-par{i}-{run_id}" for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        started = list(pool.map(lambda n: node_runtime.start(node, spec, n, replica_labels(run_id, replica=n)), names))
    assert sorted(c.port for c in started) == [80, 81, 82] and {c.address for c in started} == {node.address}
    assert all(docker_client.api.inspect_container(c.id)["State"]["Running"] for c in started)
    for c in started:
        node_runtime.remove(node, c.id)
