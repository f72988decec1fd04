"""The warm pool and the automatic bake on booted nodes, end to end: `burstctl run` as its own process against
the lab (ECS emulator with booted nodes over the real SDK, registries, HAProxy), a policy with
``warm_pool.size: 1``, ``bake.auto`` and one replica, real load through HAProxy. One story, one lab (booted
nodes cost minutes each):

0. at its start the daemon bakes a node image for the workload's spec hash by itself (a builder node, released
   after), once;
1. a burst launches a node from that image; the scale-in stops it into the pool (StopInstances, StoppedMode=StopCharging: the
   emulator says Stopped/StopCharging, the node's machine is stopped, its Docker disk kept); the controller is
   SIGKILLed while the park is journaled and not finished, and the restart finishes it: the node is in the
   pool once;
2. a new burst starts that node again (StartInstances, no second RunInstances), the controller SIGKILLed while
   the wake is pending and restarted; the replica serves with the image already on the node's disk (its start
   event pulled nothing);
3. the scale-in parks it again, and the policy's removal releases the pool: no instance left.

No request fails throughout. StopInstances and StartInstances answer after an injected latency of a few
seconds, which keeps the park and wake intents pending long enough to kill the controller inside them (the
emulator acts after the delay, so the call the controller made may or may not have landed before its
restart: both are legal and the restart must cope with either)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.loop.bake import TAG_BAKE
from lab.emulator.nodes import LABEL_INSTANCE
from lab.lab import Lab, LabSettings
from lab.loadgen import LoadGenerator
from tests.reliability.harness import Journal
from tests.support.controller_process import ControllerProcess, running_controller, running_lab, wait_for

pytestmark = pytest.mark.timeout(1200)  # booted nodes: minutes each on a shared machine

CLIENTS = 16  # HAProxy sessions well above scale_out_above (6): a burst to replicas.max (1)
API_LATENCY = 3.0  # seconds before the emulator answers (and acts on) StopInstances and StartInstances


def _policy(lab: Lab) -> str:
    return lab.policy_yaml() + "warm_pool: {size: 1, max_age: 1h}\nbake: {auto: true, keep: 1}\n"


def pending(journal: Journal, kind: str) -> bool:
    return any(i["state"] == "pending" for i in journal.intents(kind).values())


def warm(journal: Journal) -> list[str]:
    return [r["id"] for r in journal._rows("SELECT id FROM instances WHERE warm_since IS NOT NULL "
                                           "AND released_at IS NULL")]


def instance(lab: Lab, iid: str) -> dict[str, Any]:
    found = [i for i in lab.live_instances() if i["id"] == iid]
    return found[0] if found else {}


def machines(lab: Lab, iid: str) -> list[Any]:
    assert lab.docker is not None
    return list(lab.docker.containers.list(all=True, filters={"label": f"{LABEL_INSTANCE}={iid}"},
                                           ignore_removed=True))


def events(lab: Lab) -> list[dict[str, Any]]:
    body = httpx.get(f"{lab.status_url}/v1/events", params={"limit": 500}, timeout=5, trust_env=False).json()
    return sorted(body["events"], key=lambda e: int(e["id"]))  # oldest first


def parked(lab: Lab, journal: Journal, iid: str) -> bool:
    """``iid`` is the pool's only node in the journal, stopped in economical mode, its machine down."""
    inst = instance(lab, iid)
    return (warm(journal) == [iid] and not pending(journal, "park") and inst.get("status") == "Stopped"
            and inst.get("stopped_mode") == "StopCharging" and not lab.cloud_servers()
            and all(m.status == "exited" for m in machines(lab, iid)))


def serving(lab: Lab, journal: Journal) -> bool:
    return bool(journal.replicas(("serving",))) and bool(lab.cloud_servers())


def launched(lab: Lab, *, builders: bool) -> list[str]:
    """Every instance the emulator ever launched for the lab: the bake's builders, or the others."""
    assert lab.emulator is not None
    with lab.emulator.state.lock:
        recs = list(lab.emulator.state.instances.values())
    return [r.id for r in recs if bool(r.tags.get(TAG_BAKE)) == builders]


def kill_and_restart(controller: ControllerProcess, journal: Journal, kind: str) -> None:
    wait_for(f"a pending {kind} intent", lambda: pending(journal, kind), timeout=300)
    controller.kill()
    assert pending(journal, kind), f"the {kind} finished before the kill"
    controller.start()


