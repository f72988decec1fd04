"""The ECS API emulator (Version 2014-05-26): RunInstances, DescribeInstances, DescribeInstanceStatus,
StopInstances, StartInstances, DeleteInstances, DeleteInstance, TagResources, DescribePrice and the image
actions of ``ecs_images`` (CreateImage, DescribeImages, DeleteImage) over
``rpc.RpcServer``, so neither aliyun-python-sdk-ecs nor the official generated alibabacloud-ecs20140526 can
tell it from the cloud. With ``EcsConfig.node_engine`` every instance is a booted machine (``nodes.py``).
``EcsEmulator`` starts it in-process (tests, demo, benchmarks); ``burstctl emulate ecs`` runs it in the
foreground."""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Self

from lab.emulator.cr import install_cr
from lab.emulator.ecs_images import install_images
from lab.emulator.ecs_records import SPOT_DISCOUNT, EcsConfig, InstanceRecord, LaunchRequest
from lab.emulator.ecs_shapes import default_host_name, derived_ids, instance_type_facts, os_facts
from lab.emulator.ecs_state import EcsState
from lab.emulator.faults import FaultBox, Faults
from lab.emulator.nodes import NodeHost, scope_for
from lab.emulator.rpc import RpcServer
from lab.emulator.rpc_wire import AccessKey, ApiError, RpcRequest
from lab.emulator.slb import SlbState, install_slb

__all__ = ["ECS_VERSION", "EcsEmulator", "install_ecs"]

ECS_VERSION = "2014-05-26"
USER_DATA_LIMIT = 32 * 1024  # raw bytes, before base64
_NOT_DEFINING = {"Timestamp", "SignatureNonce", "Signature", "AccessKeyId", "SecurityToken", "Format",
                 "SignatureMethod", "SignatureType", "SignatureVersion"}
_STATUSES = ("Pending", "Starting", "Running", "Stopping", "Stopped")


def _fingerprint(params: Mapping[str, str]) -> str:
    defining = sorted((k, v) for k, v in params.items() if k not in _NOT_DEFINING)
    return hashlib.sha256(json.dumps(defining).encode()).hexdigest()


def _region(req: RpcRequest) -> str:
    return req.require("RegionId")


def _creation_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(epoch))


def _instance_json(rec: InstanceRecord, status: str) -> dict[str, Any]:
    """One ``Instances.Instance[]`` entry, with every field of the real answer the emulator knows."""
    os_name, os_name_en, os_type = os_facts(rec.image_id)
    eni, mac, serial = derived_ids(rec.id)
    stopped = status in ("Stopping", "Stopped")
    answer: dict[str, Any] = {
        "InstanceId": rec.id,
        "InstanceName": rec.name or rec.id,
        "HostName": rec.host_name or default_host_name(rec.id),
        "Description": "",
        "Status": status,
        "InstanceType": rec.instance_type,
        "ImageId": rec.image_id,
        "OSName": os_name,
        "OSNameEn": os_name_en,
        "OSType": os_type,
        "SerialNumber": serial,
        "RegionId": rec.region,
        "ZoneId": rec.zone,
        "CreationTime": _creation_time(rec.created_at),
        "StartTime": _creation_time(rec.started_at or rec.created_at),
        "ExpiredTime": "2099-12-31T15:59Z",
        "InstanceChargeType": rec.charge_type,
        "InternetChargeType": "PayByTraffic",
        "InternetMaxBandwidthOut": rec.bandwidth_out,
        "SpotStrategy": rec.spot_strategy,
        "SpotPriceLimit": rec.spot_price_limit,
        "InstanceNetworkType": "vpc",
        "IoOptimized": True,
        "DeletionProtection": False,
        "DeviceAvailable": True,
        "Recyclable": False,
        "GPUAmount": 0,
        "GPUSpec": "",
        "LocalStorageAmount": 0,
        "LocalStorageCapacity": 0,
        # as the last StopInstances asked (economical mode: StopCharging), Not-applicable while not stopped
        "StoppedMode": (rec.stopped_mode or "KeepCharging") if stopped else "Not-applicable",
        "OperationLocks": {"LockReason": []},  # no overdue payment, no spot reclaim, no security lock
        "PublicIpAddress": {"IpAddress": []},
        "InnerIpAddress": {"IpAddress": []},
        "EipAddress": {"IpAddress": "", "AllocationId": "", "InternetChargeType": ""},
        "VpcAttributes": {
            "VpcId": "vpc-emulator",
            "VSwitchId": rec.vswitch_id,
            "PrivateIpAddress": {"IpAddress": [rec.private_ip]},
            "NatIpAddress": "",
        },
        "NetworkInterfaces": {"NetworkInterface": [{
            "NetworkInterfaceId": eni,
            "Type": "Primary",
            "MacAddress": mac,
            "PrimaryIpAddress": rec.private_ip,
            "PrivateIpSets": {"PrivateIpSet": [{"PrivateIpAddress": rec.private_ip, "Primary": True}]},
            "Ipv6Sets": {"Ipv6Set": []},
        }]},
        "SecurityGroupIds": {"SecurityGroupId": list(rec.security_group_ids)},
        "Tags": {"Tag": [{"TagKey": k, "TagValue": v} for k, v in rec.tags.items()]},
    }
    facts = instance_type_facts(rec.instance_type)
    if facts is not None:
        answer["InstanceTypeFamily"], answer["Cpu"], answer["Memory"] = facts
    return answer


