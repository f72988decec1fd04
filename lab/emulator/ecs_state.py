"""The ECS emulator's world: instances, ClientTokens, loopback addresses, stock, quotas and prices, kept
thread-safe and (with a state file) persisted atomically. The API handlers in ``ecs.py`` call it; it
answers ``ApiError`` exactly where the real API would refuse."""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import secrets
import string
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lab.emulator.ecs_records import (
    SPOT_DISCOUNT,
    EcsConfig,
    ImageRecord,
    InstanceRecord,
    LaunchRequest,
    NodeHooks,
)
from lab.emulator.ecs_shapes import sequential_name
from lab.emulator.rpc_wire import ApiError

__all__ = ["EcsState"]

logger = logging.getLogger(__name__)

_ID_ALPHABET = string.ascii_lowercase + string.digits


class EcsState:
    def __init__(self, config: EcsConfig, clock: Callable[[], float] = time.time,
                 is_sold_out: Callable[[str, str, bool], bool] | None = None,
                 is_unsupported: Callable[[str], bool] | None = None) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.RLock()
        self.instances: dict[str, InstanceRecord] = {}
        self.tokens: dict[str, dict[str, Any]] = {}  # "region/action/token" -> stored answer
        self.user_data: dict[str, str] = {}  # launch id -> base64 user data (shared by its instances)
        self.images: dict[str, ImageRecord] = {}  # custom images (CreateImage), deleted ones kept marked
        self._seq = 0
        self.version = 0  # moved by every change (see save): DescribeInstances caches its filtered listing
        self.nodes: NodeHooks | None = None  # booted nodes, set by EcsEmulator when config.node_engine is set
        self._vswitch_next: dict[str, int] = {}
        self._vswitch_freed: dict[str, deque[str]] = {}
        self._network = ipaddress.ip_network(config.address_pool, strict=False)
        if not self._network.is_loopback:
            raise ValueError(f"--address-pool {config.address_pool} must be inside 127.0.0.0/8")
        self._next_host = 0
        self._freed: deque[str] = deque()
        self._is_sold_out = is_sold_out or (lambda _z, _t, _s: False)
        self._is_unsupported = is_unsupported or (lambda _t: False)
        if config.state_file and Path(config.state_file).exists():
            self._load(Path(config.state_file))

    # ------------------------------------------------------------------ lifecycle

    def status(self, rec: InstanceRecord, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        if rec.stopped_at is not None:
            timed = "Stopping" if now - rec.stopped_at < self.config.stop_delay else "Stopped"
        else:
            age = now - (rec.started_at or rec.created_at)
            timed = "Running" if age >= self.config.boot_delay else \
                "Pending" if age < self.config.boot_delay / 4 else "Starting"
        if self.nodes is not None and rec.deleted_at is None:
            return self.nodes.status(rec.id, timed)
        return timed

    def live(self) -> Iterable[InstanceRecord]:
        return (r for r in self.instances.values() if r.deleted_at is None)

    # ------------------------------------------------------------------ RunInstances

    def run_instances(self, req: LaunchRequest) -> tuple[list[str], float]:
        with self.lock:
            token_key = f"{req.region}/RunInstances/{req.client_token}" if req.client_token else None
            if token_key and token_key in self.tokens:
                stored = self.tokens[token_key]
                if stored["fingerprint"] != req.fingerprint:
                    raise ApiError("IdempotentParameterMismatch", "The specified parameter has changed while "
                                   "using an already used clientToken.")
                return list(stored["ids"]), float(stored["trade_price"])
            if req.instance_type not in self.config.prices or self._is_unsupported(req.instance_type):
                raise ApiError("InvalidInstanceType.NotSupported",
                               f"The specified InstanceType {req.instance_type} is not supported in zone "
                               f"{req.zone}.", 403)
            spot = req.spot_strategy != "NoSpot"
            amount = req.amount
            left = self._stock_left(req.zone, req.instance_type)
            if self._is_sold_out(req.zone, req.instance_type, spot) or (left is not None and left < req.min_amount):
                raise ApiError("OperationDenied.NoStock", "The resource is out of stock in the specified zone. "
                               "Please try other types, or choose other regions and zones.", 403)
            if left is not None:
                amount = min(amount, left)
            room = self._quota_room(req.instance_type)
            if room is not None:
                if room < req.min_amount:
                    raise ApiError("QuotaExceed.ElasticQuota", f"The number of instances of {req.instance_type} "
                                   "would exceed your quota. Raise it in the quota center.", 403)
                amount = min(amount, room)
            self.check_image(req.region, req.image_id)
            if self.nodes is not None:
                why = self.nodes.check_launch(req.image_id, req.vswitch_id)
                if why:
                    code, _, message = why.partition(":")
                    raise ApiError(code, message, 404)
                addresses = self._allocate_in(req.vswitch_id, amount, req.min_amount)
            else:
                addresses = self._allocate(amount, req.min_amount)
            amount = len(addresses)
            price = self.config.prices[req.instance_type] * (SPOT_DISCOUNT if spot else 1.0)
            launch_id = secrets.token_hex(8)
            if req.user_data:
                self.user_data[launch_id] = req.user_data
            now = self.clock()
            ids = []
            for n, ip in enumerate(addresses):
                self._seq += 1
                iid = self._new_id()
                host = sequential_name(req.host_name, n, req.amount, req.unique_suffix)
                rec = InstanceRecord(
                    id=iid, seq=self._seq, region=req.region, zone=req.zone,
                    instance_type=req.instance_type, image_id=req.image_id,
                    security_group_ids=[req.security_group_id] if req.security_group_id else [],
                    vswitch_id=req.vswitch_id, name=sequential_name(req.name, n, req.amount, req.unique_suffix),
                    host_name=host.replace("${instance_id}", iid),
                    charge_type=req.charge_type, spot_strategy=req.spot_strategy,
                    spot_price_limit=req.spot_price_limit, bandwidth_out=req.bandwidth_out, private_ip=ip,
                    price_per_hour=price, launch_id=launch_id, created_at=now, tags=dict(req.tags),
                )
                self.instances[rec.id] = rec
                ids.append(rec.id)
            self._take_stock(req.zone, req.instance_type, amount)
            if self.nodes is not None:
                raw = base64.b64decode(req.user_data) if req.user_data else b""
                for iid in ids:
                    rec = self.instances[iid]
                    self.nodes.launch(iid, rec.image_id, rec.vswitch_id, rec.private_ip, _hostname(rec), raw)
            trade_price = round(price * amount, 4)
            if token_key:
                self.tokens[token_key] = {"fingerprint": req.fingerprint, "ids": ids, "trade_price": trade_price}
            self.save()
            logger.info("RunInstances %s x%d in %s: %s", req.instance_type, amount, req.zone, ",".join(ids))
            return ids, trade_price

    def check_image(self, region: str, image_id: str) -> None:
        """A custom image (``m-...``) must exist in the region and be Available to boot from."""
        if not image_id.startswith("m-"):
            return
        image = self.images.get(image_id)
        if image is None or image.deleted_at is not None or image.region != region:
            raise ApiError("InvalidImageId.NotFound", f"The specified ImageId {image_id} does not exist.", 404)
        if image.status != "Available":
            raise ApiError("IncorrectImageStatus", f"The image {image_id} is {image.status}, not Available.", 403)

    def _new_id(self) -> str:
        while True:
            candidate = "i-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))
            if candidate not in self.instances:
                return candidate

    def _stock_key(self, zone: str, itype: str) -> str | None:
        for key in (f"{zone}/{itype}", itype, zone):
            if key in self.config.stock:
                return key
        return None

    def _stock_left(self, zone: str, itype: str) -> int | None:
        key = self._stock_key(zone, itype)
        return None if key is None else self.config.stock[key]

    def _take_stock(self, zone: str, itype: str, n: int) -> None:
        key = self._stock_key(zone, itype)
        if key is not None:
            self.config.stock[key] = max(0, self.config.stock[key] - n)

    def _quota_room(self, itype: str) -> int | None:
        rooms = []
        if itype in self.config.quotas:
            rooms.append(self.config.quotas[itype] - sum(1 for r in self.live() if r.instance_type == itype))
        if "*" in self.config.quotas:
            rooms.append(self.config.quotas["*"] - sum(1 for _ in self.live()))
        return max(0, min(rooms)) if rooms else None

    # ------------------------------------------------------------------ addresses

    def _allocate(self, amount: int, min_amount: int) -> list[str]:
        # fresh addresses first, freed ones after: a released instance's address is not reused at once,
        # so a container still published there cannot be mistaken for the new instance's
        first, size = (1, self._network.num_addresses - 2) if self._network.num_addresses > 2 \
            else (0, self._network.num_addresses)
        available = size - self._next_host + len(self._freed)
        if available < min_amount:
            raise ApiError("InvalidVSwitchId.IpNotEnough", "The specified VSwitch does not have enough IP "
                           f"addresses (emulator pool {self.config.address_pool}).", 403)
        out: list[str] = []
        while len(out) < amount and self._next_host < size:
            out.append(str(self._network.network_address + first + self._next_host))
            self._next_host += 1
        while len(out) < amount and self._freed:
            out.append(self._freed.popleft())
        return out

    def _allocate_in(self, vswitch_id: str, amount: int, min_amount: int) -> list[str]:
        """Addresses of a VSwitch's CIDR for booted nodes (.1 is the gateway), fresh ones first."""
        net = ipaddress.ip_network(self.config.vswitches[vswitch_id], strict=False)
        freed = self._vswitch_freed.setdefault(vswitch_id, deque())
        first, size = 2, net.num_addresses - 3
        nxt = self._vswitch_next.get(vswitch_id, 0)
        if size - nxt + len(freed) < min_amount:
            raise ApiError("InvalidVSwitchId.IpNotEnough", "The specified VSwitch does not have enough IP "
                           f"addresses ({vswitch_id}: {net}).", 403)
        out: list[str] = []
        while len(out) < amount and nxt < size:
            out.append(str(net.network_address + first + nxt))
            nxt += 1
        while len(out) < amount and freed:
            out.append(freed.popleft())
        self._vswitch_next[vswitch_id] = nxt
        return out

    def _free(self, rec: InstanceRecord) -> None:
        if self.nodes is not None and rec.vswitch_id in self.config.vswitches:
            self._vswitch_freed.setdefault(rec.vswitch_id, deque()).append(rec.private_ip)
        else:
            self._freed.append(rec.private_ip)

    # ------------------------------------------------------------------ stop, delete, tag

    def find(self, region: str, ids: Iterable[str]) -> tuple[list[InstanceRecord], list[str]]:
        found, missing = [], []
        for iid in ids:
            rec = self.instances.get(iid)
            if rec is None or rec.deleted_at is not None or rec.region != region:
                missing.append(iid)
            else:
                found.append(rec)
        return found, missing

    def existing(self, region: str, ids: Iterable[str]) -> list[InstanceRecord]:
        """The live instances ``ids`` of ``region``; ``InvalidInstanceId.NotFound`` (404) if any is not."""
        found, missing = self.find(region, ids)
        if missing:
            raise ApiError("InvalidInstanceId.NotFound",
                           f"The specified InstanceId does not exist: {', '.join(missing[:5])}.", 404)
        return found

    def delete(self, region: str, ids: list[str], force: bool, dry_run: bool = False) -> None:
        with self.lock:
            found = self.existing(region, ids)
            now = self.clock()
            if not force:
                busy = [r.id for r in found if self.status(r, now) != "Stopped"]
                if busy:
                    raise ApiError("IncorrectInstanceStatus", "The current status of the resource does not "
                                   f"support this operation ({busy[0]} is not Stopped; use Force).", 403)
            if dry_run:
                raise ApiError("DryRunOperation", "Request validation has been passed with DryRun flag set.")
            for rec in found:
                rec.deleted_at = now
                self._free(rec)
                if self.nodes is not None:
                    self.nodes.delete_instance(rec.id)
                key = self._stock_key(rec.zone, rec.instance_type)
                if key is not None and rec.stopped_mode != "StopCharging":  # that one gave it back already
                    self.config.stock[key] += 1
            self.save()
            logger.info("DeleteInstances %s", ",".join(ids))

    def stop(self, region: str, ids: list[str], mode: str = "KeepCharging",
             force: bool = False) -> list[dict[str, str]]:
        """StopInstances. ``mode`` StopCharging (economical mode) applies to pay-as-you-go instances only; the
        API does not refuse it for others (subscription ones), it stops them in KeepCharging. A StopCharging
        instance gives its compute resources back: its type's stock grows by one until it starts again."""
        with self.lock:
            found = self.existing(region, ids)
            now = self.clock()
            out = []
            for rec in found:
                before = self.status(rec, now)
                if before not in ("Running", "Stopping", "Stopped"):
                    raise ApiError("IncorrectInstanceStatus", "The current status of the resource does not "
                                   f"support this operation ({rec.id} is {before}).", 403)
                if rec.stopped_at is None:
                    rec.stopped_at = now
                    rec.stopped_mode = mode if rec.charge_type == "PostPaid" else "KeepCharging"
                    if rec.stopped_mode == "StopCharging":
                        key = self._stock_key(rec.zone, rec.instance_type)
                        if key is not None:
                            self.config.stock[key] += 1
                    if self.nodes is not None:
                        self.nodes.stop_instance(rec.id, force)
                out.append({"InstanceId": rec.id, "Code": "200", "Message": "success",
                            "PreviousStatus": before, "CurrentStatus": self.status(rec, now)})
            self.save()
            return out

    def start(self, region: str, ids: list[str]) -> list[dict[str, str]]:
        """StartInstances: a Stopped instance boots again (same disk, same address)."""
        with self.lock:
            found = self.existing(region, ids)
            now = self.clock()
            out = []
            for rec in found:
                before = self.status(rec, now)
                if before not in ("Stopped", "Starting", "Running", "Pending"):
                    raise ApiError("IncorrectInstanceStatus", "The current status of the resource does not "
                                   f"support this operation ({rec.id} is {before}).", 403)
                if before == "Stopped":
                    if rec.stopped_mode == "StopCharging":
                        # its compute resources were given back: starting takes them from the stock again
                        # ("Due to insufficient resources, starting may fail", the API's own warning)
                        key = self._stock_key(rec.zone, rec.instance_type)
                        if key is not None and self.config.stock[key] < 1:
                            raise ApiError("OperationDenied.NoStock", "The resource is out of stock in the "
                                           "specified zone. Please try other types, or choose other regions "
                                           "and zones.", 403)
                        if key is not None:
                            self.config.stock[key] -= 1
                    rec.stopped_at, rec.started_at, rec.stopped_mode = None, now, ""
                    if self.nodes is not None:
                        self.nodes.start_instance(rec.id)
                out.append({"InstanceId": rec.id, "Code": "200", "Message": "success",
                            "PreviousStatus": before, "CurrentStatus": self.status(rec, now)})
            self.save()
            return out

    def tag(self, region: str, ids: list[str], tags: list[tuple[str, str | None]]) -> None:
        with self.lock:
            found, missing = self.find(region, ids)
            if missing:
                raise ApiError("InvalidResourceId.NotFound",
                               f"The specified ResourceIds are not found: {', '.join(missing[:5])}.", 404)
            for rec in found:
                if len(set(rec.tags) | {k for k, _ in tags}) > 20:
                    raise ApiError("InvalidTagCount", f"{rec.id} would carry more than 20 tags.")
            for rec in found:
                rec.tags.update({k: v or "" for k, v in tags})
            self.save()

    # ------------------------------------------------------------------ admin views

    def docker_endpoint(self, rec: InstanceRecord) -> str:
        """Where the instance's Docker Engine answers: the booted node's own address, or the shared engine."""
        return f"tcp://{rec.private_ip}:2376" if self.nodes is not None else self.config.docker_endpoint

    def cost(self) -> float:
        """Money spent so far on every instance ever launched (released ones up to their release)."""
        with self.lock:
            now = self.clock()
            return round(sum(r.price_per_hour * ((r.deleted_at or now) - r.created_at) / 3600.0
                             for r in self.instances.values()), 6)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            now = self.clock()
            live = [dict(asdict(r), status=self.status(r, now), docker_endpoint=self.docker_endpoint(r))
                    for r in self.live()]
            return {
                "instances": live,
                "live": len(live),
                "released": sum(1 for r in self.instances.values() if r.deleted_at is not None),
                "launched": len(self.instances),
                "cost": self.cost(),
                "docker_endpoint": self.config.docker_endpoint,
                "address_pool": self.config.address_pool,
                "boot_delay": self.config.boot_delay,
                "stock": dict(self.config.stock),
                "quotas": dict(self.config.quotas),
                "images": [asdict(i) for i in self.images.values() if i.deleted_at is None],
            }

    # ------------------------------------------------------------------ persistence

    def save(self) -> None:
        """Write the state file atomically (temp file, fsync, rename). Caller holds the lock. Every change
        of the instances ends here: it also moves ``version`` (what cached listings are valid for)."""
        self.version += 1
        if not self.config.state_file:
            return
        path = Path(self.config.state_file)
        data = {
            "version": 1,
            "seq": self._seq,
            "next_host": self._next_host,
            "freed": list(self._freed),
            "address_pool": self.config.address_pool,
            "stock": self.config.stock,
            "quotas": self.config.quotas,
            "instances": [asdict(r) for r in self.instances.values()],
            "tokens": self.tokens,
            "user_data": self.user_data,
            "vswitch_next": self._vswitch_next,
            "vswitch_freed": {k: list(v) for k, v in self._vswitch_freed.items()},
            "images": [asdict(i) for i in self.images.values()],
        }
        fd, tmp = tempfile.mkstemp(prefix=".ecs-state-", dir=str(path.parent))
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            if data.get("address_pool") != self.config.address_pool:
                raise ValueError(f"it was written with --address-pool {data.get('address_pool')}, "
                                 f"not {self.config.address_pool}")
            self._seq = int(data["seq"])
            self._next_host = int(data["next_host"])
            self._freed = deque(data["freed"])
            # flags given at start-up win over the saved stock and quotas
            self.config.stock = {**data.get("stock", {}), **self.config.stock}
            self.config.quotas = {**data.get("quotas", {}), **self.config.quotas}
            self.instances = {r["id"]: InstanceRecord(**r) for r in data["instances"]}
            self.tokens = dict(data["tokens"])
            self.user_data = dict(data.get("user_data", {}))
            self._vswitch_next = {k: int(v) for k, v in data.get("vswitch_next", {}).items()}
            self._vswitch_freed = {k: deque(v) for k, v in data.get("vswitch_freed", {}).items()}
            self.images = {i["id"]: ImageRecord(**i) for i in data.get("images", [])}
            for image in self.images.values():  # its capture ran in the process that stopped
                if image.status == "Creating":
                    image.status, image.error = "CreateFailed", "the emulator restarted while creating it"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot load emulator state {path}: {exc}") from exc
        logger.info("loaded %d instances from %s", len(self.instances), path)


def _hostname(rec: InstanceRecord) -> str:
    """The booted node's host name: HostName as RunInstances set it, else the API's default for the id
    (names may repeat within a batch, host names must not)."""
    from lab.emulator.ecs_shapes import default_host_name

    name = rec.host_name or default_host_name(rec.id)
    return "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower()).strip("-")[:63] or rec.id
