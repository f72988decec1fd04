"""The ECS emulator against a second client: the official generated SDK (alibabacloud-ecs20140526 on
alibabacloud-tea-openapi), with its default V3 signature (ACS3-HMAC-SHA256): launch, the DescribeInstances
fields the real API fills, delete, refused keys, DescribePrice's RegionId, a form body; and RunInstances'
names (UniqueSuffix, sequence patterns) through aliyun-python-sdk-ecs."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlencode

import httpx
import pytest
from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.utils import Utils
from alibabacloud_tea_openapi.utils_models import Config, OpenApiRequest, Params
from aliyunsdkcore.client import AcsClient
from aliyunsdkecs.request.v20140526.DescribeInstancesRequest import DescribeInstancesRequest
from aliyunsdkecs.request.v20140526.RunInstancesRequest import RunInstancesRequest
from darabonba.request import DaraRequest
from darabonba.runtime import RuntimeOptions

from lab.emulator.ecs import EcsEmulator
from lab.emulator.rpc_wire import AccessKey
from tests.fixtures_ecs import KEY_ID, KEY_SECRET, REGION

DEBIAN = "debian_12_5_x64_20G_alibase_20240401.vhd"
OfficialClient = Callable[..., Client]


@pytest.fixture
def official(ecs_emulator: EcsEmulator, monkeypatch: pytest.MonkeyPatch) -> OfficialClient:
    # the SDK sends through HTTP(S)_PROXY whatever the address: keep the loopback calls off any proxy
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)

    def make(key_id: str = KEY_ID, secret: str = KEY_SECRET, token: str | None = None) -> Client:
        return Client(Config(access_key_id=key_id, access_key_secret=secret, security_token=token,
                             endpoint=ecs_emulator.endpoint, protocol="http", region_id=REGION,
                             read_timeout=5000, connect_timeout=2000))

    return make


def _launch(client: Client, amount: int, **extra: object) -> list[str]:
    req = ecs_models.RunInstancesRequest(
        region_id=REGION, zone_id=f"{REGION}-a", instance_type="ecs.g7.large", image_id=DEBIAN,
        security_group_id="sg-web", v_switch_id="vsw-a", amount=amount, instance_charge_type="PostPaid",
        tag=[ecs_models.RunInstancesRequestTag(key="team", value="web")], **extra)
    answer = client.run_instances(req)
    assert answer.status_code == 200
    return list(answer.body.instance_id_sets.instance_id_set)


def _describe(client: Client, ids: list[str]) -> list[ecs_models.DescribeInstancesResponseBodyInstancesInstance]:
    answer = client.describe_instances(ecs_models.DescribeInstancesRequest(
        region_id=REGION, instance_ids=json.dumps(ids), page_size=100))
    return list(answer.body.instances.instance)


def _refusal(call: Callable[[], object]) -> ClientException:
    with pytest.raises(ClientException) as info:
        call()
    return info.value


def test_official_sdk_launches_describes_and_deletes(ecs_emulator: EcsEmulator, official: OfficialClient) -> None:
    client = official()
    ids = _launch(client, 3, instance_name="web", unique_suffix=True)
    assert len(ids) == 3 and len(ecs_emulator.live_instances()) == 3
    rows = _describe(client, ids)
    assert [r.instance_id for r in rows] == ids
    for row in rows:
        assert (row.cpu, row.memory, row.instance_type_family) == (2, 8192, "ecs.g7")
        assert (row.osname, row.osname_en, row.ostype) == ("Debian 12.5 64位", "Debian 12.5 64 bit", "linux")
        assert row.image_id == DEBIAN and row.status in ("Pending", "Starting", "Running")
        assert row.host_name == f"iZ{row.instance_id[2:]}Z"  # no HostName given: the cloud's default
        assert row.stopped_mode == "Not-applicable" and row.operation_locks.lock_reason == []
        assert row.expired_time == "2099-12-31T15:59Z" and row.instance_charge_type == "PostPaid"
        ip = row.vpc_attributes.private_ip_address.ip_address[0]
        assert ip.startswith("127.0.1.") and row.vpc_attributes.v_switch_id == "vsw-a"
        (eni,) = row.network_interfaces.network_interface
        assert (eni.type, eni.primary_ip_address) == ("Primary", ip)
        assert eni.network_interface_id.startswith("eni-") and eni.mac_address.startswith("00:16:3e:")
        assert eni.private_ip_sets.private_ip_set[0].private_ip_address == ip
        assert str(uuid.UUID(row.serial_number)) == row.serial_number
        assert row.security_group_ids.security_group_id == ["sg-web"]
        assert {(t.tag_key, t.tag_value) for t in row.tags.tag} == {("team", "web")}
    assert [r.instance_name for r in rows] == ["web001", "web002", "web003"]
    for field in ("serial_number", "host_name"):
        assert len({getattr(r, field) for r in rows}) == 3, field
    assert len({r.network_interfaces.network_interface[0].network_interface_id for r in rows}) == 3
    assert _describe(client, ids)[0].serial_number == rows[0].serial_number  # stable from call to call

    client.delete_instances(ecs_models.DeleteInstancesRequest(region_id=REGION, instance_id=ids, force=True))
    assert ecs_emulator.live_instances() == [] and _describe(client, ids) == []


def test_official_sdk_stopped_instance_reports_its_stopped_mode(ecs_emulator: EcsEmulator,
                                                                official: OfficialClient) -> None:
    client = official()
    (iid,) = _launch(client, 1)
    deadline = time.monotonic() + 10
    while _describe(client, [iid])[0].status != "Running":
        assert time.monotonic() < deadline, "the instance never reached Running"
        time.sleep(0.1)
    client.stop_instances(ecs_models.StopInstancesRequest(region_id=REGION, instance_id=[iid]))
    while (row := _describe(client, [iid])[0]).status != "Stopped":
        assert time.monotonic() < deadline, "the instance never stopped"
        time.sleep(0.1)
    assert row.stopped_mode == "KeepCharging"  # the emulator bills a stopped instance until it is deleted


def test_official_sdk_wrong_secret_and_unknown_key_are_refused(ecs_emulator: EcsEmulator,
                                                               official: OfficialClient) -> None:
    wrong = _refusal(lambda: _describe(official(secret="not-the-secret"), []))
    assert (wrong.code, wrong.status_code) == ("SignatureDoesNotMatch", 400)
    # the server verified a V3 signature: its string to sign is the algorithm and a SHA-256 hex digest
    server_string = wrong.data["Message"].split(":", 1)[1]
    algorithm, digest = server_string.split("\n")
    assert algorithm == "ACS3-HMAC-SHA256" and len(digest) == 64
    unknown = _refusal(lambda: _describe(official(key_id="nobody"), []))
    assert (unknown.code, unknown.status_code) == ("InvalidAccessKeyId.NotFound", 404)
    assert ecs_emulator.server.calls()["errors"]["DescribeInstances"] == {
        "SignatureDoesNotMatch": 1, "InvalidAccessKeyId.NotFound": 1}


def test_official_sdk_sts_token_is_checked(ecs_emulator: EcsEmulator, official: OfficialClient) -> None:
    ecs_emulator.server.access_keys["STS.key"] = AccessKey("STS.key", "sts-secret", security_token="sts-token")
    assert _describe(official("STS.key", "sts-secret", token="sts-token"), []) == []
    other = _refusal(lambda: _describe(official("STS.key", "sts-secret", token="another-token"), []))
    assert (other.code, other.status_code) == ("InvalidSecurityToken.Mismatch", 400)


def test_official_sdk_describe_price_needs_a_region(ecs_emulator: EcsEmulator, official: OfficialClient) -> None:
    client = official()
    missing = _refusal(lambda: client.describe_price(ecs_models.DescribePriceRequest(
        resource_type="instance", instance_type="ecs.g7.large", price_unit="Hour")))
    assert (missing.code, missing.status_code) == ("MissingParameter", 400)
    assert "RegionId" in missing.data["Message"]
    answer = client.describe_price(ecs_models.DescribePriceRequest(
        region_id=REGION, resource_type="instance", instance_type="ecs.g7.large", price_unit="Hour"))
    assert answer.body.price_info.price.trade_price == ecs_emulator.config.prices["ecs.g7.large"]


def test_official_sdk_parameters_in_a_form_body(ecs_emulator: EcsEmulator, official: OfficialClient) -> None:
    client = official()
    ids = _launch(client, 2)
    params = Params(action="DescribeInstances", version="2014-05-26", protocol="HTTP", pathname="/",
                    method="POST", auth_type="AK", style="RPC", req_body_type="formData", body_type="json")
    request = OpenApiRequest(query={"RegionId": REGION}, body={"InstanceIds": json.dumps(ids[1:])})
    answer = client.call_api(params, request, RuntimeOptions())
    assert [i["InstanceId"] for i in answer["body"]["Instances"]["Instance"]] == ids[1:]


def _v3_request(emu: EcsEmulator, query: dict[str, str], secret: str = KEY_SECRET) -> DaraRequest:
    """A DescribeInstances request signed by the SDK's own V3 signing code (not the emulator's)."""
    req = DaraRequest()
    req.method, req.pathname, req.query = "POST", "/", dict(query)
    req.headers = {"host": emu.endpoint, "x-acs-action": "DescribeInstances", "x-acs-version": "2014-05-26",
                   "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "x-acs-signature-nonce": uuid.uuid4().hex, "accept": "application/json",
                   "x-acs-content-sha256": Utils.hash(b"", "ACS3-HMAC-SHA256").hex()}
    req.headers["Authorization"] = Utils.get_authorization(req, "ACS3-HMAC-SHA256", req.headers[
        "x-acs-content-sha256"], KEY_ID, secret)
    return req


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False) as client:
        yield client


def test_v3_canonical_query_nonce_and_tampering(ecs_emulator: EcsEmulator, http: httpx.Client) -> None:
    query = {"RegionId": REGION, "Tag.1.Key": "a b*c/~é", "Tag.1.Value": "x+y=z&w"}
    req = _v3_request(ecs_emulator, query)
    url = f"{ecs_emulator.url}/?{urlencode(query)}"
    first = http.post(url, headers=req.headers)
    again = http.post(url, headers=req.headers)
    assert first.status_code == 200 and first.json()["TotalCount"] == 0
    assert (again.status_code, again.json()["Code"]) == (400, "SignatureNonceUsed")
    fresh = _v3_request(ecs_emulator, query)
    tampered = http.post(f"{ecs_emulator.url}/?{urlencode({**query, 'Tag.1.Value': 'other'})}",
                         headers=fresh.headers)
    assert (tampered.status_code, tampered.json()["Code"]) == (400, "SignatureDoesNotMatch")
    unsigned = _v3_request(ecs_emulator, query)
    extra = http.post(url, headers={**unsigned.headers, "x-acs-extra": "1"})  # an x-acs-* header not signed
    assert (extra.status_code, extra.json()["Code"]) == (400, "IncompleteSignature")


# --------------------------------------------------------------------------- names, via aliyun-python-sdk-ecs


def _names(emu: EcsEmulator, amount: int, **extra: object) -> list[tuple[str, str]]:
    client = AcsClient(KEY_ID, KEY_SECRET, REGION, auto_retry=False, timeout=5, proxy={"http": None, "https": None})
    client.add_endpoint(REGION, "Ecs", emu.endpoint)
    req = RunInstancesRequest()
    req.set_InstanceType("ecs.g7.large")
    req.set_ImageId(DEBIAN)
    req.set_Amount(amount)
    for name, value in extra.items():
        getattr(req, f"set_{name}")(value)
    ids = json.loads(client.do_action_with_exception(req))["InstanceIdSets"]["InstanceIdSet"]
    listing = DescribeInstancesRequest()
    listing.set_InstanceIds(json.dumps(ids))
    rows = json.loads(client.do_action_with_exception(listing))["Instances"]["Instance"]
    assert [r["InstanceId"] for r in rows] == ids
    return [(r["InstanceName"], r["HostName"]) for r in rows]


def test_unique_suffix_numbers_names_and_host_names(ecs_emulator: EcsEmulator) -> None:
    assert _names(ecs_emulator, 3, InstanceName="web", HostName="node", UniqueSuffix=True) == [
        ("web001", "node001"), ("web002", "node002"), ("web003", "node003")]


def test_without_unique_suffix_every_instance_gets_the_same_name(ecs_emulator: EcsEmulator) -> None:
    rows = _names(ecs_emulator, 3, InstanceName="web", HostName="node")
    assert rows == [("web", "node")] * 3
    single = _names(ecs_emulator, 1, InstanceName="solo", UniqueSuffix=True)  # one instance: no suffix
    assert single[0][0] == "solo"


def test_sequence_patterns_and_the_instance_id_placeholder(ecs_emulator: EcsEmulator) -> None:
    rows = _names(ecs_emulator, 2, InstanceName="web[5,2]", HostName="k8s-${instance_id}")
    assert [name for name, _ in rows] == ["web05", "web06"]
    assert all(host.startswith("k8s-i-") for _, host in rows) and len({h for _, h in rows}) == 2
    default = _names(ecs_emulator, 1)
    assert default[0][0].startswith("i-") and default[0][1] == f"iZ{default[0][0][2:]}Z"  # name = id by default