def _page(req: RpcRequest, default: int, limit: int) -> tuple[int, int]:
    return req.get_int("PageNumber", 1, 1), req.get_int("PageSize", default, 1, limit)


class _Handlers:
    def __init__(self, state: EcsState, faults: FaultBox) -> None:
        self.state = state
        self.faults = faults
        # the last tag-filtered listing (a client pages through it: 50 pages of 5,000 instances filtered the
        # whole set 50 times): (state version, filter) -> matching records in creation order and their seqs
        self._listing: tuple[Any, list[InstanceRecord], list[int]] | None = None

    def run_instances(self, req: RpcRequest) -> dict[str, Any]:
        region = _region(req)
        itype = req.require("InstanceType")
        amount = req.get_int("Amount", 1, 1, 100)
        token = req.get("ClientToken")
        if token is not None and (len(token) > 64 or not token.isascii()):
            raise ApiError("InvalidClientToken.Malformed", "ClientToken must be ASCII and at most 64 characters.")
        user_data = req.get("UserData") or ""
        if user_data:
            try:
                raw = base64.b64decode(user_data, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError("InvalidUserData.Base64FormatInvalid", "The UserData is not base64-encoded.") from None
            if len(raw) > USER_DATA_LIMIT:
                raise ApiError("InvalidUserData.SizeExceeded",
                               f"The UserData exceeds {USER_DATA_LIMIT} bytes ({len(raw)} after decoding).")
        charge = req.get("InstanceChargeType", "PostPaid")
        if charge not in ("PostPaid", "PrePaid"):
            raise ApiError("InvalidInstanceChargeType.ValueNotSupported", f"InstanceChargeType {charge!r} is not "
                           "supported (PostPaid or PrePaid).")
        spot = req.get("SpotStrategy", "NoSpot") or "NoSpot"
        if spot not in ("NoSpot", "SpotWithPriceLimit", "SpotAsPriceGo"):
            raise ApiError("InvalidSpotStrategy", f"SpotStrategy {spot!r} is not valid.")
        if spot != "NoSpot" and charge != "PostPaid":
            raise ApiError("InvalidParameter.SpotStrategy", "Spot instances must be PostPaid.")
        limit = 0.0
        if spot == "SpotWithPriceLimit":
            try:
                limit = float(req.require("SpotPriceLimit"))
            except ValueError:
                raise ApiError("InvalidSpotPriceLimit", "SpotPriceLimit must be a number.") from None
        launch = LaunchRequest(
            region=region,
            zone=req.get("ZoneId") or f"{region}-a",
            instance_type=itype,
            image_id=req.require("ImageId"),
            security_group_id=req.get("SecurityGroupId") or "",
            vswitch_id=req.get("VSwitchId") or "",
            name=req.get("InstanceName") or "",
            host_name=req.get("HostName") or "",
            unique_suffix=req.get_bool("UniqueSuffix"),
            charge_type=charge,
            spot_strategy=spot,
            spot_price_limit=limit,
            bandwidth_out=req.get_int("InternetMaxBandwidthOut", 0, 0, 100),
            amount=amount,
            min_amount=req.get_int("MinAmount", amount, 1, amount),
            tags=tuple((k, v or "") for k, v in req.tags(limit=20)),
            user_data=user_data,
            client_token=token,
            fingerprint=_fingerprint(req.params),
        )
        if req.get_bool("DryRun"):
            # as the real API: the request was checked (above) and the instance type is offered; nothing is
            # created, and the "error" DryRunOperation says the real call would have been accepted
            if itype not in self.state.config.prices:
                raise ApiError("InvalidInstanceType.NotSupported",
                               f"The specified InstanceType {itype} is not supported in zone {launch.zone}.", 403)
            raise ApiError("DryRunOperation", "Request validation has been passed with DryRun flag set.")
        ids, trade_price = self.state.run_instances(launch)
        if self.faults.take_timeout_after_create():
            # the instances exist; the answer arrives after the client has given up
            req.response_delay = self.faults.get().timeout_delay_s
        return {"InstanceIdSets": {"InstanceIdSet": ids}, "TradePrice": trade_price}

    def describe_instances(self, req: RpcRequest) -> dict[str, Any]:
        region = _region(req)
        ids = req.json_list("InstanceIds", 100)
        status = req.get("Status")
        if status is not None and status not in _STATUSES:
            raise ApiError("InvalidStatus.ValueNotSupported", f"Status {status!r} is not one of {_STATUSES}.")
        zone, itype = req.get("ZoneId"), req.get("InstanceType")
        tag_filters = req.tags(limit=20)
        token_style = req.get("NextToken") is not None or req.get("MaxResults") is not None
        with self.state.lock:
            now = self.state.clock()
            key = (self.state.version, region, zone, itype, tuple(tag_filters))
            if ids is None and status is None and self._listing is not None and self._listing[0] == key:
                rows, seqs = self._listing[1], self._listing[2]  # the same listing, paged on: filter once
            else:
                if ids is not None:  # by id: look them up (in creation order, like the real listing)
                    found = [self.state.instances[i] for i in dict.fromkeys(ids) if i in self.state.instances]
                    candidates = sorted((r for r in found if r.deleted_at is None), key=lambda r: r.seq)
                else:
                    candidates = list(self.state.live())
                rows = []
                for rec in candidates:
                    if rec.region != region or (zone and rec.zone != zone) or (itype and rec.instance_type != itype):
                        continue
                    if any(k not in rec.tags or (v is not None and rec.tags[k] != v) for k, v in tag_filters):
                        continue
                    if status is None or self.state.status(rec, now) == status:
                        rows.append(rec)
                seqs = [rec.seq for rec in rows]
                if ids is None and status is None:
                    self._listing = (key, rows, seqs)
            answer: dict[str, Any] = {"TotalCount": len(rows)}
            if token_style:
                size = req.get_int("MaxResults", 10, 1, 100)
                after = _decode_token(req.get("NextToken"))
                start = bisect.bisect_right(seqs, after)  # rows are in creation (seq) order
                chosen = rows[start:start + size]
                more = len(rows) - start > size
                answer.update(PageSize=size, PageNumber=1,
                              NextToken=_encode_token(chosen[-1].seq) if more and chosen else "")
            else:
                number, size = _page(req, 10, 100)
                chosen = rows[(number - 1) * size: number * size]
                answer.update(PageNumber=number, PageSize=size, NextToken="")
            answer["Instances"] = {"Instance": [_instance_json(rec, self.state.status(rec, now)) for rec in chosen]}
        return answer

    def describe_instance_status(self, req: RpcRequest) -> dict[str, Any]:
        region = _region(req)
        ids = req.repeat("InstanceId", 100)
        zone = req.get("ZoneId")
        number, size = _page(req, 10, 50)
        with self.state.lock:
            now = self.state.clock()
            wanted = set(ids) if ids else None
            rows = [{"InstanceId": r.id, "Status": self.state.status(r, now)} for r in self.state.live()
                    if r.region == region and (wanted is None or r.id in wanted) and (not zone or r.zone == zone)]
        return {"TotalCount": len(rows), "PageNumber": number, "PageSize": size,
                "InstanceStatuses": {"InstanceStatus": rows[(number - 1) * size: number * size]}}

    def _delete(self, req: RpcRequest, ids: list[str]) -> dict[str, Any]:
        region = _region(req)
        token = req.get("ClientToken")
        key = f"{region}/{req.action}/{token}" if token else None
        with self.state.lock:
            if key and key in self.state.tokens:
                if self.state.tokens[key]["fingerprint"] != _fingerprint(req.params):
                    raise ApiError("IdempotentParameterMismatch", "The specified parameter has changed while "
                                   "using an already used clientToken.")
                return {}
            self.state.delete(region, ids, force=req.get_bool("Force"), dry_run=req.get_bool("DryRun"))
            if key:
                self.state.tokens[key] = {"fingerprint": _fingerprint(req.params), "ids": ids, "trade_price": 0}
                self.state.save()
        return {}

    def delete_instances(self, req: RpcRequest) -> dict[str, Any]:
        ids = req.repeat("InstanceId", 100)
        if not ids:
            req.require("InstanceId.1")
        return self._delete(req, ids)

    def delete_instance(self, req: RpcRequest) -> dict[str, Any]:
        return self._delete(req, [req.require("InstanceId")])

    def stop_instances(self, req: RpcRequest) -> dict[str, Any]:
        ids = req.repeat("InstanceId", 100)
        if not ids:
            req.require("InstanceId.1")
        mode = req.get("StoppedMode") or "KeepCharging"  # the API's default without the account-wide setting
        if mode not in ("KeepCharging", "StopCharging"):
            raise ApiError("InvalidParameter.StoppedMode", f'The specified parameter "StoppedMode" is not valid: '
                           f"{mode!r} (KeepCharging or StopCharging).")
        force = req.get_bool("ForceStop")
        return {"InstanceResponses": {"InstanceResponse": self.state.stop(_region(req), ids, mode, force)}}

    def start_instances(self, req: RpcRequest) -> dict[str, Any]:
        ids = req.repeat("InstanceId", 100)
        if not ids:
            req.require("InstanceId.1")
        return {"InstanceResponses": {"InstanceResponse": self.state.start(_region(req), ids)}}

    def tag_resources(self, req: RpcRequest) -> dict[str, Any]:
        kind = req.require("ResourceType")
        if kind.lower() != "instance":
            raise ApiError("InvalidResourceType.NotSupported", f"ResourceType {kind!r} is not supported by the "
                           "emulator (only instance).")
        ids = req.repeat("ResourceId", 50)
        tags = req.tags(limit=20)
        if not ids or not tags:
            req.require("ResourceId.1" if not ids else "Tag.1.Key")
        self.state.tag(_region(req), ids, tags)
        return {}

    def describe_price(self, req: RpcRequest) -> dict[str, Any]:
        _region(req)  # required, as by the real API (prices are per region)
        itype = req.require("InstanceType")
        if itype not in self.state.config.prices:
            raise ApiError("InvalidInstanceType.NotSupported", f"The specified InstanceType {itype} is not "
                           "supported.", 403)
        amount = req.get_int("Amount", 1, 1, 1000)
        spot = (req.get("SpotStrategy") or "NoSpot") != "NoSpot"
        original = self.state.config.prices[itype] * amount
        trade = original * (SPOT_DISCOUNT if spot else 1.0)
        price = {"OriginalPrice": round(original, 4), "DiscountPrice": round(original - trade, 4),
                 "TradePrice": round(trade, 4), "Currency": "CNY"}
        return {"PriceInfo": {"Price": price, "Rules": {"Rule": []}}}


def _encode_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"after:{seq}".encode()).decode().rstrip("=")


