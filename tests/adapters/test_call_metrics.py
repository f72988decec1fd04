"""Every request to an outside system is counted and timed by ``controller.metrics.timed_call``: real calls
to the real components (ECS and SLB on the emulator over the real SDK, a docker-registry process, the
Docker Engine's mutual-TLS endpoint when it is reachable) move ``burst_api_calls_total`` and
``burst_api_call_duration_seconds`` under the system, the operation and the outcome."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from adapters.aliyun.credentials import CloudCredentials, StaticCredentials
from adapters.aliyun.slb import SlbLoadBalancer, SlbSettings
from adapters.docker_engine.node_runtime import DockerNodeRuntime
from adapters.registry.client import RegistryClient, RegistryOptions
from adapters.registry.imageref import parse_registry_ref
from controller import metrics
from controller.errors import NotFoundError, TransientError
from controller.ports import Node, Owner
from lab.emulator.slb import SlbState, install_slb
from tests.conftest import DOCKER_TLS_ENDPOINT
from tests.fixtures_ecs import KEY_ID, KEY_SECRET, REGION


def _sample(name: str, system: str, operation: str, outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value(f"burst_{name}",
                                              {"system": system, "operation": operation, "outcome": outcome})
    return value or 0.0


@contextmanager
def moved(system: str, operation: str, outcome: str = "ok") -> Iterator[Callable[[], tuple[float, float, float]]]:
    """Yields a reading of (calls, timed calls, seconds) added since the block began."""
    before = [_sample(n, system, operation, outcome) for n in
              ("api_calls_total", "api_call_duration_seconds_count", "api_call_duration_seconds_sum")]

    def delta() -> tuple[float, float, float]:
        now = [_sample(n, system, operation, outcome) for n in
               ("api_calls_total", "api_call_duration_seconds_count", "api_call_duration_seconds_sum")]
        calls, timed, seconds = (a - b for a, b in zip(now, before, strict=True))
        return calls, timed, seconds

    yield delta


def test_ecs_calls_and_throttled_attempts_are_counted_and_timed(ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    pool = make_ecs_pool(ecs_emulator, max_attempts=3)
    with moved("ecs", "DescribeInstances") as ok:
        assert pool.list(Owner("metrics-test")) == []
    calls, timed, seconds = ok()
    assert calls >= 1 and timed == calls and seconds > 0

    ecs_emulator.set_faults(throttle_rate=1.0, actions=["DescribeInstances"])
    with moved("ecs", "DescribeInstances", "transient") as throttled, pytest.raises(TransientError):
        pool.list(Owner("metrics-test"))
    assert throttled()[:2] == (3, 3)  # each of the three attempts is a request of its own


def test_slb_calls_are_counted_and_timed(ecs_emulator) -> None:  # type: ignore[no-untyped-def]
    state = SlbState(instance_exists=lambda iid: False)
    install_slb(ecs_emulator.server, state)
    lb_id = state.create(REGION, "web")
    slb = SlbLoadBalancer(SlbSettings(region=REGION, credentials=StaticCredentials(CloudCredentials(KEY_ID, KEY_SECRET)),
                                      endpoint=ecs_emulator.url, max_attempts=1))
    try:
        with moved("slb", "DescribeLoadBalancerAttribute") as ok:
            assert slb.list(lb_id) == []
        assert ok()[:2] == (1, 1) and ok()[2] > 0
        with moved("slb", "DescribeLoadBalancerAttribute", "not_found") as missing, pytest.raises(NotFoundError):
            slb.list("lb-does-not-exist")
        assert missing()[:2] == (1, 1)
    finally:
        slb.close()


def test_registry_requests_are_counted_and_timed(src_registry, src_pusher, repo_name) -> None:  # type: ignore[no-untyped-def]
    src_pusher.image(repo_name, "v1", [1024], seed=7)
    client = RegistryClient(RegistryOptions(retries=1))
    try:
        with moved("registry", "GET manifest") as ok:
            manifest = client.get_manifest(parse_registry_ref(f"{src_registry.address}/{repo_name}:v1"))
        assert manifest.digest.startswith("sha256:") and ok()[:2] == (1, 1) and ok()[2] > 0
        with moved("registry", "GET manifest", "not_found") as missing, pytest.raises(NotFoundError):
            client.get_manifest(parse_registry_ref(f"{src_registry.address}/{repo_name}:absent"))
        assert missing()[:2] == (1, 1)
    finally:
        client.close()


def _engine_reachable(endpoint: str) -> bool:
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def test_node_docker_requests_are_counted_and_timed(node_tls) -> None:  # type: ignore[no-untyped-def]
    if not _engine_reachable(DOCKER_TLS_ENDPOINT):
        pytest.skip(f"no Docker Engine answers on {DOCKER_TLS_ENDPOINT}")
    runtime = DockerNodeRuntime(node_tls)
    node = Node("i-metrics", "127.0.0.1", DOCKER_TLS_ENDPOINT)
    try:
        with moved("docker", "ping") as ok:
            runtime.ping(node)
        assert ok()[:2] == (1, 1) and ok()[2] > 0
        with moved("docker", "list") as listed:
            runtime.list(node, Owner("metrics-test-nobody"))
        assert listed()[:2] == (1, 1)
    finally:
        runtime.close()


def test_an_unreachable_node_is_a_timed_transient_request(node_tls) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runtime = DockerNodeRuntime(node_tls, timeout=2)
    try:
        with moved("docker", "ping", "transient") as failed, pytest.raises(TransientError):
            runtime.ping(Node("i-gone", "127.0.0.1", f"tcp://127.0.0.1:{port}"))
        assert failed()[:2] == (1, 1)
    finally:
        runtime.close()
