"""Node faults on booted nodes, under load: `burstctl run` as its own process against the lab (lab/lab.py),
a burst held by the LoadGenerator, and the ECS emulator's node faults (lab/emulator/nodes.py): a node whose
cloud-init fails, whose Docker Engine dies after admission, whose network drops. Each time the node's replica
is failed and replaced, its instance released (the emulator's live instances, its machine, the journal), and
no request fails beyond those HAProxy had already sent to that node when it died.

How the bound is checked: HAProxy logs every request (``option httplog`` in the lab's configuration) with the
server that answered, its timers and its retries. A request HAProxy has not yet sent can be retried (``retries
3``) and, on the last retry, sent to another server (``option redispatch``); one already sent to a server that
dies cannot. So every request the load generator saw fail must appear in HAProxy's log as a request on the
failed node's server whose connection was made before the fault was injected (in flight on it), and the
count of those is printed per fault.

One lab and one controller serve the whole module, and the waits overlap: the burst starts with its first
launch armed to fail cloud-init; docker-dies hits the other node once it serves, network-drop its replacement
once that serves; the cloud-init failure shows at the boot timeout meanwhile; the last test checks every
failed node's release once more, and the drain."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab.emulator.nodes import LABEL_INSTANCE, LABEL_SCOPE
from lab.lab import Lab, LabSettings
from lab.loadgen import LoadGenerator, LoadStats
from tests.reliability.harness import Journal
from tests.support.controller_process import ControllerProcess, running_controller, running_lab, wait_for
from tests.support.haproxy_log import haproxy_log, log_size

pytestmark = pytest.mark.timeout(1200)  # booted nodes: minutes each on a shared machine

CLIENTS = 16  # ~16 HAProxy sessions against scale_out_above 6: the burst goes to replicas.max (2) and stays
# `timeouts.boot`: how long a node whose cloud-init failed is waited for; a third of the product's default
# (600 s), so that the failure shows within the module's other waits. A healthy node of the lab's image (Docker
# baked in) answered within about 1 min of Running on a quiet machine, about 3 min at a load average of 50.
BOOT_TIMEOUT = 200
COUNTS: dict[str, dict[str, Any]] = {}  # fault -> figures, printed per test and at the end


@dataclass
class Env:
    lab: Lab
    controller: ControllerProcess
    load: LoadGenerator
    journal: Journal
    log_offset: int = 0  # where the burst's requests start in haproxy.log
    failed: dict[str, str] = field(default_factory=dict)  # fault -> the instance it failed (released at the end)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root: Path = tmp_path_factory.mktemp("node-faults") / "lab"
    with running_lab(root, LabSettings(boot_delay=1.0)) as lab, running_controller(lab) as controller:
        text = lab.config_path.read_text()
        text, n = re.subn(r"boot: \d+s", f"boot: {BOOT_TIMEOUT}s", text)
        assert n == 1, "the lab's config has no boot time-out to shorten"
        lab.config_path.write_text(text)
        assert lab.emulator is not None and lab.emulator.nodes is not None
        lab.emulator.nodes.inject({"kind": "cloud-init-fail", "next": 1})  # the burst's first launch
        load = LoadGenerator(lab.url)
        try:
            controller.start(timeout=120)  # a loaded machine: the import alone can take 30 s
            e = Env(lab, controller, load, Journal(lab.root / "state.db"), log_offset=log_size(lab))
            load.set_clients(CLIENTS)
            nodes = lab.emulator.nodes
            wait_for("the burst's first launch", lambda: any("cloud-init-fail" in n["faults"]
                                                             for n in nodes.snapshot().values()), timeout=300)
            e.failed["cloud-init-fail"] = next(i for i, n in nodes.snapshot().items() if "cloud-init-fail" in n["faults"])
            yield e
        finally:
            load.stop()
            for fault, figures in COUNTS.items():
                print(f"node fault {fault}: {figures}")
        assert controller.terminate() == 0, controller.log()
        assert "Traceback" not in controller.log(20_000)
    assert lab.cloud_containers() == [], "lab left containers behind"


# ---------------------------------------------------------------------------- reading the outside world


def serving(env: Env) -> list[Any]:
    return env.journal.replicas(("serving",))


def events(env: Env) -> list[dict[str, Any]]:
    body = httpx.get(f"{env.lab.status_url}/v1/events", params={"limit": 500}, timeout=5, trust_env=False).json()
    return list(body["events"])


def node_machines(lab: Lab, instance_id: str | None = None) -> list[Any]:
    """The emulator's machines (containers on the lab engine), all of them or one instance's."""
    assert lab.docker is not None and lab.emulator is not None and lab.emulator.nodes is not None
    label = f"{LABEL_INSTANCE}={instance_id}" if instance_id else f"{LABEL_SCOPE}={lab.emulator.nodes.scope}"
    return list(lab.docker.containers.list(all=True, filters={"label": label}, ignore_removed=True))


def released(env: Env, instance_id: str) -> bool:
    """The instance is gone everywhere: the emulator's live instances, its machine, the journal."""
    row = env.journal._rows("SELECT released_at FROM instances WHERE id = ?", instance_id)
    return (instance_id not in {i["id"] for i in env.lab.live_instances()} and not node_machines(env.lab, instance_id)
            and bool(row) and row[0]["released_at"] is not None)