def _decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        head, _, seq = text.partition(":")
        if head != "after":
            raise ValueError(text)
        return int(seq)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise ApiError("InvalidParameter.NextToken", "The specified NextToken is not valid.") from None


def _sold_out(faults: FaultBox) -> Callable[[str, str, bool], bool]:
    def check(zone: str, itype: str, spot: bool) -> bool:
        gone = set(faults.get().sold_out)
        keys = {zone, itype, f"{zone}/{itype}"} | ({"spot", f"spot:{itype}"} if spot else set())
        return bool(gone & keys)

    return check


def install_ecs(server: RpcServer, state: EcsState) -> None:
    """Register the ECS actions and admin endpoints on ``server``."""
    h = _Handlers(state, server.faults)
    for action, fn in {
        "RunInstances": h.run_instances,
        "DescribeInstances": h.describe_instances,
        "DescribeInstanceStatus": h.describe_instance_status,
        "DeleteInstances": h.delete_instances,
        "DeleteInstance": h.delete_instance,
        "StopInstances": h.stop_instances,
        "StartInstances": h.start_instances,
        "TagResources": h.tag_resources,
        "DescribePrice": h.describe_price,
    }.items():
        server.register("Ecs", ECS_VERSION, action, fn)
    install_images(server, state, ECS_VERSION)
    server.register_state("ecs", state.snapshot)
    server.register_admin("GET", "/_admin/ecs/prices", lambda _b: dict(state.config.prices))
    server.register_admin("POST", "/_admin/ecs/stock", lambda b: _set_limits(state, state.config.stock, b))
    server.register_admin("POST", "/_admin/ecs/quotas", lambda b: _set_limits(state, state.config.quotas, b))


