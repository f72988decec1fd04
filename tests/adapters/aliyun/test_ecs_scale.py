"""EcsComputePool's scale paths through the real SDK against the ECS emulator (issue 9): a launch that does
not describe what it created (the daemon's setting) still journals type, zone, spot and price; a listing's
pages fetched in parallel return every instance once, one DescribeInstances per 100; the emulator's cached
listing sees launches, deletions and tag changes made between two listings."""

from __future__ import annotations

import dataclasses

from controller.ports import TAG_CONTROLLER, TAG_POLICY, InstanceState, LaunchSpec, Owner
from tests.fixtures_ecs import REGION

SPEC = LaunchSpec(region=REGION, instance_types=("ecs.g7.large",), zones=(f"{REGION}-a",), image_id="img-1",
                  security_group_id="sg-1", vswitches={f"{REGION}-a": "vsw-a"},
                  tags={TAG_CONTROLLER: "dc1", TAG_POLICY: "web"})


def test_a_launch_without_the_confirming_describe(ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    pool = make_ecs_pool(ecs_emulator)
    pool.settings.describe_after_launch = False
    got = pool.launch(SPEC, 3, "quiet-1")
    calls = ecs_emulator.calls()
    assert calls.get("RunInstances") == 1 and "DescribeInstances" not in calls
    assert len({i.id for i in got}) == 3
    assert all(i.state == InstanceState.PENDING and i.private_ip is None for i in got)
    assert {(i.instance_type, i.zone, i.spot) for i in got} == {("ecs.g7.large", f"{REGION}-a", False)}
    assert all(i.price_per_hour and i.price_per_hour > 0 for i in got)  # from RunInstances' TradePrice
    assert got[0].tags[TAG_CONTROLLER] == "dc1"
    described = {i.id: i for i in pool.get([i.id for i in got])}  # what the loop's boot check then reads
    assert set(described) == {i.id for i in got} and all(i.private_ip for i in described.values())
    assert sorted(i.id for i in pool.launch(SPEC, 3, "quiet-1")) == sorted(described)  # the token still holds


def test_parallel_pages_list_everything_once(make_ecs_emulator, make_ecs_pool) -> None:  # type: ignore[no-untyped-def]
    emu = make_ecs_emulator(address_pool="127.0.12.0/22")
    pool = make_ecs_pool(emu)
    pool.settings.describe_after_launch = False
    ids = [i.id for i in pool.launch(SPEC, 100, "many-1") + pool.launch(SPEC, 100, "many-2")
           + pool.launch(SPEC, 100, "many-3") + pool.launch(SPEC, 50, "many-4")]
    other = dataclasses.replace(SPEC, tags={TAG_CONTROLLER: "dc2", TAG_POLICY: "web"})
    pool.launch(other, 7, "not-ours")
    emu.server.reset_calls()
    listed = pool.list(Owner("dc1"))
    assert sorted(i.id for i in listed) == sorted(ids)  # each once, none of dc2's
    assert emu.calls() == {"DescribeInstances": 4}  # 350 instances: 4 pages, no more
    # between two listings (the emulator's cached filter must see every change)
    pool.release(ids[:5])
    pool.launch(SPEC, 2, "many-5")
    again = pool.list(Owner("dc1", "web"))
    assert len(again) == 350 - 5 + 2 and not {i.id for i in again} & set(ids[:5])
    assert pool.list(Owner("dc1", "api")) == []