# ---------------------------------------------------------------------------- the faults


def a_replica_serving(env: Env, timeout: float = 900) -> Any:
    """A replica of the burst serving, in HAProxy."""
    wait_for("a cloud replica serving", lambda: bool(serving(env)) and bool(env.lab.cloud_servers()), timeout=timeout)
    return serving(env)[0]


def fail_serving_node(env: Env, kind: str) -> None:
    """Inject ``kind`` on the node of a serving replica: it is failed, out of HAProxy, released, replaced, and no
    request fails but those in flight on it."""
    lab, journal = env.lab, env.journal
    assert lab.emulator is not None and lab.emulator.nodes is not None
    victim = a_replica_serving(env)
    server, instance = victim["server_name"], victim["instance_id"]
    before, offset = env.load.snapshot(), log_size(lab)
    t0 = time.time()
    lab.emulator.nodes.inject({"kind": kind, "instance_id": instance})
    t1 = time.time()  # the fault is done by now: a request connected to the node later was connected after it
    env.failed[kind] = instance

    wait_for(f"replica {victim['id']} failed", lambda: any(
        r["id"] == victim["id"] and r["failure"] for r in journal.replicas()), timeout=120)
    detected = time.time() - t1
    wait_for(f"{server} out of HAProxy", lambda: server not in lab.cloud_servers(), timeout=120)
    removed = time.time() - t1
    # replaced: a replica planned after the failure, on another instance, serves
    wait_for("its replacement serving", lambda: any(r["created_at"] > victim["created_at"] and r["instance_id"] not in
                                                    (instance, None) for r in serving(env)), timeout=900)
    replaced = time.time() - t1
    # released once drain.stop_timeout has passed, the stop unable to reach it (docs/daemon.md "Node faults")
    wait_for(f"{instance} released", lambda: released(env, instance), timeout=300)
    [row] = [r for r in journal.replicas() if r["id"] == victim["id"]]
    assert "health check failures" in row["failure"] and row["state"] == "gone", dict(row)
    kinds = [(e["kind"], e["message"]) for e in events(env)]
    assert any(k == "stop-skipped" and victim["id"] in m for k, m in kinds), kinds
    check_requests(env, kind, server, t0, t1, before, env.load.snapshot(), offset, detected_s=round(detected, 1),
                   removed_s=round(removed, 1), replaced_s=round(replaced, 1),
                   released_s=round(row["gone_at"] - t1, 1))


