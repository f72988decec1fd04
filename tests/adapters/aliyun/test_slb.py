"""SlbLoadBalancer through the real aliyun-python-sdk-slb against the local Alibaba RPC emulator, with the
SLB handlers registered on the same server as the ECS emulator (backends must be its instances)."""

from __future__ import annotations

import random

import pytest

from adapters.aliyun.credentials import CloudCredentials, StaticCredentials
from adapters.aliyun.slb import SlbLoadBalancer, SlbSettings
from controller.errors import AuthError, NotFoundError, PermanentError
from controller.ports import TAG_CONTROLLER, TAG_POLICY, LaunchSpec, Server
from lab.emulator.slb import SlbState, install_slb
from tests.fixtures_ecs import KEY_ID, KEY_SECRET, REGION

SPEC = LaunchSpec(region=REGION, instance_types=("ecs.g7.large",), zones=(f"{REGION}-a",), image_id="img-1",
                  security_group_id="sg-1", vswitches={f"{REGION}-a": "vsw-a"},
                  tags={TAG_CONTROLLER: "dc1", TAG_POLICY: "web"})


@pytest.fixture
def slb_world(ecs_emulator, make_ecs_pool):
    state = SlbState(instance_exists=lambda iid: any(i["id"] == iid for i in ecs_emulator.live_instances()))
    install_slb(ecs_emulator.server, state)
    lb_id = state.create(REGION, "web")
    pool = make_ecs_pool(ecs_emulator)
    instances = pool.launch(SPEC, 25, "slb-test")
    return ecs_emulator, state, lb_id, instances


def _slb(emu, clock=None, secret=KEY_SECRET, drain_period=30.0) -> SlbLoadBalancer:
    settings = SlbSettings(region=REGION, credentials=StaticCredentials(CloudCredentials(KEY_ID, secret)),
                           endpoint=emu.url, connect_timeout=2, read_timeout=3, max_attempts=6, backoff_base=0.01,
                           backoff_cap=0.02, drain_period=drain_period, rng=random.Random(1))
    return SlbLoadBalancer(settings, clock=clock) if clock else SlbLoadBalancer(settings)


def _servers(instances):
    return [Server(name=f"dc1-web-r{n}", address=i.private_ip, port=80, instance_id=i.id)
            for n, i in enumerate(instances)]


def test_add_drain_remove_in_batches_of_20(slb_world):
    emu, state, lb_id, instances = slb_world
    now = [100.0]
    slb = _slb(emu, clock=lambda: now[0])
    servers = _servers(instances)
    emu.server.reset_calls()

    assert slb.add_many(lb_id, servers) == [s.name for s in servers]
    assert emu.calls()["AddBackendServers"] == 2  # 25 servers: 20 + 5
    listed = {s.name: s for s in slb.list(lb_id)}
    assert set(listed) == {s.name for s in servers}
    assert listed["dc1-web-r3"].instance_id == instances[3].id and listed["dc1-web-r3"].state == "ready"
    assert slb.add_many(lb_id, servers) == []  # idempotent: nothing missing
    slb.add(lb_id, servers[0])
    assert emu.calls()["AddBackendServers"] == 2

    # drain = weight 0; sessions unknown to SLB: busy until the drain period has passed
    assert slb.sessions(lb_id, "dc1-web-r3") == 1
    slb.drain(lb_id, "dc1-web-r3")
    backends = {b["ServerId"]: b for b in state.snapshot()["load_balancers"][0]["BackendServers"]}
    assert backends[instances[3].id]["Weight"] == 0 and backends[instances[4].id]["Weight"] == 100
    assert {s.name: s.state for s in slb.list(lb_id)}["dc1-web-r3"] == "drain"
    assert slb.sessions(lb_id, "dc1-web-r3") == 1
    now[0] += 29
    assert slb.sessions(lb_id, "dc1-web-r3") == 1
    now[0] += 1
    assert slb.sessions(lb_id, "dc1-web-r3") == 0

    slb.remove(lb_id, "dc1-web-r3")
    slb.remove(lb_id, "dc1-web-r3")  # gone: no-op
    slb.drain(lb_id, "dc1-web-r3")  # gone: no-op
    assert slb.sessions(lb_id, "dc1-web-r3") == 0
    assert len(slb.list(lb_id)) == 24
    emu.server.reset_calls()
    slb.remove_many(lb_id, [s.name for s in servers])
    assert emu.calls()["RemoveBackendServers"] == 2 and slb.list(lb_id) == []


def test_no_drain_period_means_busy_until_the_drain_timeout(slb_world):
    emu, _, lb_id, instances = slb_world
    slb = _slb(emu, drain_period=None)
    slb.add(lb_id, _servers(instances)[0])
    slb.drain(lb_id, "dc1-web-r0")
    assert slb.sessions(lb_id, "dc1-web-r0") == 1


def test_errors_are_mapped(slb_world):
    emu, _, lb_id, instances = slb_world
    with pytest.raises(NotFoundError, match="InvalidLoadBalancerId.NotFound"):
        _slb(emu).list("lb-does-not-exist")
    with pytest.raises(AuthError) as err:
        _slb(emu, secret="wrong").list(lb_id)
    assert "wrong" not in str(err.value)
    with pytest.raises(NotFoundError, match="ServerIdNotExist"):
        _slb(emu).add(lb_id, Server(name="ghost", address="127.0.1.9", port=80, instance_id="i-ghost"))
    with pytest.raises(PermanentError, match="instance id"):
        _slb(emu).add(lb_id, Server(name="noid", address="127.0.1.9", port=80))
    slb = _slb(emu)
    slb.add(lb_id, Server(name="first", address="a", port=80, instance_id=instances[0].id))
    with pytest.raises(PermanentError, match="one replica per node"):
        slb.add(lb_id, Server(name="second", address="a", port=81, instance_id=instances[0].id))


def test_throttling_is_retried(slb_world):
    emu, _, lb_id, instances = slb_world
    emu.set_faults(throttle_rate=0.5, actions=["AddBackendServers", "DescribeLoadBalancerAttribute"])
    emu.server.reset_calls()
    slb = _slb(emu)
    slb.add_many(lb_id, _servers(instances)[:5])
    emu.set_faults(throttle_rate=0.0, actions=[])
    assert len(slb.list(lb_id)) == 5
    errors = emu.server.calls()["errors"]
    assert sum(n for codes in errors.values() for code, n in codes.items() if code == "Throttling") >= 1
