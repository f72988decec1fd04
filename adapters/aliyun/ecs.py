"""``EcsComputePool``: the controller's compute pool on Alibaba Cloud ECS (aliyun-python-sdk-ecs).

Launches in batches of at most 100 with a ClientToken derived from the durable intent token, so a retried
or replayed launch returns the same instances; tags every instance with its owner and intent; falls back
across instance types, zones and spot/on-demand on capacity and quota errors, remembering a sold-out
offering for a while; lists by ownership tags and releases with forced DeleteInstances. It also makes,
lists and deletes custom images (``controller.ports.MachineImages``: CreateImage, DescribeImages,
DeleteImage), for baked node images. Built by the wiring module; the controller sees only the ports."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import json
import logging
import threading
import time
from builtins import list as _list
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aliyunsdkecs.request.v20140526.CreateImageRequest import CreateImageRequest
from aliyunsdkecs.request.v20140526.DeleteImageRequest import DeleteImageRequest
from aliyunsdkecs.request.v20140526.DeleteInstancesRequest import DeleteInstancesRequest
from aliyunsdkecs.request.v20140526.DescribeImagesRequest import DescribeImagesRequest
from aliyunsdkecs.request.v20140526.DescribeInstancesRequest import DescribeInstancesRequest
from aliyunsdkecs.request.v20140526.DescribePriceRequest import DescribePriceRequest
from aliyunsdkecs.request.v20140526.RunInstancesRequest import RunInstancesRequest
from aliyunsdkecs.request.v20140526.StartInstancesRequest import StartInstancesRequest
from aliyunsdkecs.request.v20140526.StopInstancesRequest import StopInstancesRequest

from adapters.aliyun.ecs_api import EcsApi, EcsApiSettings
from controller.errors import (
    BurstError,
    CapacityError,
    ConfigError,
    NotFoundError,
    PermanentError,
    QuotaError,
)
from controller.ports import (
    TAG_CONTROLLER,
    TAG_INTENT,
    TAG_POLICY,
    Instance,
    InstanceState,
    LaunchSpec,
    MachineImage,
    Owner,
)

__all__ = ["BATCH", "USER_DATA_LIMIT", "EcsComputePool", "EcsPoolSettings", "client_token"]

logger = logging.getLogger(__name__)

BATCH = 100  # RunInstances Amount, DescribeInstances page and id list, DeleteInstances ids: all 100 at most
USER_DATA_LIMIT = 32 * 1024
LIST_PARALLEL = 4  # DescribeInstances pages of one listing in flight at once
_EMPTY: dict[str, Any] = {}
_STATES = {
    "Pending": InstanceState.PENDING,
    "Starting": InstanceState.STARTING,
    "Running": InstanceState.RUNNING,
    "Stopping": InstanceState.STOPPING,
    "Stopped": InstanceState.STOPPED,
    "Deleted": InstanceState.GONE,
}


def client_token(token: str, batch: int) -> str:
    """The RunInstances ClientToken of one batch of a launch: ASCII, 64 characters at most, and the same
    for the same intent token and batch whatever the offering (so a replay cannot buy twice)."""
    return "bc-" + hashlib.sha256(f"{token}-{batch}".encode()).hexdigest()[:48]


@dataclass(frozen=True, slots=True)
class _Offering:
    instance_type: str
    zone: str
    spot: bool

    def __str__(self) -> str:
        return f"{self.instance_type}@{self.zone}{' spot' if self.spot else ''}"


@dataclass
class EcsPoolSettings:
    api: EcsApiSettings
    # where a node's Docker Engine answers; {private_ip}, {instance_id}, {zone} are filled in
    docker_endpoint_template: str = "tcp://{private_ip}:2376"
    sold_out_ttl: float = 300.0  # how long a sold-out offering is skipped
    clock: Callable[[], float] = time.monotonic
    fetch_prices: bool = True  # DescribePrice once per type, for cost figures
    # DescribeInstances of what a launch created, so ``launch`` returns addresses and states; the daemon turns
    # it off (its boot check describes every booting instance anyway, 100 per call: docs/ha.md "Scale"), and
    # ``launch`` then returns the instances as RunInstances created them (pending, type, zone, spot, price)
    describe_after_launch: bool = True


class EcsComputePool:
    """``controller.ports.ComputePool`` on ECS."""

    def __init__(self, settings: EcsPoolSettings, api: EcsApi | None = None) -> None:
        self.settings = settings
        self.api = api or EcsApi(settings.api)
        self.region = settings.api.region
        self._lock = threading.Lock()
        self._sold_out: dict[_Offering, float] = {}  # offering -> when to try it again
        self._prices: dict[tuple[str, bool], float | None] = {}
        self._list_pool: ThreadPoolExecutor | None = None  # listing pages fetched in parallel (made on first use)

    # ------------------------------------------------------------------ launch

    def launch(self, spec: LaunchSpec, count: int, token: str) -> _list[Instance]:
        if count <= 0:
            return []
        if spec.region != self.region:
            raise ConfigError(f"launch spec region {spec.region} is not this pool's region {self.region}")
        if not spec.tags.get(TAG_CONTROLLER):
            # an instance without our identity could never be listed again: that is a leak by design
            raise PermanentError(f"refusing to launch instances without the {TAG_CONTROLLER} tag")
        user_data = base64.b64encode(spec.user_data.encode()).decode() if spec.user_data else ""
        if len(spec.user_data.encode()) > USER_DATA_LIMIT:
            raise ConfigError(f"user data is {len(spec.user_data.encode())} bytes; ECS accepts {USER_DATA_LIMIT}")
        tags = {**spec.tags, TAG_INTENT: token}
        if len(tags) > 20:
            raise ConfigError(f"{len(tags)} tags; ECS accepts 20 per instance")
        ids: _list[str] = []
        created: dict[str, Instance] = {}
        for batch, start in enumerate(range(0, count, BATCH)):
            amount = min(BATCH, count - start)
            got, offering = self._launch_batch(spec, amount, client_token(token, batch), tags, user_data)
            ids += got
            for iid in got:
                created[iid] = Instance(iid, InstanceState.PENDING, offering.instance_type, offering.zone, None,
                                        dict(tags), spot=offering.spot,
                                        price_per_hour=self._price(offering.instance_type, offering.spot))
        logger.info("launched %d instance(s) for intent %s", len(ids), token,
                    extra={"intent": token, "instances": len(ids)})
        if not self.settings.describe_after_launch:
            return [created[i] for i in ids]
        found = {i.id: i for i in self.get(ids)}
        # an instance not yet visible to DescribeInstances (eventual consistency) is still ours: report it
        return [found.get(i) or created[i] for i in ids]

    def _offerings(self, spec: LaunchSpec) -> _list[_Offering]:
        kinds = [True, False] if spec.spot_strategy != "NoSpot" and spec.spot_fallback_on_demand else \
            [spec.spot_strategy != "NoSpot"]
        return [_Offering(t, z, s) for s in kinds for t in spec.instance_types for z in spec.zones]

    def _launch_batch(self, spec: LaunchSpec, amount: int, token: str, tags: dict[str, str],
                      user_data: str) -> tuple[_list[str], _Offering]:
        now = self.settings.clock()
        with self._lock:
            offerings = [o for o in self._offerings(spec) if self._sold_out.get(o, 0.0) <= now]
        if not offerings:
            raise CapacityError(f"every offering of {', '.join(spec.instance_types)} in "
                                f"{', '.join(spec.zones)} was sold out within the last "
                                f"{self.settings.sold_out_ttl:.0f}s", code="OperationDenied.NoStock")
        failures: _list[BurstError] = []
        for offering in offerings:
            req = self._run_request(spec, offering, amount, token, tags, user_data)
            try:
                answer = self.api.call(req)
            except (CapacityError, QuotaError) as exc:
                with self._lock:
                    self._sold_out[offering] = self.settings.clock() + self.settings.sold_out_ttl
                logger.info("offering %s unavailable (%s); trying the next", offering, exc.code,
                            extra={"code": exc.code, "request_id": exc.request_id})
                failures.append(exc)
                continue
            except PermanentError as exc:
                if exc.code != "IdempotentParameterMismatch":
                    raise
                # this token already bought instances with another offering (an earlier run fell back
                # further than we have now): keep walking, the matching offering answers with them
                failures.append(exc)
                continue
            ids = _list(answer.get("InstanceIdSets", {}).get("InstanceIdSet", []))
            trade = answer.get("TradePrice")
            if ids and isinstance(trade, (int, float)):
                self._prices[(offering.instance_type, offering.spot)] = float(trade) / len(ids)
            logger.info("RunInstances %s x%d -> %d (request %s)", offering, amount, len(ids),
                        answer.get("RequestId"), extra={"request_id": answer.get("RequestId")})
            return ids, offering
        mismatch = [f for f in failures if f.code == "IdempotentParameterMismatch"]
        if mismatch:
            raise mismatch[-1]
        quota = [f for f in failures if isinstance(f, QuotaError)]
        last = quota[-1] if quota and len(quota) == len(failures) else failures[-1]
        kind = QuotaError if isinstance(last, QuotaError) else CapacityError
        raise kind(f"no offering could launch {amount} instance(s): "
                   + "; ".join(f"{o}: {f.code}" for o, f in zip(offerings, failures, strict=False)),
                   code=last.code, request_id=last.request_id)

    def _run_request(self, spec: LaunchSpec, offering: _Offering, amount: int, token: str,
                     tags: dict[str, str], user_data: str) -> RunInstancesRequest:
        req = RunInstancesRequest()
        req.set_InstanceType(offering.instance_type)
        req.set_ZoneId(offering.zone)
        if offering.zone in spec.vswitches:
            req.set_VSwitchId(spec.vswitches[offering.zone])
        req.set_ImageId(spec.image_id)
        if spec.security_group_id:
            req.set_SecurityGroupId(spec.security_group_id)
        req.set_Amount(amount)
        req.set_MinAmount(amount)  # all or nothing: a partial batch would need a second token
        req.set_ClientToken(token)
        req.set_InstanceChargeType("PostPaid")
        if offering.spot:
            req.set_SpotStrategy(spec.spot_strategy)
            if spec.spot_strategy == "SpotWithPriceLimit" and spec.spot_price_limit is not None:
                req.set_SpotPriceLimit(spec.spot_price_limit)
        else:
            req.set_SpotStrategy("NoSpot")
        req.set_InstanceName(f"{spec.name_prefix}-{token[3:11]}")
        req.set_InternetMaxBandwidthOut(spec.internet_max_bandwidth_out)
        req.set_Tags([{"Key": k, "Value": v} for k, v in sorted(tags.items())])
        if user_data:
            req.set_UserData(user_data)
        return req

    # ------------------------------------------------------------------ list, get

    def list(self, owner: Owner) -> _list[Instance]:
        """Every instance carrying the owner's tags: one DescribeInstances per 100. PERF: the first page says
        how many there are and the others are fetched ``LIST_PARALLEL`` at a time (PageNumber paging; NextToken
        paging can only go one page after the other, which made 5,000 instances 50 round trips in a row).
        An instance deleted while the pages are read can shift one out of this listing; every caller treats a
        listing as a moment's view (the reconcile confirms a missing one by id before calling it vanished)."""
        tags = [{"Key": TAG_CONTROLLER, "Value": owner.controller_id}]
        if owner.policy is not None:
            tags.append({"Key": TAG_POLICY, "Value": owner.policy})
        first = self._page(tags, 1)
        pages = [first]
        total = int(first.get("TotalCount") or 0)
        count = -(-total // BATCH)
        if count > 1:
            with self._lock:
                if self._list_pool is None:
                    self._list_pool = ThreadPoolExecutor(LIST_PARALLEL, thread_name_prefix="ecs-list")
                pool = self._list_pool
            pages += _list(pool.map(lambda n: self._page(tags, n), range(2, count + 1)))
        while int(pages[-1].get("TotalCount") or 0) > len(pages) * BATCH:  # more appeared meanwhile
            pages.append(self._page(tags, len(pages) + 1))
        out: dict[str, Instance] = {}
        for answer in pages:
            for raw in answer.get("Instances", {}).get("Instance", []):
                out.setdefault(raw["InstanceId"], self._instance(raw))
        return _list(out.values())

    def _page(self, tags: _list[dict[str, str]], number: int) -> dict[str, Any]:
        req = DescribeInstancesRequest()
        req.set_Tags(tags)
        req.set_PageSize(BATCH)
        req.set_PageNumber(number)
        return self.api.call(req)

    def get(self, ids: Sequence[str]) -> _list[Instance]:
        out: _list[Instance] = []
        for chunk in _chunks(_list(dict.fromkeys(ids)), BATCH):
            req = DescribeInstancesRequest()
            req.set_InstanceIds(json.dumps(chunk))
            req.set_PageSize(BATCH)
            answer = self.api.call(req)
            out += [self._instance(raw) for raw in answer.get("Instances", {}).get("Instance", [])]
        return out

    def _instance(self, raw: dict[str, Any]) -> Instance:
        # PERF: 5,000 of these per reconcile; every lookup counts
        get = raw.get
        ips = (get("VpcAttributes") or _EMPTY).get("PrivateIpAddress", _EMPTY).get("IpAddress") or \
            (get("InnerIpAddress") or _EMPTY).get("IpAddress")
        ip = ips[0] if ips else None
        spot = get("SpotStrategy", "NoSpot") not in ("NoSpot", "")
        iid, zone, itype = raw["InstanceId"], get("ZoneId", ""), get("InstanceType", "")
        endpoint = None
        if ip:
            endpoint = self.settings.docker_endpoint_template.format(private_ip=ip, instance_id=iid, zone=zone)
        price = self._prices.get((itype, spot)) if (itype, spot) in self._prices else self._price(itype, spot)
        return Instance(iid, _STATES.get(get("Status", ""), InstanceState.PENDING), itype, zone, ip,
                        {t["TagKey"]: t.get("TagValue", "") for t in (get("Tags") or _EMPTY).get("Tag", ())},
                        _parse_time(get("CreationTime")), spot, price, endpoint)

    def _price(self, instance_type: str, spot: bool) -> float | None:
        key = (instance_type, spot)
        if key in self._prices or not self.settings.fetch_prices or not instance_type:
            return self._prices.get(key)
        req = DescribePriceRequest()
        req.set_ResourceType("instance")
        req.set_InstanceType(instance_type)
        req.set_PriceUnit("Hour")
        if spot:
            req.set_SpotStrategy("SpotAsPriceGo")
        try:
            answer = self.api.call(req)
            self._prices[key] = float(answer["PriceInfo"]["Price"]["TradePrice"])
        except (BurstError, KeyError, TypeError, ValueError) as exc:
            logger.info("no price for %s: %s", instance_type, exc)
            self._prices[key] = None  # do not ask again in this process: the price is informational
        return self._prices[key]

    # ------------------------------------------------------------------ release

    def release(self, ids: Sequence[str]) -> None:
        for chunk in _chunks(_list(dict.fromkeys(ids)), BATCH):
            self._release_chunk(chunk)

    def _release_chunk(self, chunk: _list[str]) -> None:
        for _ in range(3):  # ids can vanish between the describe and the delete; a few passes settle it
            if not chunk:
                return
            req = DeleteInstancesRequest()
            req.set_InstanceIds(chunk)
            req.set_Force(True)
            req.set_ClientToken("bc-rel-" + hashlib.sha256(",".join(sorted(chunk)).encode()).hexdigest()[:40])
            try:
                answer = self.api.call(req)
                logger.info("released %d instance(s) (request %s)", len(chunk), answer.get("RequestId"),
                            extra={"instances": len(chunk), "request_id": answer.get("RequestId")})
                return
            except NotFoundError:
                # some are gone already, which is the outcome we want: delete the rest
                alive = {i.id for i in self.get(chunk)}
                logger.info("release: %d of %d already gone", len(chunk) - len(alive), len(chunk))
                chunk = [i for i in chunk if i in alive]
        if chunk:
            raise PermanentError(f"could not release {len(chunk)} instance(s): they keep disappearing")

    # ------------------------------------------------------------------ stop and start (the warm pool)

    def stop(self, ids: Sequence[str], *, charging: bool = False) -> None:
        for chunk in _chunks(_list(dict.fromkeys(ids)), BATCH):
            req = StopInstancesRequest()
            req.set_InstanceIds(chunk)
            # economical mode: vCPU and memory stop being charged, the disks stay (and cost)
            req.set_StoppedMode("KeepCharging" if charging else "StopCharging")
            answer = self.api.call(req)
            logger.info("stopped %d instance(s) (%s, request %s)", len(chunk),
                        "KeepCharging" if charging else "StopCharging", answer.get("RequestId"))

    def start(self, ids: Sequence[str]) -> None:
        for chunk in _chunks(_list(dict.fromkeys(ids)), BATCH):
            req = StartInstancesRequest()
            req.set_InstanceIds(chunk)
            answer = self.api.call(req)
            logger.info("started %d instance(s) (request %s)", len(chunk), answer.get("RequestId"))

    # ------------------------------------------------------------------ custom images

    def create_image(self, instance_id: str, name: str, tags: dict[str, str], token: str) -> str:
        req = CreateImageRequest()
        req.set_InstanceId(instance_id)
        req.set_ImageName(name)
        req.set_ClientToken("bc-img-" + hashlib.sha256(token.encode()).hexdigest()[:40])
        req.set_Tags([{"Key": k, "Value": v} for k, v in sorted(tags.items())])
        answer = self.api.call(req)
        image_id = str(answer["ImageId"])
        logger.info("CreateImage %s from %s (request %s)", image_id, instance_id, answer.get("RequestId"),
                    extra={"image": image_id, "instance": instance_id, "request_id": answer.get("RequestId")})
        return image_id

    def images(self, tags: dict[str, str]) -> _list[MachineImage]:
        out: dict[str, MachineImage] = {}
        number = 1
        while True:
            req = DescribeImagesRequest()
            req.set_ImageOwnerAlias("self")
            req.set_Status("Creating,Waiting,Available,UnAvailable,CreateFailed")
            req.set_Tags([{"Key": k, "Value": v} for k, v in sorted(tags.items())])
            req.set_PageSize(BATCH)
            req.set_PageNumber(number)
            answer = self.api.call(req)
            page = answer.get("Images", {}).get("Image", [])
            for raw in page:
                out.setdefault(raw["ImageId"], MachineImage(
                    id=raw["ImageId"], name=raw.get("ImageName", ""), status=raw.get("Status", ""),
                    created_at=_parse_time(raw.get("CreationTime")), in_use=raw.get("Usage") == "instance",
                    tags={t["TagKey"]: t.get("TagValue", "") for t in (raw.get("Tags") or _EMPTY).get("Tag", ())}))
            if len(page) < BATCH or number * BATCH >= int(answer.get("TotalCount") or 0):
                break
            number += 1
        return sorted(out.values(), key=lambda i: -(i.created_at or 0.0))

    def delete_image(self, image_id: str) -> bool:
        req = DeleteImageRequest()
        req.set_ImageId(image_id)
        try:
            answer = self.api.call(req)
        except NotFoundError:
            return True
        except PermanentError as exc:
            if exc.code == "ImageUsingByInstance":
                return False
            raise
        logger.info("DeleteImage %s (request %s)", image_id, answer.get("RequestId"),
                    extra={"image": image_id, "request_id": answer.get("RequestId")})
        return True

    def close(self) -> None:
        if self._list_pool is not None:
            self._list_pool.shutdown(wait=False)
        self.api.close()


def _chunks(items: _list[str], size: int) -> Iterator[_list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@functools.lru_cache(maxsize=4096)  # a launch's instances share their CreationTime (minute precision)
def _parse_time(text: str | None) -> float | None:
    """ECS CreationTime (``2017-12-10T04:04Z``, UTC) as epoch seconds."""
    if not text:
        return None
    try:
        stamp = dt.datetime.fromisoformat(text)  # 3.11+ reads the trailing Z
    except ValueError:
        return None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)).timestamp()