def check_requests(env: Env, kind: str, server: str, t0: float, t1: float, before: LoadStats, after: LoadStats,
                   offset: int, **figures: Any) -> None:
    """Every failed request was in flight on ``server`` when it died; print the counts."""
    failed = after.failed - before.failed
    logged = haproxy_log(env.lab, offset)
    # in flight when it died: connected to it before the fault was done, still open when the fault began
    in_flight = [r for r in logged if r.server == server and r.connected is not None and r.connected <= t1
                 and r.finished >= t0]
    bad = [r for r in logged if r.failed]
    # open on the node when it died (the first failure seen): the figure the failures are bounded by
    died = min((r.finished for r in bad if r.server == server), default=t1)
    open_at_death = [r for r in in_flight if r.connected is not None and r.connected <= died <= r.finished]
    COUNTS[kind] = {"failed": failed, "open_on_node_when_it_died": len(open_at_death),
                    "retried_elsewhere": sum(r.retries.startswith("+") for r in logged),
                    "sent_again_by_clients": after.retried - before.retried,
                    "requests": after.ok + after.failed - before.ok - before.failed,
                    "errors": dict(after.errors - before.errors), **figures}
    print(f"node fault {kind}: {COUNTS[kind]}")
    assert failed == len(bad), (failed, bad, env.load.failures[-20:])
    strays = [r for r in bad if r not in in_flight]
    assert not strays, f"requests failed that were not in flight on {server} when it died: {strays}"
    # the fault is real: nothing connected to the node after it answered
    late = [r for r in logged if r.server == server and not r.failed and r.connected is not None and r.connected > t1]
    assert not late, f"{server} still answered after {kind}: {late[:3]}"


def test_docker_engine_dies_after_admission(env: Env) -> None:
    fail_serving_node(env, "docker-dies")


def test_network_drops(env: Env) -> None:
    fail_serving_node(env, "network-drop")


def test_cloud_init_fail_during_the_burst(env: Env) -> None:
    """The burst's first node booted a UserData that fails: its Docker Engine never answers, the controller
    fails it at the boot timeout, releases it and launches a replacement. It never served: no request was
    ever sent to it, and none failed but those of the two faults above."""
    lab, journal = env.lab, env.journal
    assert lab.emulator is not None and lab.emulator.nodes is not None
    bad = env.failed["cloud-init-fail"]
    wait_for(f"the replica on {bad} failed", lambda: any(
        r["instance_id"] == bad and r["failure"] for r in journal.replicas()), timeout=BOOT_TIMEOUT + 300)
    [row] = [r for r in journal.replicas() if r["instance_id"] == bad]
    assert "did not boot within" in row["failure"] and row["server_name"] is None, dict(row)  # never admitted
    wait_for(f"{bad} released", lambda: released(env, bad), timeout=120)
    wait_for("two replicas serving", lambda: len(serving(env)) == 2 and len(lab.cloud_servers()) == 2, timeout=900)
    kinds = [(e["kind"], e["message"]) for e in events(env)]
    assert any(k == "replica-failed" and row["id"] in m for k, m in kinds), kinds
    assert any(k == "release" and bad in m for k, m in kinds), kinds
    logged = haproxy_log(lab, env.log_offset)
    servers = {r.server for r in logged}
    assert not any(bad in s or row["id"] in s for s in servers), servers
    faulted = {x["server_name"] for x in journal.replicas() if x["instance_id"] in env.failed.values()}
    others = [r for r in logged if r.failed and r.server not in faulted]  # the other faults' are checked above
    COUNTS["cloud-init-fail"] = {"failed": len(others), "open_on_node_when_it_died": 0,
                                 "failed_at_s": round(row["releasing_at"] - row["booting_at"], 1)}
    print(f"node fault cloud-init-fail: {COUNTS['cloud-init-fail']}")
    assert not others, others


def test_every_failed_node_released_and_the_drain_leaves_nothing(env: Env) -> None:
    lab = env.lab
    for kind, instance in env.failed.items():
        wait_for(f"{instance} ({kind}) released", lambda i=instance: released(env, i), timeout=BOOT_TIMEOUT + 120)
        print(f"node fault {kind}: {instance} released")
    before = env.load.snapshot()
    env.load.set_clients(1)
    wait_for("the drain", lambda: not env.journal.live_replicas() and not lab.live_instances()
             and not lab.cloud_servers(), timeout=300)
    wait_for("every node machine removed", lambda: not node_machines(lab), timeout=120)
    assert env.journal.live_instances() == set()
    assert lab.emulator is not None and lab.emulator.nodes is not None and lab.emulator.nodes.snapshot() == {}
    after = env.load.snapshot()
    assert (after.failed, after.retried) == (before.failed, before.retried), env.load.failures[-10:]