def test_warm_pool_parks_wakes_and_releases_across_sigkills(tmp_path: Path) -> None:
    settings = LabSettings(boot_delay=1.0, max_replicas=1)
    with running_lab(tmp_path / "lab", settings, policy=_policy) as lab, running_controller(lab) as controller:
        assert lab.emulator is not None and lab.docker is not None
        lab.emulator.set_faults(latency_s=API_LATENCY, actions=["StopInstances", "StartInstances"])
        journal = Journal(lab.root / "state.db")
        load = LoadGenerator(lab.url)
        try:
            controller.start()
            # 0. the automatic bake of the workload's spec, before any load
            wait_for("the automatic bake", lambda: any(e["kind"] in ("bake", "bake-failed") for e in events(lab)),
                     timeout=600)
            [baked] = [e for e in events(lab) if e["kind"] in ("bake", "bake-failed")]
            assert baked["kind"] == "bake", baked
            image = baked["details"]["image"]
            [builder] = launched(lab, builders=True)
            wait_for("the builder released", lambda: builder not in {i["id"] for i in lab.live_instances()}, 60)
            [bake_intent] = journal.intents("bake").values()
            assert bake_intent["state"] == "done" and bake_intent["target"] == baked["details"]["spec_hash"]

            # 1. a burst from the baked image, then the scale-in parks its node (SIGKILL mid-park)
            load.set_clients(CLIENTS)
            wait_for("a cloud replica serving", lambda: serving(lab, journal), timeout=600)
            [iid] = [i["id"] for i in lab.live_instances()]
            assert any(e["kind"] == "launch" and iid in e["message"] and image in e["message"] for e in events(lab))
            load.set_clients(1)
            kill_and_restart(controller, journal, "park")
            wait_for("the node parked", lambda: parked(lab, journal, iid), timeout=180)
            [machine] = machines(lab, iid)
            volumes = [m.get("Name") for m in machine.attrs["Mounts"] if m.get("Destination") == "/var/lib/docker"]
            assert volumes and lab.docker.volumes.get(volumes[0]), "the node's Docker disk is gone"
            wait_for("the pool in the status", lambda: controller.status()["policies"][0]["warm_pool"]["warm"] == 1,
                     timeout=10)
            scrape = httpx.get(f"{lab.status_url}/metrics", timeout=5, trust_env=False).text
            assert f'burst_warm_nodes{{policy="{lab.policy_name}"}} 1.0' in scrape, scrape[-2000:]

            # 2. a new burst wakes it (SIGKILL mid-wake): StartInstances, no RunInstances
            load.set_clients(CLIENTS)
            kill_and_restart(controller, journal, "wake")
            wait_for("the woken node serving", lambda: serving(lab, journal), timeout=600)
            assert [i["id"] for i in lab.live_instances()] == [iid]
            assert launched(lab, builders=False) == [iid]  # ever: the wake launched nothing
            calls = lab.emulator.calls()
            assert calls.get("RunInstances") == 2 and calls.get("StartInstances", 0) >= 1, calls  # builder, node
            assert warm(journal) == []
            starts = [e for e in events(lab) if e["kind"] == "start" and ": container " in e["message"]]
            assert len(starts) == 2 and all(iid in e["message"] for e in starts), starts
            # the image on its disk: no pull, neither on the baked node nor on the woken one
            assert all(e["details"].get("pull_s") is None and "image pulled" not in e["message"] for e in starts)
            assert any(e["kind"] == "wake" and iid in e["message"] and "started warm node" in e["message"]
                       for e in events(lab))

            # 3. parked again, then the policy's removal releases the pool
            load.set_clients(1)
            wait_for("the node parked again", lambda: parked(lab, journal, iid), timeout=180)
            os.remove(lab.policy_path)
            assert controller.proc is not None
            controller.proc.send_signal(signal.SIGHUP)
            wait_for("the pool released", lambda: not lab.live_instances() and not machines(lab, iid)
                     and not journal.live_instances(), timeout=180)
            stats = load.snapshot()
        finally:
            load.stop()
        kinds = [e["kind"] for e in events(lab)]
        print(f"warm pool e2e: {stats.ok} requests answered, {stats.failed} failed; "
              f"emulator calls {lab.emulator.calls()}; events {kinds}")
        assert stats.failed == 0 and not stats.errors and stats.retried == 0, (stats.errors, stats.retried)
        assert kinds.count("park") == 2 and kinds.count("warm-expired") == 1, kinds
        assert kinds.count("bake-started") == 1 and kinds.count("bake") == 1, kinds  # once per spec hash, restarts too
        assert controller.terminate() == 0, controller.log()
        assert "Traceback" not in controller.log(50_000)
