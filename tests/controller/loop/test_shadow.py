"""Shadow mode (``mode: shadow``, docs/daemon.md "Shadow mode"): the daemon's rounds with the real ECS
emulator behind the real EcsComputePool (the SDK's calls recorded by the emulator) and the policy engine's
own decisions; the on-prem side (registry, node runtime, load balancer, health, the metric) are the
in-memory fakes, whose calls are counted. Under load above the threshold a shadow policy records what it
would do (decision, event, status, metrics) and nothing reaches ECS, the registry or the load balancer; an
edit to active and a reload launch at the next evaluation; back to shadow drains and releases the replicas.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from controller import metrics
from controller.daemon import Daemon
from controller.loop.edges import LoopOptions
from controller.store.models import ReplicaState
from controller.store.state import StateStore, sqlite_url
from lab.emulator.ecs import EcsEmulator
from policies.loader import load_policy_text
from tests.controller.fakes import FakeMetrics, World, policy_dict
from tests.controller.test_daemon import wait_for
from tests.controller.loop.test_loop import make_env
from tests.fixtures_ecs import REGION

pytestmark = pytest.mark.timeout(120)

OPTIONS = LoopOptions(controller_id="dc1", sample_interval=0.1, evaluate_interval=0.2, step_interval=0.1,
                      reconcile_interval=0.5, replicate_interval=0.5, gc_interval=0.3, reload_interval=0.2,
                      boot_timeout=30, start_timeout=30, orphan_grace=60)


def write_policy(d: Path, mode: str | None) -> None:
    data = policy_dict("web")
    if mode is not None:
        data["mode"] = mode
    data["workload"]["health"] = {"path": "/", "interval": "0.1s", "timeout": "0.05s", "passes": 1, "failures": 2}
    data["cloud"] = {"region": REGION, "zones": [f"{REGION}-a"], "instance_types": ["ecs.g7.large"],
                     "image_id": "img-1", "vswitches": {f"{REGION}-a": "vsw-a"}, "security_group": "sg-1"}
    data["budget"]["prices"] = {"ecs.g7.large": 0.62}
    path = d / "web.yaml"
    with path.open("w") as fh:
        YAML().dump(data, fh)
    # a reload notices name, size or mtime: two writes in one mtime tick with the same size would look the same
    stamp = time.time_ns() + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


class Harness:
    def __init__(self, tmp: Path, emulator: EcsEmulator, pool: Any) -> None:
        self.dir = tmp / "policies"
        self.dir.mkdir()
        self.url = sqlite_url(tmp / "state.db")
        self.emulator = emulator
        self.world = World(time.time)
        self.world.edges.compute = pool  # the real pool, through the SDK, to the emulator
        self.load = FakeMetrics()
        self.load.value = 95.0  # above the policy's scale_out_above 75
        self.world.edges.metrics = lambda p: self.load
        self.daemon: Daemon | None = None

    def start(self, options: LoopOptions = OPTIONS) -> Daemon:
        self.daemon = Daemon(options=options, store=StateStore(self.url), edges=self.world.edges,
                             policies_dir=self.dir)
        self.daemon.start()
        return self.daemon

    def runs(self) -> int:
        return self.emulator.calls().get("RunInstances", 0)

    def events(self, kind: str) -> list[Any]:
        assert self.daemon is not None
        return [e for e in self.daemon.events(cursor=None, limit=500, policy="web").events if e.kind == kind]

    def close(self) -> None:
        if self.daemon is not None:
            if self.daemon.scheduler.running:
                self.daemon.stop(timeout=10)
            self.daemon.store.close()


@pytest.fixture
def h(tmp_path: Path, ecs_emulator: EcsEmulator, make_ecs_pool: Any) -> Iterator[Harness]:
    harness = Harness(tmp_path, ecs_emulator, make_ecs_pool(ecs_emulator))
    yield harness
    harness.close()


def _sample(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(f"burst_{name}", labels)


def test_shadow_decides_and_records_but_never_acts_then_active_launches_and_shadow_drains(h: Harness) -> None:
    write_policy(h.dir, "shadow")
    decided_out = _sample("decisions_total", policy="web", direction="out") or 0.0  # a process-wide counter
    d = h.start()

    # under load above the threshold: what it would do, recorded everywhere ops look
    wait_for("a shadow event", lambda: bool(h.events("shadow")), timeout=60)
    [event] = h.events("shadow")
    assert event.message.startswith("would scale out to 1 (0 -> 1), shadow mode: nothing launched or drained: ")
    assert event.details["would_launch"] == 1
    time.sleep(1.5)  # ~7 evaluations and 3 replicate jobs: none may act
    [web] = d.status().policies
    assert web.mode == "shadow"
    assert web.decision is not None and web.decision.desired == 1 and web.decision.details["mode"] == "shadow"
    # the would-be fleet holds the cooldown like an active one: still one shadow scale-out, not one a tick
    assert web.decision.direction == "hold" and "scale-out cooldown" in web.decision.reason
    assert len(h.events("shadow")) == 1
    assert web.replicas == {} and web.instances == [] and web.spend_per_hour == 0.0 and web.spent_today == 0.0
    assert h.runs() == 0 and h.emulator.live_instances() == []
    assert h.world.registry.copies == 0 and h.world.lb.servers == {} and h.world.runtime.starts == 0
    assert not h.events("scale-out") and not h.events("replicate") and not h.events("launch")
    assert d.store.live_replicas("web") == []
    metrics.observe_status(d.status())
    assert _sample("policy_shadow", policy="web") == 1.0
    assert _sample("desired_replicas", policy="web") == 1.0
    assert (_sample("decisions_total", policy="web", direction="out") or 0.0) > decided_out

    # the edit to active, and a reload (the SIGHUP path): it acts on the next evaluation (the shadow's
    # would-be scale-out a second ago set no cooldown on the real fleet)
    write_policy(h.dir, "active")
    d.request_reload()
    wait_for("RunInstances reached ECS", lambda: h.runs() >= 1, timeout=60)
    wait_for("a replica serving", lambda: d.replica_counts("web").get("serving", 0) == 1, timeout=60)
    [mode] = h.events("mode")
    assert mode.message == "policy web is now active: it acts on its decisions from the next evaluation"
    assert len(h.emulator.live_instances()) == 1 and h.world.registry.copies >= 1
    [web] = d.status().policies
    assert web.mode == "active" and web.spend_per_hour > 0
    metrics.observe_status(d.status())
    assert _sample("policy_shadow", policy="web") == 0.0

    # back to shadow with replicas running: they are drained and released, and nothing new starts
    runs = h.runs()
    write_policy(h.dir, "shadow")
    d.request_reload()
    wait_for("the replica released", lambda: h.emulator.live_instances() == [] and d.replica_counts("web") == {},
             timeout=60)
    drained = [e for e in h.events("scale-in") if "shadow mode" in e.message]
    assert len(drained) == 1 and len(drained[0].details["replicas"]) == 1
    time.sleep(1.0)
    assert h.runs() == runs and d.replica_counts("web") == {}
    assert len(h.events("shadow")) == 2  # deciding again, from an empty would-be fleet
    assert [e.details["mode"] for e in h.events("mode")] == ["active", "shadow"]
    assert d.status().policies[0].mode == "shadow"


def test_a_mode_switch_is_evaluated_at_the_next_round_not_at_the_next_interval(h: Harness) -> None:
    write_policy(h.dir, "shadow")
    d = h.start(dataclasses.replace(OPTIONS, evaluate_interval=3600.0))  # one evaluation at start, then none
    # the evaluation at start (before the first sample: it holds), then a sample
    wait_for("the first evaluation", lambda: d.store.last_decision("web") is not None, timeout=60)
    wait_for("a sample", lambda: d.runtimes["web"].last_observation is not None, timeout=60)
    write_policy(h.dir, "active")
    d.request_reload()
    wait_for("RunInstances reached ECS", lambda: h.runs() >= 1, timeout=60)
    write_policy(h.dir, "shadow")
    d.request_reload()
    wait_for("the replica drained", lambda: any("shadow mode" in e.message for e in h.events("scale-in")),
             timeout=60)


def test_the_mode_field_is_checked_like_any_other(tmp_path: Path) -> None:
    data = policy_dict("web")
    data["mode"] = "shadw"
    path = tmp_path / "web.yaml"
    with path.open("w") as fh:
        YAML().dump(data, fh)
    result = load_policy_text(path.read_text(), str(path))
    assert not result.policies
    [problem] = result.problems
    text = str(problem)
    line = path.read_text().splitlines().index("mode: shadw") + 1
    assert text == (f"{path}:{line}:7: mode: expected one of active, shadow; got 'shadw'; did you mean 'shadow'?")
    # the default is active
    data.pop("mode")
    with path.open("w") as fh:
        YAML().dump(data, fh)
    [policy] = load_policy_text(path.read_text(), str(path)).policies.values()
    assert policy.mode == "active"


def test_the_would_be_fleet_decides_step_by_step_as_the_active_policy_does(tmp_path: Path) -> None:
    """The same load through the same rounds, once active (the fakes launch and drain) and once in shadow:
    every evaluation's desired count, direction and reason agree (the threshold strategy reads the fleet's
    size, not its load share), cooldowns, step limits and max included; the shadow one launched nothing.
    The fakes' fleet is what moves in the active run; the shadow's is ``controller.loop.shadow.ShadowFleet``."""
    # 95: above 75 (out); 60: between (hold); 20: below 40 (in); 10 s apart, cooldowns 30 s out and 60 s in
    loads = [95.0] * 12 + [60.0] * 3 + [20.0] * 20
    runs: dict[str, list[tuple[int, str, str]]] = {}
    for mode in ("active", "shadow"):
        (tmp_path / mode).mkdir()
        env = make_env(tmp_path / mode, engine=True, mode=mode, replicas={"min": 0, "max": 3, "max_step_up": 2,
                                                                          "max_step_down": 1})
        try:
            seen = []
            for value in loads:
                env.world.metrics.value = value
                env.tick(dt=10)
                last = env.store.last_decision("web")
                assert last is not None
                seen.append((last.desired, last.direction, last.reason))
            runs[mode] = seen
            if mode == "shadow":
                assert env.world.compute.launch_calls == 0 and env.world.registry.copies == 0
                assert env.store.live_replicas("web") == [] and env.world.lb.servers == {}
                shadow_events = [e.message for e in env.store.events_after(cursor=None, limit=100, policy="web")[0]
                                 if e.kind == "shadow"]
        finally:
            env.close()
    assert runs["shadow"] == runs["active"]
    desired = [d for d, _, _ in runs["shadow"]]
    assert max(desired) == 3 and desired[-1] == 0  # it went to max and back: the run exercised both ways
    assert [m.split(",")[0] for m in shadow_events] == [
        "would scale out to 1 (0 -> 1)", "would scale out to 2 (1 -> 2)", "would scale out to 3 (2 -> 3)",
        "would scale in to 2 (3 -> 2)", "would scale in to 1 (2 -> 1)", "would scale in to 0 (1 -> 0)"]


def test_a_replica_planned_anyway_is_neither_copied_nor_launched_in_shadow(tmp_path: Path) -> None:
    """A second line, like the budget guard at launch: whatever planned a replica of a shadow policy (a bug,
    a journal from an active spell), its replicating and launching steps refuse and it is released."""
    env = make_env(tmp_path, mode="shadow")
    try:
        [(copied, _), (launched, _)] = env.store.plan_replicas("web", 2, spec_hash="", reason="a bug elsewhere")
        env.store.transition(launched.id, ReplicaState.REPLICATING)
        env.store.transition(launched.id, ReplicaState.LAUNCHING)
        for r in env.store.live_replicas("web"):
            env.rt.lifecycle.advance(r)
        assert env.world.registry.copies == 0 and env.world.compute.launch_calls == 0
        assert env.store.live_replicas("web") == []
        gone = {r.id: r.failure for r in env.store.replicas("web")}
        assert "shadow mode: no image is copied" in (gone[copied.id] or "")
        assert "launch refused: the policy is in shadow mode" in (gone[launched.id] or "")
    finally:
        env.close()
