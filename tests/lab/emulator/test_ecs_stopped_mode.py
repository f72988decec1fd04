"""StopInstances' StoppedMode in the ECS emulator, over the official SDK and through the controller's own
compute pool (adapters/aliyun/ecs.py): StopCharging (economical mode) gives the type's stock back and shows in
DescribeInstances, so a StartInstances may then find the type sold out; KeepCharging keeps it; anything else
is refused as the API does."""

from __future__ import annotations

import json
import time

from aliyunsdkecs.request.v20140526.DeleteInstancesRequest import DeleteInstancesRequest
from aliyunsdkecs.request.v20140526.DescribeInstancesRequest import DescribeInstancesRequest
from aliyunsdkecs.request.v20140526.StartInstancesRequest import StartInstancesRequest
from aliyunsdkecs.request.v20140526.StopInstancesRequest import StopInstancesRequest

from controller.ports import InstanceState
from tests.fixtures_ecs import REGION, new_pool
from tests.lab.emulator.test_ecs_emulator import call, run, sdk, server_error


def _modes(client, ids: list[str]) -> dict[str, tuple[str, str]]:  # type: ignore[no-untyped-def]
    req = DescribeInstancesRequest()
    req.set_InstanceIds(json.dumps(ids))
    return {i["InstanceId"]: (i["Status"], i["StoppedMode"]) for i in call(client, req)["Instances"]["Instance"]}


def _stop(ids: list[str], mode: str | None) -> StopInstancesRequest:
    req = StopInstancesRequest()
    req.set_InstanceIds(ids)
    if mode:
        req.set_StoppedMode(mode)
    return req


def test_stop_charging_gives_the_stock_back_and_start_may_find_none(make_ecs_emulator) -> None:  # type: ignore[no-untyped-def]
    emu = make_ecs_emulator(stock={f"{REGION}-a/ecs.g7.large": 2})
    client = sdk(emu)
    a, b = run(client, 2)
    time.sleep(0.35)  # boot delay 0.3 s: Running
    assert _modes(client, [a, b]) == {a: ("Running", "Not-applicable"), b: ("Running", "Not-applicable")}
    bad = server_error(client, _stop([a], "Hibernate"))
    assert (bad.get_error_code(), bad.get_http_status()) == ("InvalidParameter.StoppedMode", 400)
    call(client, _stop([a], "StopCharging"))
    call(client, _stop([b], None))  # the API's default without the account-wide setting: KeepCharging
    time.sleep(0.25)
    assert _modes(client, [a, b]) == {a: ("Stopped", "StopCharging"), b: ("Stopped", "KeepCharging")}
    [c] = run(client, 1)  # a's compute resources went back to the zone: one more fits
    start = StartInstancesRequest()
    start.set_InstanceIds([a])
    sold = server_error(client, start)
    assert (sold.get_error_code(), sold.get_http_status()) == ("OperationDenied.NoStock", 403)
    delete = DeleteInstancesRequest()
    delete.set_InstanceIds([c])
    delete.set_Force(True)
    call(client, delete)
    call(client, start)  # c's place is free again
    time.sleep(0.35)
    assert _modes(client, [a])[a] == ("Running", "Not-applicable")


def test_the_compute_pool_stops_in_economical_mode_and_starts_again(ecs_emulator) -> None:  # type: ignore[no-untyped-def]
    client = sdk(ecs_emulator)
    [a] = run(client, 1)
    pool = new_pool(ecs_emulator)
    try:
        time.sleep(0.35)
        pool.stop([a])
        pool.stop([a])  # a repeat (a step re-run after a crash) is not an error
        time.sleep(0.25)
        [inst] = pool.get([a])
        assert inst.state == InstanceState.STOPPED and _modes(client, [a])[a] == ("Stopped", "StopCharging")
        pool.start([a])
        pool.start([a])
        time.sleep(0.35)
        [inst] = pool.get([a])
        assert inst.state == InstanceState.RUNNING and inst.private_ip
    finally:
        pool.release([a])
        pool.close()
