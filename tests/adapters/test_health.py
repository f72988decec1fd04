"""Health checks against real replica containers: admission only after N consecutive passes (HTTP and
Docker's own healthcheck), removal after M consecutive failures, and checks that run concurrently with a
per-check timeout."""

from __future__ import annotations

import socket
import time

from adapters.health import HttpHealthChecker
from controller.health import HealthTracker, Transition
from controller.ports import Container, Owner

HEALTHCHECK = {"test": ["CMD", "wget", "-q", "-O-", "http://127.0.0.1/healthz"], "interval": 500_000_000,
               "timeout": 1_000_000_000, "retries": 2, "start_period": 0}


def test_admitted_only_after_consecutive_passes_and_evicted_after_failures(web_replicas, node_runtime, docker_client):
    # the HTTP server comes up 3 s after the container starts
    ((node, replica),) = web_replicas(1, delay=3, healthcheck=HEALTHCHECK)
    started = time.monotonic()
    checker = HttpHealthChecker("/healthz", timeout=1.0)
    tracker = HealthTracker(passes=3, failures=2)
    rounds: list[tuple[float, bool, str, str | None]] = []
    admitted_at = None
    while time.monotonic() - started < 20:
        (c,) = node_runtime.list(node, Owner("ctl-test"))
        result = checker.check([c])[c.name]
        rounds.append((time.monotonic() - started, result.ok, result.detail, result.docker_health))
        if tracker.record(c.name, result.ok) is Transition.ADMIT:
            admitted_at = len(rounds)
            break
        time.sleep(0.5)
    assert admitted_at is not None, rounds
    assert not rounds[0][1] and rounds[0][0] < 3  # nothing answered at first
    assert [ok for _, ok, _, _ in rounds[-3:]] == [True, True, True]  # exactly the last three passed
    assert not rounds[-4][1]  # and the one before them failed: admission came at the first chance
    assert rounds[-1][3] == "healthy" and rounds[-1][0] >= 3
    # HTTP up before Docker's own check said healthy counts as a failure, with the reason
    assert all("HTTP 200" in d or "docker health" in d or "Error" in d or "timeout" in d for _, _, d, _ in rounds)

    # stop answering: evicted after two consecutive failures, not after one
    docker_client.api.pause(replica.id)
    try:
        (c,) = node_runtime.list(node, Owner("ctl-test"))
        first = checker.check([c])[c.name]
        assert not first.ok
        assert tracker.record(c.name, first.ok) is None and tracker.admitted(c.name)
        assert tracker.record(c.name, checker.check([c])[c.name].ok) is Transition.EVICT
        assert not tracker.admitted(c.name)
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


def test_tracker_counts():
    t = HealthTracker(passes=2, failures=3)
    assert [t.record("r", ok) for ok in (True, False, True, True)] == [None, None, None, Transition.ADMIT]
    assert [t.record("r", ok) for ok in (False, False, True, False, False, False)] == \
        [None, None, None, None, None, Transition.EVICT]
    assert not t.admitted("r") and t.counts("r") == (0, 3)
    t.adopt("s")
    assert t.admitted("s") and t.record("s", True) is None
