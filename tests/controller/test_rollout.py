"""Drift roll-forward: the step function (table-driven) and a real roll on the Docker Engine behind a real
HAProxy, with traffic flowing the whole time."""

from __future__ import annotations

import threading
import time

import httpx

from adapters.haproxy import HaproxyLoadBalancer
from adapters.health import HttpHealthChecker
from adapters.workload import DockerWorkloadCapture, WorkloadSelection
from controller.drain import DrainSettings
from controller.ports import LABEL_CONTROLLER, LABEL_POLICY, LABEL_REPLICA, LABEL_SPEC_HASH, Owner, Server
from controller.rollout import (
    RolloutReplica,
    RolloutSettings,
    StepKind,
    next_roll_step,
    replica_name,
    roll_forward,
)
from tests.fixtures_replicas import HTTPD_SCRIPT, TEST_LABEL, TEST_LABEL_VALUE


def rep(name: str, node: str, h: str, admitted: bool = True, draining: bool = False, sessions: int = 0):
    return RolloutReplica(name=name, node_id=node, spec_hash=h, admitted=admitted, draining=draining,
                          sessions=sessions)


def test_steps_one_node_one_replica_at_a_time():
    old = [rep("a", "n1", "h1"), rep("b", "n2", "h1")]
    assert next_roll_step(old, "h2").kind is StepKind.START and next_roll_step(old, "h2").node_id == "n1"
    starting = old + [rep("c", "n1", "h2", admitted=False)]
    step = next_roll_step(starting, "h2")
    assert (step.kind, step.replica.name) == (StepKind.ADMIT, "c")
    surged = old + [rep("c", "n1", "h2")]
    step = next_roll_step(surged, "h2")
    assert (step.kind, step.replica.name) == (StepKind.DRAIN, "a")
    draining = [rep("a", "n1", "h1", admitted=False, draining=True), rep("b", "n2", "h1"), rep("c", "n1", "h2")]
    step = next_roll_step(draining, "h2")
    assert (step.kind, step.replica.name) == (StepKind.DRAIN, "a")  # finish it before anything else
    half = [rep("b", "n2", "h1"), rep("c", "n1", "h2")]
    assert (next_roll_step(half, "h2").kind, next_roll_step(half, "h2").node_id) == (StepKind.START, "n2")
    assert next_roll_step([rep("c", "n1", "h2"), rep("d", "n2", "h2")], "h2").kind is StepKind.DONE
    assert next_roll_step([], "h2").kind is StepKind.DONE


def test_steps_with_two_per_node_drain_the_least_busy_old_one():
    reps = [rep("a", "n1", "h1", sessions=4), rep("b", "n1", "h1", sessions=1), rep("c", "n1", "h2")]
    step = next_roll_step(reps, "h2", per_node=2)
    assert (step.kind, step.replica.name) == (StepKind.DRAIN, "b")
    assert next_roll_step([rep("a", "n1", "h1"), rep("c", "n1", "h2")], "h2", per_node=2).kind is StepKind.START


def test_roll_forward_on_real_containers(haproxy, onprem, pushed_busybox, nodes, node_runtime, run_id):
    app = f"web-{run_id}"
    sel = WorkloadSelection(hosts=("unix:///var/run/docker.sock",), selector={"app": app}, service_port=80)
    capture = DockerWorkloadCapture()
    v1 = onprem(pushed_busybox, entrypoint=["/bin/sh", "-c"], command=[HTTPD_SCRIPT], labels={"app": app},
                environment={"VERSION": "1"})
    spec1 = capture.capture(sel)

    lb = HaproxyLoadBalancer(str(haproxy.socket))
    checker = HttpHealthChecker("/healthz", timeout=1.0)
    node_list = nodes(2)
    extra = {TEST_LABEL: TEST_LABEL_VALUE, f"{TEST_LABEL}.run": run_id}
    for i, node in enumerate(node_list):
        name = replica_name("ctl-test", "web", f"v1-{i}")
        c = node_runtime.start(node, spec1, name, {**extra, LABEL_CONTROLLER: "ctl-test", LABEL_POLICY: "web",
                                                   LABEL_REPLICA: f"v1-{i}", LABEL_SPEC_HASH: spec1.spec_hash})
        while not checker.check([c])[name].ok:
            time.sleep(0.2)
        lb.add("web", Server(name=name, address=c.address, port=c.port))

    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(trust_env=False, timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.get(f"{haproxy.url}/version")
                    seen.append((r.status_code, r.text.strip()))
                except httpx.HTTPError as exc:
                    seen.append((-1, str(exc)))
                time.sleep(0.03)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        # the on-prem workload changes: a new VERSION
        v1.remove(force=True)
        onprem(pushed_busybox, entrypoint=["/bin/sh", "-c"], command=[HTTPD_SCRIPT], labels={"app": app},
               environment={"VERSION": "2"})
        spec2 = capture.capture(sel)
        assert spec2.spec_hash != spec1.spec_hash

        steps = []
        settings = RolloutSettings(controller_id="ctl-test", policy="web", backend="web",
                                   drain=DrainSettings(timeout=10, stop_timeout=5, poll_interval=0.2),
                                   health_passes=2, health_interval=0.3, admit_timeout=30, extra_labels=extra)
        taken = roll_forward(node_runtime, lb, checker, node_list, spec2, settings, on_step=steps.append)
        time.sleep(0.3)
    finally:
        stop.set()
        t.join()

    assert taken == 4
    first, second = sorted(n.instance_id for n in node_list)  # roll_forward visits nodes in id order
    assert [(s.kind, s.node_id) for s in steps] == [
        (StepKind.START, first), (StepKind.DRAIN, first),
        (StepKind.START, second), (StepKind.DRAIN, second),
        (StepKind.DONE, None)]
    v1_name = {n.instance_id: replica_name("ctl-test", "web", f"v1-{i}") for i, n in enumerate(node_list)}
    assert [s.replica.name for s in steps if s.kind is StepKind.DRAIN] == [v1_name[first], v1_name[second]]
    # no request failed, and the answers moved from 1 to 2
    assert seen and all(status == 200 for status, _ in seen), [s for s in seen if s[0] != 200][:5]
    versions = [body for _, body in seen]
    assert versions[0] == "1" and versions[-1] == "2" and set(versions) == {"1", "2"}
    # every replica now runs the new spec; the old ones are gone from HAProxy and from the nodes
    for node in node_list:
        (c,) = node_runtime.list(node, Owner("ctl-test", "web"))
        assert c.labels[LABEL_SPEC_HASH] == spec2.spec_hash
        assert "VERSION=2" in node_runtime.inspect(node, c.id)["Config"]["Env"]
    assert sorted(s.name for s in lb.list("web")) == sorted(
        c.name for node in node_list for c in node_runtime.list(node, Owner("ctl-test", "web")))
    # rolling again is a no-op
    assert roll_forward(node_runtime, lb, checker, node_list, spec2, settings) == 0
