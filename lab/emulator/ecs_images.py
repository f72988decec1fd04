"""The ECS emulator's images: CreateImage, DescribeImages and DeleteImage with the real API's shapes and
errors. DescribeImages lists the built-in node images of ``node_images`` as public (``system``) images and
the custom images made by CreateImage (``m-`` ids, owner ``self``). A custom image is ``Creating`` until its
content is captured (with booted nodes: ``nodes.NodeHost.create_image`` commits the instance's machine and
snapshots its Docker volume; without, at once), then ``Available``, or ``CreateFailed``. RunInstances boots
an Available custom image (``EcsState.check_image``); DeleteImage refuses an image instances use unless
``Force``. Registered by ``ecs.install_ecs``; records live in ``EcsState.images`` and its state file."""

from __future__ import annotations

import re
import secrets
import string
import time
from typing import TYPE_CHECKING, Any

from lab.emulator.ecs_records import ImageRecord
from lab.emulator.ecs_shapes import os_facts
from lab.emulator.node_images import IMAGES, NodeImageCache
from lab.emulator.rpc import RpcServer
from lab.emulator.rpc_wire import ApiError, RpcRequest

if TYPE_CHECKING:
    from lab.emulator.ecs_state import EcsState

__all__ = ["install_images"]

ACCOUNT_ID = 1234567890123456  # the emulated account: ImageOwnerId of custom images
SYSTEM_DISK_GIB = 20  # the system disk of every image (the public ids say 20G)
_STATUSES = ("Creating", "Waiting", "Available", "UnAvailable", "CreateFailed", "Deprecated")
_ID_ALPHABET = string.ascii_lowercase + string.digits
# 2-128 characters, starting with a letter; not http:// or https:// (the API's ImageName rule)
_NAME = re.compile(r"^[A-Za-z\u4e00-\u9fff][A-Za-z0-9\u4e00-\u9fff_.:()\-/ ]{1,127}$")


def _time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _image_json(*, image_id: str, name: str, description: str, source: str, owner: str, status: str,
                created_at: float, usage: str, tags: dict[str, str]) -> dict[str, Any]:
    """One ``Images.Image[]`` entry, with the fields of the official SDK's DescribeImagesResponseBodyImagesImage."""
    os_name, os_name_en, os_type = os_facts(source)
    public = owner == "system"
    return {
        "ImageId": image_id,
        "ImageName": name,
        "ImageVersion": "",
        "ImageFamily": "",
        "Description": description,
        "Architecture": "x86_64",
        "Platform": os_name_en.split(" ")[0] if os_name_en else "",
        "OSName": os_name,
        "OSNameEn": os_name_en,
        "OSType": os_type,
        "Size": SYSTEM_DISK_GIB,
        "Status": status,
        "Progress": "100%" if status == "Available" else "0%" if status == "Creating" else "",
        "ImageOwnerAlias": owner,
        "ImageOwnerId": 0 if public else ACCOUNT_ID,
        "IsPublic": public,
        "IsSelfShared": "",
        "IsSubscribed": False,
        "IsCopied": False,
        "IsSupportCloudinit": True,
        "IsSupportIoOptimized": True,
        "LoginAsNonRootSupported": False,
        "BootMode": "BIOS",
        "Usage": usage,
        "CreationTime": _time(created_at),
        "ProductCode": "",
        "SupplierName": "",
        "ResourceGroupId": "",
        "LicenseType": "",
        "Features": {"NvmeSupport": "unsupported", "ImdsSupport": "v1"},
        "Tags": {"Tag": [{"TagKey": k, "TagValue": v} for k, v in tags.items()]},
        "DiskDeviceMappings": {"DiskDeviceMapping": [{
            "Device": "/dev/xvda", "Type": "system", "Size": str(SYSTEM_DISK_GIB), "Format": "",
            "SnapshotId": "" if public else "s-" + image_id[2:], "ImportOSSBucket": "", "ImportOSSObject": "",
            "Progress": "100%" if status == "Available" else "", "RemainTime": 0, "Encrypted": "false"}]},
    }


