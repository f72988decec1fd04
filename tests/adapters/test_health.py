"""Health checks against real replica containers: a check passes only when HTTP answers and Docker's own
healthcheck says healthy, a paused replica fails, and checks run concurrently with a per-check timeout."""

from __future__ import annotations

import socket
import time

from adapters.health import HttpHealthChecker
from controller.ports import Container, Owner

HEALTHCHECK = {"test": ["CMD", "wget", "-q", "-O-", "http://127.0.0.1/healthz"], "interval": 500_000_000,
               "timeout": 1_000_000_000, "retries": 2, "start_period": 0}


def test_a_check_passes_only_once_http_and_dockers_health_both_pass_and_fails_when_paused(
        web_replicas, node_runtime, docker_client):
    # the HTTP server comes up 3 s after the container starts; Docker's own check needs it too. How many
    # passes admit a replica and how many failures evict it is the lifecycle's count (tests/controller)
    ((node, replica),) = web_replicas(1, delay=3, healthcheck=HEALTHCHECK)
    started = time.monotonic()
    checker = HttpHealthChecker("/healthz", timeout=1.0)
    rounds: list[tuple[float, bool, str, str | None]] = []
    while time.monotonic() - started < 20:
        (c,) = node_runtime.list(node, Owner("ctl-test"))
        result = checker.check([c])[c.name]
        rounds.append((time.monotonic() - started, result.ok, result.detail, result.docker_health))
        if result.ok:
            break
        time.sleep(0.5)
    assert rounds[-1][1], rounds
    assert not rounds[0][1] and rounds[0][0] < 3  # nothing answered at first
    assert rounds[-1][3] == "healthy" and rounds[-1][0] >= 3 and rounds[-1][2] == "HTTP 200"
    # HTTP up before Docker's own check said healthy counts as a failure, with the reason
    assert all("HTTP 200" in d or "docker health" in d or "Error" in d or "timeout" in d for _, _, d, _ in rounds)

    # stop answering: the check fails, with the reason
    docker_client.api.pause(replica.id)
    try:
        (c,) = node_runtime.list(node, Owner("ctl-test"))
        paused = checker.check([c])[c.name]
        assert not paused.ok and ("paused" in paused.detail or "timeout" in paused.detail), paused
    finally:
        docker_client.api.unpause(replica.id)


def test_checks_are_concurrent_and_time_out(web_replicas):
    ((_, replica),) = web_replicas(1)
    holes = []
    for _ in range(6):  # accept connections (kernel backlog) but never answer
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        holes.append(s)
    try:
        targets = [replica] + [
            Container(id=f"h{i}", name=f"hole-{i}", node_id="n", state="running", health=None, labels={},
                      address="127.0.0.1", port=h.getsockname()[1]) for i, h in enumerate(holes)]
        targets.append(Container(id="x", name="exited", node_id="n", state="exited", health=None, labels={},
                                 address="127.0.0.1", port=1))
        checker = HttpHealthChecker("/healthz", timeout=1.0)
        while not checker.check([replica])[replica.name].ok:  # the replica's httpd is up within a moment
            time.sleep(0.2)
        started = time.monotonic()
        results = checker.check(targets)
        elapsed = time.monotonic() - started
    finally:
        for s in holes:
            s.close()
    assert results[replica.name].ok and results[replica.name].http_status == 200
    assert all(not results[f"hole-{i}"].ok and "timeout" in results[f"hole-{i}"].detail for i in range(6))
    assert not results["exited"].ok and results["exited"].detail == "container exited"
    assert elapsed < 3.0  # six 1 s timeouts at once, not one after another
