"""Custom images on the ECS emulator (shared-engine instances, no machines): CreateImage, DescribeImages and
DeleteImage through ``EcsComputePool`` (aliyun-python-sdk-ecs) and the official generated SDK, with the real
API's errors; RunInstances boots a custom image; the bake's retention keeps the newest images and never
deletes one instances run. The booted-node side (the image's content) is tests/controller/loop/test_bake.py."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.utils_models import Config

from adapters.aliyun.ecs import EcsComputePool
from controller.errors import BurstError, NotFoundError
from controller.loop.bake import retain
from controller.ports import TAG_CONTROLLER, TAG_POLICY, InstanceState, LaunchSpec
from controller.store.models import NodeImageRow
from controller.store.state import StateStore, sqlite_url
from lab.emulator.ecs import EcsEmulator
from lab.emulator.node_images import IMAGES
from tests.fixtures_ecs import KEY_ID, KEY_SECRET, REGION, new_emulator, new_pool

BASE = "debian_12_x64_20G_alibase.vhd"
OWN = {TAG_CONTROLLER: "img-test", TAG_POLICY: "web"}


@pytest.fixture
def emu() -> Iterator[EcsEmulator]:
    e = new_emulator(boot_delay=0.2)
    e.start()
    yield e
    e.stop()


@pytest.fixture
def pool(emu: EcsEmulator) -> Iterator[EcsComputePool]:
    p = new_pool(emu)
    yield p
    p.close()


def _spec(image_id: str) -> LaunchSpec:
    return LaunchSpec(region=REGION, instance_types=("ecs.c6.large",), zones=(f"{REGION}-a",), image_id=image_id,
                      security_group_id="sg-t", tags={TAG_CONTROLLER: "img-test"})


def _running(pool: EcsComputePool, image_id: str, token: str) -> str:
    [inst] = pool.launch(_spec(image_id), 1, token)
    deadline = time.monotonic() + 10
    while pool.get([inst.id])[0].state != InstanceState.RUNNING:
        assert time.monotonic() < deadline, "not Running"
        time.sleep(0.1)
    return inst.id


def test_an_image_of_an_instance_boots_new_instances_and_is_kept_while_they_run(pool):
    source = _running(pool, BASE, "src")
    image_id = pool.create_image(source, "web-baked-1", OWN, "tok-1")
    assert image_id.startswith("m-") and len(image_id) == 22
    assert pool.create_image(source, "web-baked-1", OWN, "tok-1") == image_id  # same token, same image
    [listed] = pool.images(OWN)
    assert (listed.id, listed.name, listed.status, listed.tags[TAG_POLICY]) == (image_id, "web-baked-1",
                                                                                 "Available", "web")
    assert abs((listed.created_at or 0) - time.time()) < 5
    pool.release([source])
    user = _running(pool, image_id, "user")
    assert pool.images(OWN)[0].in_use
    assert pool.delete_image(image_id) is False  # ImageUsingByInstance: kept
    assert [i.id for i in pool.images(OWN)] == [image_id]
    pool.release([user])
    assert pool.delete_image(image_id) is True
    assert pool.images(OWN) == []
    assert pool.delete_image(image_id) is True  # a gone image: "the request is ignored"
    with pytest.raises(BurstError) as err:
        pool.launch(_spec(image_id), 1, "after-delete")
    assert err.value.code == "InvalidImageId.NotFound"


def test_create_image_refuses_like_the_api(pool, make_ecs_emulator):
    iid = _running(pool, BASE, "errs")
    pool.create_image(iid, "taken-name", OWN, "t-1")
    cases = [("i-nope", "another", NotFoundError, "InvalidInstanceId.NotFound"),
             (iid, "taken-name", BurstError, "InvalidImageName.Duplicated"),
             (iid, "9starts-with-a-digit", BurstError, "InvalidImageName.Malformed")]
    for instance, name, kind, code in cases:
        with pytest.raises(kind) as err:
            pool.create_image(instance, name, OWN, f"t-{name}")
        assert err.value.code == code, err.value
    slow = make_ecs_emulator(boot_delay=60)
    slow_pool = new_pool(slow)
    [pending] = slow_pool.launch(_spec(BASE), 1, "pending")
    with pytest.raises(BurstError) as err:
        slow_pool.create_image(pending.id, "too-early", OWN, "t-early")
    assert err.value.code == "IncorrectInstanceStatus"
    slow_pool.close()
    with pytest.raises(BurstError) as err:
        pool.launch(_spec("m-doesnotexist00000000"), 1, "unknown-image")
    assert err.value.code == "InvalidImageId.NotFound"


def test_the_official_sdk_reads_public_and_custom_images(emu, pool, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    client = Client(Config(access_key_id=KEY_ID, access_key_secret=KEY_SECRET, endpoint=emu.endpoint,
                           protocol="http", region_id=REGION, read_timeout=5000, connect_timeout=2000))
    iid = _running(pool, BASE, "sdk")
    made = client.create_image(ecs_models.CreateImageRequest(
        region_id=REGION, instance_id=iid, image_name="sdk-image", description="made by the official SDK",
        tag=[ecs_models.CreateImageRequestTag(key="team", value="web")]))
    image_id = made.body.image_id
    answer = client.describe_images(ecs_models.DescribeImagesRequest(region_id=REGION, page_size=50)).body
    by_id = {i.image_id: i for i in answer.images.image}
    assert answer.total_count == len(IMAGES) + 1 and answer.region_id == REGION
    public = by_id[BASE]
    assert (public.image_owner_alias, public.is_public, public.status, public.ostype) == ("system", True,
                                                                                        "Available", "linux")
    assert public.usage == "instance"  # the instance above runs it
    custom = by_id[image_id]
    assert (custom.image_owner_alias, custom.is_public, custom.image_name, custom.description) == (
        "self", False, "sdk-image", "made by the official SDK")
    assert custom.osname_en == public.osname_en and custom.size == 20 and custom.progress == "100%"
    assert custom.disk_device_mappings.disk_device_mapping[0].type == "system"
    assert [(t.tag_key, t.tag_value) for t in custom.tags.tag] == [("team", "web")]
    mine = client.describe_images(ecs_models.DescribeImagesRequest(
        region_id=REGION, image_owner_alias="self", image_id=f"{image_id},{BASE}")).body
    assert [i.image_id for i in mine.images.image] == [image_id]
    with pytest.raises(ClientException) as err:
        client.delete_image(ecs_models.DeleteImageRequest(region_id=REGION, image_id=BASE))
    assert err.value.code == "InvalidImageId.NotFound"
    client.delete_image(ecs_models.DeleteImageRequest(region_id=REGION, image_id=image_id))
    left = client.describe_images(ecs_models.DescribeImagesRequest(region_id=REGION, image_owner_alias="self"))
    assert left.body.images.image == []


def test_retention_keeps_the_newest_and_never_one_in_use(pool, tmp_path):
    store = StateStore(sqlite_url(tmp_path / "state.db"))
    iid = _running(pool, BASE, "ret")
    made = []
    for n in range(4):
        made.append(pool.create_image(iid, f"web-{n}", OWN, f"ret-{n}"))
        store.record_node_image(NodeImageRow(image_id=made[-1], policy="web", spec_hash=f"h{n}", workload_image="x",
                                             base_image_id=BASE, created_at=time.time() + n))
        time.sleep(1.05)  # CreationTime has second precision: one image per second orders them
    user = _running(pool, made[0], "uses-the-oldest")
    deleted, in_use = retain(pool, store, "img-test", "web", keep=2)
    assert sorted(deleted) == [made[1]] and in_use == [made[0]]
    assert [i.id for i in pool.images(OWN)] == [made[3], made[2], made[0]]
    assert [r.image_id for r in store.node_images("web")] == [made[3], made[2], made[0]]
    assert store.baked_image("web", "h3") == made[3] and store.baked_image("web", "h1") is None
    pool.release([user])
    deleted, in_use = retain(pool, store, "img-test", "web", keep=2)
    assert deleted == [made[0]] and in_use == []
    store.close()
