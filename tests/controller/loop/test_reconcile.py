"""Reconcile on fakes: a launch that landed before a crash is adopted, an instance nobody explains is an
orphan released after the grace, a vanished instance sends its replica down the failure path, load-balancer
servers with our name and no replica are removed, lost ones are put back."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from controller.loop.bake import TAG_BAKE
from controller.loop.reconcile import Reconciler
from controller.loop.steps import launch_spec
from controller.ports import Server
from controller.store.models import IntentKind, IntentState, ReplicaState
from tests.controller.loop.test_loop import OPTIONS, Env, make_env, serve_one

S = ReplicaState


@pytest.fixture
def env(tmp_path) -> Iterator[Env]:
    e = make_env(tmp_path)
    yield e
    e.close()


def reconciler(env: Env) -> Reconciler:
    return Reconciler(env.store, env.world.edges, OPTIONS, env.clock)


def test_a_launch_without_its_outcome_is_adopted(env: Env) -> None:
    [(replica, intent)] = env.store.plan_replicas("web", 1, spec_hash="", reason="r")
    env.store.transition(replica.id, S.LAUNCHING)
    [inst] = env.world.compute.launch(launch_spec(env.rt.policy, "dc1", replica.id, intent.id, ""), 1, intent.token)
    report = reconciler(env).run({"web": env.rt})
    assert report.adopted == [inst.id]
    adopted = env.store.replica(replica.id)
    assert adopted is not None and adopted.state == S.BOOTING and adopted.instance_id == inst.id
    assert env.store.intent(intent.id).state == IntentState.DONE  # type: ignore[union-attr]
    env.want["n"] = 1
    env.tick(dt=5)
    assert env.world.compute.launch_calls == 1  # nothing relaunched
    assert any(e.kind == "adopt" for e in env.store.events()[0])


def test_orphans_are_released_after_the_grace_only(env: Env) -> None:
    spec = launch_spec(env.rt.policy, "dc1", "r-unknown", "l-unknown", "")
    [orphan] = env.world.compute.launch(spec, 1, "l-unknown")
    r = reconciler(env)
    report = r.run({"web": env.rt})
    assert report.orphans_waiting == [orphan.id] and orphan.id in env.world.compute.instances
    env.clock.advance(101)  # orphan_grace 100s
    report = r.run({"web": env.rt})
    assert report.orphans_released == [orphan.id] and env.world.compute.instances == {}
    kinds = [e.kind for e in env.store.events()[0]]
    assert "orphan" in kinds and "orphan-released" in kinds


def test_the_builder_of_an_automatic_bake_in_flight_is_no_orphan(env: Env) -> None:
    """A builder (tagged ``burst-controller:bake``) is left to its bake while the policy's bake intent is pending
    (controller/loop/auto_bake.py), however long it boots; once the intent ends it is an orphan like any."""
    spec = launch_spec(env.rt.policy, "dc1", "bake-1", "bake-1", "")
    [builder] = env.world.compute.launch(dataclasses.replace(spec, tags={**spec.tags, TAG_BAKE: "web"}), 1, "bake-1")
    intent = env.store.pool_intent("web", IntentKind.BAKE, target="spec-a")
    r = reconciler(env)
    env.clock.advance(1000)  # far past orphan_grace (100 s)
    report = r.run({"web": env.rt})
    assert report.orphans_released == report.orphans_waiting == [] and builder.id in env.world.compute.instances
    env.store.fail(intent.id, "CreateFailed")
    report = r.run({"web": env.rt})  # its launch is long past the grace
    assert report.orphans_released == [builder.id] and env.world.compute.instances == {}


def test_another_controllers_instances_are_left_alone(env: Env) -> None:
    spec = launch_spec(env.rt.policy, "someone-else", "r", "l", "")
    env.world.compute.launch(spec, 1, "l")
    env.clock.advance(1000)
    report = reconciler(env).run({"web": env.rt})
    assert report.orphans_released == [] and len(env.world.compute.instances) == 1


def test_a_vanished_instance_fails_its_replica(env: Env) -> None:
    serve_one(env)
    [r] = env.store.live_replicas("web")
    env.world.compute.instances.clear()  # deleted behind our back
    report = reconciler(env).run({"web": env.rt})
    assert report.vanished == [r.instance_id]
    moved = env.store.replica(r.id)
    assert moved is not None and moved.state == S.DRAINING and "disappeared" in (moved.failure or "")
    env.want["n"] = 0
    env.tick(dt=1)
    env.tick(dt=1.5)
    assert env.store.replica(r.id).state == S.GONE  # type: ignore[union-attr]
    assert env.world.lb.servers == {}


def test_stray_servers_removed_and_lost_servers_restored(env: Env) -> None:
    serve_one(env)
    [r] = env.store.live_replicas("web")
    env.world.lb.add("web", Server("dc1-web-rstray", "127.0.1.99", 80))
    env.world.lb.add("web", Server("onprem", "127.0.0.1", 80))  # not ours: never touched
    del env.world.lb.servers[("web", r.server_name)]  # e.g. an HAProxy reload forgot it
    report = reconciler(env).run({"web": env.rt})
    assert report.servers_removed == ["dc1-web-rstray"] and report.servers_restored == [r.server_name]
    assert {s.name for s in env.world.lb.list("web")} == {"onprem", r.server_name}