def _set_limits(state: EcsState, target: dict[str, int], body: Any) -> dict[str, int]:
    """Merge ``{"key": N}`` into stock or quotas; ``null`` removes the limit."""
    if not isinstance(body, dict):
        raise ValueError('the body must be a JSON object like {"cn-test-a/ecs.g7.large": 5}')  # noqa: TRY004
    with state.lock:
        for key, value in body.items():
            if value is None:
                target.pop(key, None)
            elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                target[key] = value
            else:
                raise ValueError(f"{key!r}: the limit must be a non-negative integer or null")
        state.save()
        return dict(target)


class EcsEmulator:
    """An ECS emulator in this process: ``url = EcsEmulator(...).start()`` ... ``.stop()``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        access_keys: Mapping[str, str] | None = None,
        config: EcsConfig | None = None,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        keys = access_keys or {"local": "local-secret"}
        self.config = config or EcsConfig()
        self.faults = FaultBox(faults, seed=seed)
        self.state = EcsState(self.config, clock=clock, is_sold_out=_sold_out(self.faults),
                              is_unsupported=lambda t: t in self.faults.get().unsupported)
        self.server = RpcServer(host, port, {k: AccessKey(k, s) for k, s in keys.items()}, self.faults, clock)
        install_ecs(self.server, self.state)
        self.nodes: NodeHost | None = None
        if self.config.node_engine:
            self.nodes = NodeHost(self.config.node_engine, self.config.vswitches,
                                  scope=scope_for(self.config.state_file), boot_delay=self.config.boot_delay,
                                  clock=clock)
            self.state.nodes = self.nodes
            self.server.register_admin("POST", "/_admin/ecs/node-faults", self.nodes.inject)
            self.server.register_admin("GET", "/_admin/ecs/nodes", lambda _b: self.nodes.snapshot()
                                       if self.nodes else {})

    def add_slb(self) -> SlbState:
        """Serve the SLB API (2014-05-15) on the same endpoint, its backend servers checked against this
        emulator's live instances as the real API checks them (``burstctl emulate ecs --slb``)."""
        state = SlbState(instance_exists=lambda iid: (rec := self.state.instances.get(iid)) is not None
                         and rec.deleted_at is None)
        install_slb(self.server, state)
        return state

    def add_cr(self, logins: Mapping[str, Callable[[], tuple[str, str]]]) -> None:
        """Serve Container Registry's GetAuthorizationToken on the same endpoint: ``logins[instance id]()``
        gives the registry's user and password (``burstctl emulate ecs --cr-instance``)."""
        install_cr(self.server, logins)

    def start(self) -> str:
        if self.nodes is not None:
            self.nodes.start()
        return self.server.start()

    def stop(self) -> None:
        self.server.stop()
        if self.nodes is not None:
            # machines outlive an emulator with a state file (its restart adopts them); others go with it
            self.nodes.stop(remove=not self.config.state_file)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def endpoint(self) -> str:
        """``host:port``, what ``AcsClient.add_endpoint`` takes."""
        return f"{self.server.host}:{self.server.port}"

    @property
    def docker_endpoint(self) -> str:
        return self.config.docker_endpoint

    def set_faults(self, **changes: Any) -> Faults:
        return self.faults.update(changes)

    def calls(self) -> dict[str, int]:
        return dict(self.server.calls()["calls"])

    def live_instances(self) -> list[dict[str, Any]]:
        return list(self.state.snapshot()["instances"])