class _ImageHandlers:
    def __init__(self, state: EcsState) -> None:
        self.state = state
        self.cache = NodeImageCache()
        self.started = time.time()

    def create_image(self, req: RpcRequest) -> dict[str, Any]:
        region = req.require("RegionId")
        if req.get("SnapshotId") or req.get("DiskDeviceMapping.1.SnapshotId"):
            raise ApiError("InvalidParameter.NotSupported", "The emulator creates images from an instance only "
                           "(InstanceId), not from snapshots.")
        iid = req.require("InstanceId")
        name = req.get("ImageName") or ""
        if name and (not _NAME.match(name) or name.startswith(("http://", "https://"))):
            raise ApiError("InvalidImageName.Malformed", "The ImageName must be 2 to 128 characters long, start "
                           "with a letter and not start with http:// or https://.")
        description = req.get("Description") or ""
        if len(description) > 256 or description.startswith(("http://", "https://")):
            raise ApiError("InvalidDescription.Malformed", "The Description must be at most 256 characters and "
                           "not start with http:// or https://.")
        token = req.get("ClientToken") or ""
        tags = {k: v or "" for k, v in req.tags(limit=20)}
        state = self.state
        with state.lock:
            if token:
                done = next((r for r in state.images.values() if r.client_token == token and r.region == region),
                            None)
                if done is not None:
                    return {"ImageId": done.id}
            found, _ = state.find(region, [iid])
            if not found:
                raise ApiError("InvalidInstanceId.NotFound", f"The specified InstanceId {iid} does not exist.", 404)
            rec = found[0]
            status = state.status(rec)
            if status not in ("Running", "Stopped"):
                raise ApiError("IncorrectInstanceStatus", "The current status of the resource does not support "
                               f"this operation ({iid} is {status}; Running or Stopped needed).", 403)
            if name and any(r.name == name and r.deleted_at is None and r.region == region
                            for r in state.images.values()):
                raise ApiError("InvalidImageName.Duplicated", f"The specified ImageName {name!r} has already "
                               "been used.")
            image_id = _new_id(state.images)
            image = ImageRecord(id=image_id, region=region, name=name or image_id, description=description,
                                instance_id=iid, source_image_id=_source_of(state, rec.image_id),
                                created_at=state.clock(), tags=tags, client_token=token)
            state.images[image_id] = image
            state.save()
        if state.nodes is not None:
            state.nodes.create_image(iid, image_id, lambda ok, error: self._finished(image_id, ok, error))
        else:
            self._finished(image_id, True, "")
        return {"ImageId": image_id}

    def _finished(self, image_id: str, ok: bool, error: str) -> None:
        with self.state.lock:
            image = self.state.images.get(image_id)
            if image is None or image.deleted_at is not None:
                return
            image.status, image.error = ("Available", "") if ok else ("CreateFailed", error)
            self.state.save()

    def describe_images(self, req: RpcRequest) -> dict[str, Any]:
        region = req.require("RegionId")
        ids = {i.strip() for i in (req.get("ImageId") or "").split(",") if i.strip()}
        name = req.get("ImageName")
        owner = req.get("ImageOwnerAlias")
        if owner is not None and owner not in ("system", "self", "others", "marketplace"):
            raise ApiError("InvalidImageOwnerAlias.ValueNotSupported", f"ImageOwnerAlias {owner!r} is not one of "
                           "system, self, others, marketplace.")
        raw_status = req.get("Status") or "Available"
        wanted = set(_STATUSES) if raw_status == "ALL" else {s.strip() for s in raw_status.split(",")}
        if not wanted <= set(_STATUSES):
            raise ApiError("InvalidStatus.ValueNotSupported", f"Status {raw_status!r} is not valid.")
        usage = req.get("Usage")
        tag_filters = req.tags(limit=20)
        number, size = req.get_int("PageNumber", 1, 1), req.get_int("PageSize", 10, 1, 100)
        rows: list[dict[str, Any]] = []
        with self.state.lock:
            used = {r.image_id for r in self.state.live()}
            if owner in (None, "system"):
                for img in IMAGES:
                    ok = self.state.nodes is None or self.cache.is_built(img.recipe)
                    rows.append(_image_json(image_id=img.image_id, name=img.image_id, description=img.os_name,
                                            source=img.image_id, owner="system", created_at=self.started,
                                            status="Available" if ok else "UnAvailable",
                                            usage="instance" if img.image_id in used else "none", tags={}))
            if owner in (None, "self"):
                for rec in sorted(self.state.images.values(), key=lambda r: -r.created_at):  # newest first
                    if rec.deleted_at is None and rec.region == region:
                        rows.append(_image_json(image_id=rec.id, name=rec.name, description=rec.description,
                                                source=rec.source_image_id, owner="self", status=rec.status,
                                                created_at=rec.created_at, tags=rec.tags,
                                                usage="instance" if rec.id in used else "none"))
        rows = [r for r in rows if (not ids or r["ImageId"] in ids) and r["Status"] in wanted
                and (name is None or name.lower() in r["ImageName"].lower()) and (usage is None or r["Usage"] == usage)
                and all(_has_tag(r, k, v) for k, v in tag_filters)]
        return {"RegionId": region, "TotalCount": len(rows), "PageNumber": number, "PageSize": size,
                "Images": {"Image": rows[(number - 1) * size: number * size]}}

    def delete_image(self, req: RpcRequest) -> dict[str, Any]:
        region = req.require("RegionId")
        image_id = req.require("ImageId")
        force = req.get_bool("Force")
        state = self.state
        with state.lock:
            rec = state.images.get(image_id)
            if rec is None or rec.region != region:
                if any(i.image_id == image_id for i in IMAGES):
                    raise ApiError("InvalidImageId.NotFound", f"The specified ImageId {image_id} is not a custom "
                                   "image of this account.", 404)
                return {}  # "If the specified custom image does not exist, the request is ignored."
            if rec.deleted_at is not None:
                return {}
            users = sorted(r.id for r in state.live() if r.image_id == image_id)
            if users and not force:
                raise ApiError("ImageUsingByInstance", "The specified image has been used to create instances "
                               f"({', '.join(users[:5])}); use Force to delete it anyway.", 403)
            if req.get_bool("DryRun"):
                raise ApiError("DryRunOperation", "Request validation has been passed with DryRun flag set.")
            rec.deleted_at = state.clock()
            state.save()
        if state.nodes is not None:
            state.nodes.delete_image(image_id)
        return {}


def _has_tag(row: dict[str, Any], key: str, value: str | None) -> bool:
    return any(t["TagKey"] == key and (value is None or t["TagValue"] == value) for t in row["Tags"]["Tag"])


def _new_id(taken: dict[str, ImageRecord]) -> str:
    while True:
        candidate = "m-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))
        if candidate not in taken:
            return candidate


def _source_of(state: EcsState, image_id: str) -> str:
    """The public image a chain of custom images started from (its OS facts)."""
    seen = 0
    while image_id in state.images and seen < 100:
        image_id, seen = state.images[image_id].source_image_id, seen + 1
    return image_id


def install_images(server: RpcServer, state: EcsState, version: str) -> None:
    h = _ImageHandlers(state)
    server.register("Ecs", version, "CreateImage", h.create_image)
    server.register("Ecs", version, "DescribeImages", h.describe_images)
    server.register("Ecs", version, "DeleteImage", h.delete_image)
