"""The ECS emulator through the real aliyun SDK (and raw HTTP where the SDK cannot express the case):
signature checks, the real error shape, paging both ways, lifecycle, Force semantics, limits, admin,
state across a restart, and the `burstctl emulate ecs` process."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkecs.request.v20140526.DeleteInstanceRequest import DeleteInstanceRequest
from aliyunsdkecs.request.v20140526.DeleteInstancesRequest import DeleteInstancesRequest
from aliyunsdkecs.request.v20140526.DescribeInstancesRequest import DescribeInstancesRequest
from aliyunsdkecs.request.v20140526.DescribeInstanceStatusRequest import DescribeInstanceStatusRequest
from aliyunsdkecs.request.v20140526.RunInstancesRequest import RunInstancesRequest
from aliyunsdkecs.request.v20140526.StopInstancesRequest import StopInstancesRequest
from aliyunsdkecs.request.v20140526.TagResourcesRequest import TagResourcesRequest

from lab.emulator.ecs import EcsEmulator
from lab.emulator.rpc_wire import sign, string_to_sign
from tests.fixtures_ecs import KEY_ID, KEY_SECRET, REGION, new_emulator
from tests.support.net import free_port, wait_port

ROOT = Path(__file__).resolve().parents[3]


def sdk(emu: EcsEmulator, key_id: str = KEY_ID, secret: str = KEY_SECRET) -> AcsClient:
    client = AcsClient(key_id, secret, REGION, auto_retry=False, timeout=5, proxy={"http": None, "https": None})
    client.add_endpoint(REGION, "Ecs", emu.endpoint)
    return client


def call(client: AcsClient, req: object) -> dict:
    return json.loads(client.do_action_with_exception(req))


def run(client: AcsClient, amount: int, token: str | None = None, itype: str = "ecs.g7.large",
        tags: dict[str, str] | None = None, **extra: object) -> list[str]:
    req = RunInstancesRequest()
    req.set_InstanceType(itype)
    req.set_ImageId("img-1")
    req.set_Amount(amount)
    req.set_ZoneId(f"{REGION}-a")
    if token:
        req.set_ClientToken(token)
    if tags:
        req.set_Tags([{"Key": k, "Value": v} for k, v in tags.items()])
    for name, value in extra.items():
        getattr(req, f"set_{name}")(value)
    return call(client, req)["InstanceIdSets"]["InstanceIdSet"]


def server_error(client: AcsClient, req: object) -> ServerException:
    with pytest.raises(ServerException) as info:
        client.do_action_with_exception(req)
    return info.value


# --------------------------------------------------------------------------- signature


def test_wrong_secret_is_reported_as_the_sdk_expects(ecs_emulator: EcsEmulator) -> None:
    exc = server_error(sdk(ecs_emulator, secret="not-the-secret"), DescribeInstancesRequest())
    # the SDK only turns SignatureDoesNotMatch into InvalidAccessKeySecret when the server's
    # string-to-sign (after the colon in the message) equals its own: proves our canonicalisation
    assert exc.get_error_code() == "InvalidAccessKeySecret"
    assert exc.get_http_status() == 400
    assert exc.get_request_id()


def test_unknown_access_key(ecs_emulator: EcsEmulator) -> None:
    exc = server_error(sdk(ecs_emulator, key_id="nobody"), DescribeInstancesRequest())
    assert (exc.get_error_code(), exc.get_http_status()) == ("InvalidAccessKeyId.NotFound", 404)


def test_error_body_has_the_real_shape_and_nonces_are_single_use(ecs_emulator: EcsEmulator) -> None:
    params = {"Action": "DescribeInstances", "Version": "2014-05-26", "Format": "JSON", "RegionId": REGION,
              "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "SignatureMethod": "HMAC-SHA1",
              "SignatureVersion": "1.0", "SignatureNonce": uuid.uuid4().hex, "SignatureType": "",
              "AccessKeyId": KEY_ID, "Tag.1.Key": "a b*c/~é"}
    params["Signature"] = sign(KEY_SECRET, string_to_sign("POST", params))
    with httpx.Client(trust_env=False) as http:
        first = http.post(ecs_emulator.url + "/", params=params)
        again = http.post(ecs_emulator.url + "/", params=params)
        params["Signature"] = "AAAA"
        bad = http.post(ecs_emulator.url + "/", params=params)
    assert first.status_code == 200 and first.json()["TotalCount"] == 0
    assert again.status_code == 400
    body = again.json()
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    assert body["Code"] == "SignatureNonceUsed"
    assert bad.json()["Code"] == "SignatureDoesNotMatch"
    assert bad.json()["Message"].split(":", 1)[1] == string_to_sign("POST", params)


# --------------------------------------------------------------------------- RunInstances


def test_client_token_idempotency_and_mismatch(ecs_emulator: EcsEmulator) -> None:
    client = sdk(ecs_emulator)
    first = run(client, 3, token="tok-a")
    assert run(client, 3, token="tok-a") == first
    exc = server_error(client, _run_req(4, "tok-a"))
    assert exc.get_error_code() == "IdempotentParameterMismatch"
    assert len(ecs_emulator.live_instances()) == 3


def _run_req(amount: int, token: str) -> RunInstancesRequest:
    req = RunInstancesRequest()
    req.set_InstanceType("ecs.g7.large")
    req.set_ImageId("img-1")
    req.set_ZoneId(f"{REGION}-a")
    req.set_Amount(amount)
    req.set_ClientToken(token)
    return req


def test_run_instances_limits(make_ecs_emulator) -> None:  # type: ignore[no-untyped-def]
    emu = make_ecs_emulator(address_pool="127.0.2.0/29", quotas={"ecs.c7.large": 2})
    client = sdk(emu)
    assert server_error(client, _run_req(101, "t1")).get_error_code() == "InvalidParameter.Amount"
    big = RunInstancesRequest()
    big.set_InstanceType("ecs.g7.large")
    big.set_ImageId("img-1")
    big.set_UserData(base64.b64encode(b"x" * (32 * 1024 + 1)).decode())
    assert server_error(client, big).get_error_code() == "InvalidUserData.SizeExceeded"
    ok = run(client, 1, UserData=base64.b64encode(b"x" * 32 * 1024).decode())
    assert len(ok) == 1
    quota = server_error(client, _quota_req())
    assert (quota.get_error_code(), quota.get_http_status()) == ("QuotaExceed.ElasticQuota", 403)
    # a /29 has 6 host addresses; one is taken
    assert len(run(client, 5)) == 5
    assert server_error(client, _run_req(1, "t9")).get_error_code() == "InvalidVSwitchId.IpNotEnough"
    ips = {i["private_ip"] for i in emu.live_instances()}
    assert ips == {f"127.0.2.{n}" for n in range(1, 7)}


def _quota_req() -> RunInstancesRequest:
    req = RunInstancesRequest()
    req.set_InstanceType("ecs.c7.large")
    req.set_ImageId("img-1")
    req.set_Amount(3)
    return req


def test_stock_and_sold_out_faults(make_ecs_emulator) -> None:  # type: ignore[no-untyped-def]
    emu = make_ecs_emulator(stock={f"{REGION}-a/ecs.g7.large": 2})
    client = sdk(emu)
    exc = server_error(client, _run_req(3, "s1"))
    assert (exc.get_error_code(), exc.get_http_status()) == ("OperationDenied.NoStock", 403)
    assert len(run(client, 2)) == 2
    assert server_error(client, _run_req(1, "s2")).get_error_code() == "OperationDenied.NoStock"
    emu.set_faults(sold_out=["ecs.c7.large"], unsupported=["ecs.r7.large"])
    assert server_error(client, _typed_req("ecs.c7.large")).get_error_code() == "OperationDenied.NoStock"
    assert server_error(client, _typed_req("ecs.r7.large")).get_error_code() == "InvalidInstanceType.NotSupported"
    assert server_error(client, _typed_req("ecs.nope.large")).get_error_code() == \
        "InvalidInstanceType.NotSupported"


def _typed_req(itype: str) -> RunInstancesRequest:
    req = RunInstancesRequest()
    req.set_InstanceType(itype)
    req.set_ImageId("img-1")
    return req


# --------------------------------------------------------------------------- Describe


def test_paging_250_both_styles_and_anded_tag_filters(make_ecs_emulator) -> None:  # type: ignore[no-untyped-def]
    emu = make_ecs_emulator(address_pool="127.0.4.0/22")  # a /24 holds 254 instances; this makes 257
    client = sdk(emu)
    ids = run(client, 100, tags={"owner": "me", "pool": "a"}) + run(client, 100, tags={"owner": "me", "pool": "b"})
    ids += run(client, 50, tags={"owner": "me", "pool": "a"})
    run(client, 7, tags={"owner": "someone-else"})

    seen: list[str] = []
    page = 1
    while True:
        req = DescribeInstancesRequest()
        req.set_Tags([{"Key": "owner", "Value": "me"}])
        req.set_PageSize(100)
        req.set_PageNumber(page)
        out = call(client, req)
        assert out["TotalCount"] == 250
        batch = [i["InstanceId"] for i in out["Instances"]["Instance"]]
        if not batch:
            break
        seen += batch
        page += 1
    assert seen == ids and page == 4

    seen, token, calls = [], "", 0
    while True:
        req = DescribeInstancesRequest()
        req.set_Tags([{"Key": "owner", "Value": "me"}, {"Key": "pool", "Value": "a"}])
        req.set_MaxResults(60)
        if token:
            req.set_NextToken(token)
        out = call(client, req)
        calls += 1
        seen += [i["InstanceId"] for i in out["Instances"]["Instance"]]
        token = out["NextToken"]
        if not token:
            break
    assert seen == ids[:100] + ids[200:] and calls == 3

    req = DescribeInstancesRequest()
    req.set_InstanceIds(json.dumps(ids[5:8]))
    inst = call(client, req)["Instances"]["Instance"]
    assert [i["InstanceId"] for i in inst] == ids[5:8]
    one = inst[0]
    assert one["VpcAttributes"]["PrivateIpAddress"]["IpAddress"][0].startswith("127.0.4.")
    assert {"TagKey": "owner", "TagValue": "me"} in one["Tags"]["Tag"]
    assert one["Status"] in ("Pending", "Starting", "Running")
    assert len(one["CreationTime"]) == len("2017-12-10T04:04Z")

    status = DescribeInstanceStatusRequest()
    status.set_InstanceIds(ids[:60])
    status.set_PageSize(50)
    got = call(client, status)
    assert got["TotalCount"] == 60 and len(got["InstanceStatuses"]["InstanceStatus"]) == 50


def test_lifecycle_follows_the_boot_delay() -> None:
    offset = [0.0]
    emu = EcsEmulator(access_keys={KEY_ID: KEY_SECRET}, clock=lambda: time.time() + offset[0],
                      config=new_emulator(boot_delay=20).config)
    emu.start()
    try:
        client = sdk(emu)
        iid = run(client, 1)[0]
        states = []
        for advance in (0, 6, 19, 21):
            offset[0] = advance
            req = DescribeInstancesRequest()
            req.set_InstanceIds(json.dumps([iid]))
            states.append(call(client, req)["Instances"]["Instance"][0]["Status"])
        assert states == ["Pending", "Starting", "Starting", "Running"]
        req = DescribeInstancesRequest()
        req.set_Status("Running")
        assert call(client, req)["TotalCount"] == 1
    finally:
        emu.stop()


def test_delete_force_semantics_and_tagging(ecs_emulator: EcsEmulator) -> None:
    client = sdk(ecs_emulator)
    a, b, c = run(client, 3)
    time.sleep(0.35)
    plain = DeleteInstancesRequest()
    plain.set_InstanceIds([a, b])
    exc = server_error(client, plain)
    assert (exc.get_error_code(), exc.get_http_status()) == ("IncorrectInstanceStatus", 403)
    stop = StopInstancesRequest()
    stop.set_InstanceIds([a])
    call(client, stop)
    time.sleep(0.25)  # stop delay 0.2 s
    one = DeleteInstanceRequest()
    one.set_InstanceId(a)
    call(client, one)
    forced = DeleteInstancesRequest()
    forced.set_InstanceIds([b])
    forced.set_Force(True)
    call(client, forced)
    gone = server_error(client, forced)
    assert (gone.get_error_code(), gone.get_http_status()) == ("InvalidInstanceId.NotFound", 404)
    tag = TagResourcesRequest()
    tag.set_ResourceType("instance")
    tag.set_ResourceIds([c])
    tag.set_Tags([{"Key": "late", "Value": "yes"}])
    call(client, tag)
    req = DescribeInstancesRequest()
    req.set_Tags([{"Key": "late"}])
    assert [i["InstanceId"] for i in call(client, req)["Instances"]["Instance"]] == [c]
    assert [i["id"] for i in ecs_emulator.live_instances()] == [c]


# --------------------------------------------------------------------------- admin, state, CLI


def test_admin_endpoints(ecs_emulator: EcsEmulator) -> None:
    client = sdk(ecs_emulator)
    with httpx.Client(base_url=ecs_emulator.url, trust_env=False) as http:
        assert http.post("/_admin/faults", json={"throttle_rate": 1.0, "actions": ["RunInstances"]}).status_code == 200
        exc = server_error(client, _run_req(1, "x"))
        assert (exc.get_error_code(), exc.get_http_status()) == ("Throttling", 400)
        assert http.post("/_admin/faults", json={"throttle_rate": 2}).status_code == 400
        assert http.post("/_admin/faults", json={"nope": 1}).status_code == 400
        http.delete("/_admin/faults")
        run(client, 2)
        calls = http.get("/_admin/calls").json()
        assert calls["calls"]["RunInstances"] == 2 and calls["errors"]["RunInstances"] == {"Throttling": 1}
        state = http.get("/_admin/state").json()["ecs"]
        assert state["live"] == 2 and state["docker_endpoint"] == "tcp://127.0.0.1:2376"
        assert state["cost"] >= 0
        assert http.get("/_admin/ecs/prices").json()["ecs.g7.large"] > 0
        assert http.post("/_admin/ecs/stock", json={"ecs.g7.large": 0}).json() == {"ecs.g7.large": 0}
    assert server_error(client, _run_req(1, "y")).get_error_code() == "OperationDenied.NoStock"


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "ecs.json"
    first = new_emulator(state_file=str(state))
    first.start()
    ids = run(sdk(first), 4, token="keep")
    ips = sorted(i["private_ip"] for i in first.live_instances())
    first.stop()
    second = new_emulator(state_file=str(state))
    second.start()
    try:
        client = sdk(second)
        assert run(client, 4, token="keep") == ids  # the token outlives the restart too
        req = DescribeInstancesRequest()
        req.set_PageSize(100)
        out = call(client, req)
        assert sorted(i["InstanceId"] for i in out["Instances"]["Instance"]) == sorted(ids)
        assert sorted(i["private_ip"] for i in second.live_instances()) == ips
        assert run(client, 1)  # a new instance gets a fresh address
        assert len({i["private_ip"] for i in second.live_instances()}) == 5
    finally:
        second.stop()


def test_cli_process(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.cli.main", "emulate", "ecs", "--listen", f"127.0.0.1:{port}",
         "--access-key", f"{KEY_ID}:{KEY_SECRET}", "--state", str(tmp_path / "s.json"), "--boot-delay", "1s",
         "--sold-out", "ecs.c7.large"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_port("127.0.0.1", port, timeout=20)
        client = AcsClient(KEY_ID, KEY_SECRET, REGION, auto_retry=False, proxy={"http": None, "https": None})
        client.add_endpoint(REGION, "Ecs", f"127.0.0.1:{port}")
        assert len(run(client, 2)) == 2
        assert server_error(client, _typed_req("ecs.c7.large")).get_error_code() == "OperationDenied.NoStock"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"127.0.0.1:{port}" in out
    assert KEY_SECRET not in out + err
    assert len(json.loads((tmp_path / "s.json").read_text())["instances"]) == 2


def test_cli_process_serves_slb_and_cr_beside_ecs(tmp_path: Path) -> None:
    """`burstctl emulate ecs --slb --cr-instance`: the SLB and Container Registry APIs on the same endpoint,
    reached by the controller's own adapters: an instance of this emulator joins a load balancer, an id that
    is not one is refused, and the ACR token is the password file's current content."""
    from adapters.aliyun.acr import AcrTokenCredentials
    from adapters.aliyun.credentials import CloudCredentials, StaticCredentials
    from adapters.aliyun.slb import SlbLoadBalancer, SlbSettings
    from controller.errors import BurstError
    from controller.ports import Server

    port = free_port()
    secret = tmp_path / "cr-password"
    secret.write_text("first-password\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.cli.main", "emulate", "ecs", "--listen", f"127.0.0.1:{port}",
         "--access-key", f"{KEY_ID}:{KEY_SECRET}", "--boot-delay", "1s", "--slb",
         "--cr-instance", f"cri-ops=cr_user:{secret}"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        wait_port("127.0.0.1", port, timeout=20)
        url = f"http://127.0.0.1:{port}"
        client = AcsClient(KEY_ID, KEY_SECRET, REGION, auto_retry=False, proxy={"http": None, "https": None})
        client.add_endpoint(REGION, "Ecs", f"127.0.0.1:{port}")
        instance = run(client, 1)[0]
        lb_id = httpx.post(f"{url}/_admin/slb/load-balancers", json={"region": REGION, "name": "web"},
                           trust_env=False).json()["LoadBalancerId"]
        keys = StaticCredentials(CloudCredentials(KEY_ID, KEY_SECRET))
        slb = SlbLoadBalancer(SlbSettings(region=REGION, credentials=keys, endpoint=url, max_attempts=2))
        slb.add(lb_id, Server(name="dc1-web-r1", address="10.0.0.1", port=80, instance_id=instance))
        state = httpx.get(f"{url}/_admin/state", trust_env=False).json()["slb"]
        assert instance in json.dumps(state)
        with pytest.raises(BurstError):
            slb.add(lb_id, Server(name="dc1-web-r2", address="10.0.0.2", port=80, instance_id="i-notours"))
        acr = AcrTokenCredentials("cri-ops", REGION, ["cr.example"], keys, endpoint=url)
        token = acr.token().credentials
        assert (token.username, token.password) == ("cr_user", "first-password")
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "first-password" not in _out + err


def test_cli_refuses_a_cr_instance_it_cannot_serve(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "controller.cli.main", "emulate", "ecs", "--cr-instance", "cri-x=user",
         "--cr-instance", f"cri-y=user:{tmp_path / 'missing'}"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
        check=False)
    assert out.returncode == 2, out
    assert "--cr-instance 'cri-x=user': expected ID=USER:PASSWORD_FILE" in out.stderr
    assert "--cr-instance cri-y: cannot read" in out.stderr and "Traceback" not in out.stderr
