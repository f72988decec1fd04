"""Replicator against two real docker-registry processes on loopback: cold, warm and interrupted copies,
manifest lists and OCI indexes, digest preservation, cross-repository mounts, corrupt blobs."""

from __future__ import annotations

import hashlib
import json
import time

import httpx
import pytest

from adapters.registry.client import RegistryOptions
from adapters.registry.replication import Replicator
from controller.errors import IntegrityError, NotFoundError
from lab.localregistry import LocalRegistry
from tests.support.ociimage import ImagePusher

MB = 1 << 20


@pytest.fixture
def replicator():
    r = Replicator(RegistryOptions(concurrency=3))
    yield r
    r.close()


def manifest_bytes(reg: LocalRegistry, repo: str, ref: str) -> tuple[bytes, str]:
    accept = ("application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, "
              "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
    r = httpx.get(f"http://{reg.address}/v2/{repo}/manifests/{ref}", headers={"Accept": accept})
    r.raise_for_status()
    return r.content, r.headers["content-type"]


def blob_present(reg: LocalRegistry, repo: str, digest: str) -> bool:
    return httpx.head(f"http://{reg.address}/v2/{repo}/blobs/{digest}").status_code == 200


def test_cold_then_warm_copy_preserves_digest_and_bytes(replicator, src_registry, dst_registry, src_pusher,
                                                        repo_name):
    img = src_pusher.image(repo_name, "v1", [3 * MB, 1 * MB, 2 * MB], seed=11)
    src, dst = f"{src_registry.address}/{repo_name}:v1", f"{dst_registry.address}/{repo_name}:v1"
    seen: dict[str, int] = {}
    events: list[tuple[str, str]] = []

    cold = replicator.replicate(src, dst, progress=lambda d, done, total: seen.__setitem__(d, done),
                                listener=lambda d, size, kind: events.append((d, kind)))

    assert cold.digest == img.digest
    assert (cold.copied_blobs, cold.skipped_blobs, cold.mounted_blobs) == (4, 0, 0)
    assert cold.bytes_copied == sum(size for _, size in img.blobs)
    assert sorted(events) == sorted((d, "copied") for d, _ in img.blobs)
    assert all(seen[d] == size for d, size in img.blobs)  # progress reached every blob's full size
    src_bytes, src_type = manifest_bytes(src_registry, repo_name, "v1")
    dst_bytes, dst_type = manifest_bytes(dst_registry, repo_name, "v1")
    assert dst_bytes == src_bytes and dst_type == src_type
    assert "sha256:" + hashlib.sha256(dst_bytes).hexdigest() == img.digest
    for digest, size in img.blobs:  # every blob arrived whole (the registry verified the digest on PUT)
        r = httpx.get(f"http://{dst_registry.address}/v2/{repo_name}/blobs/{digest}")
        assert "sha256:" + hashlib.sha256(r.content).hexdigest() == digest and len(r.content) == size

    warm = replicator.replicate(src, dst)
    assert warm.digest == img.digest
    assert (warm.copied_blobs, warm.skipped_blobs, warm.bytes_copied) == (0, 4, 0)


def test_ensure_is_cheap_when_present_and_copies_when_source_moves(replicator, src_registry, dst_registry,
                                                                   src_pusher, repo_name):
    first = src_pusher.image(repo_name, "stable", [MB], seed=21)
    src, dst = f"{src_registry.address}/{repo_name}:stable", f"{dst_registry.address}/{repo_name}:stable"
    assert replicator.ensure(src, dst) == first.digest
    started = time.perf_counter()
    assert replicator.ensure(src, dst) == first.digest
    warm_s = time.perf_counter() - started
    print(f"ensure warm path: {warm_s * 1000:.1f} ms")
    assert replicator.has(f"{dst_registry.address}/{repo_name}@{first.digest}")

    moved = src_pusher.image(repo_name, "stable", [MB, MB], seed=22)  # the on-prem tag moves
    assert replicator.ensure(src, dst) == moved.digest
    assert manifest_bytes(dst_registry, repo_name, "stable")[0] == manifest_bytes(src_registry, repo_name, "stable")[0]


def test_interrupted_copy_resumes_with_only_missing_blobs(src_registry, dst_registry, src_pusher, repo_name):
    img = src_pusher.image(repo_name, "v1", [4 * MB, 3 * MB, 2 * MB, 1 * MB], seed=31)
    src, dst = f"{src_registry.address}/{repo_name}:v1", f"{dst_registry.address}/{repo_name}:v1"

    class Interrupted(Exception):
        pass

    by_size = sorted(img.blobs, key=lambda b: -b[1])
    largest, second_largest = by_size[0][0], by_size[1][0]

    def cut(digest: str, done: int, total: int) -> None:
        if digest == second_largest and 0 < done < total:
            raise Interrupted  # dies mid-stream, as a killed process or dropped link would

    one = Replicator(RegistryOptions(concurrency=1))  # largest first, one at a time: a known cut point
    with pytest.raises(Interrupted):
        one.replicate(src, dst, progress=cut)
    assert blob_present(dst_registry, repo_name, largest)
    assert not blob_present(dst_registry, repo_name, second_largest)  # the aborted upload left nothing
    assert httpx.head(f"http://{dst_registry.address}/v2/{repo_name}/manifests/v1").status_code == 404  # tag last

    again = one.replicate(src, dst)
    one.close()
    assert again.digest == img.digest
    assert (again.skipped_blobs, again.copied_blobs) == (1, 4)
    assert again.bytes_copied == sum(size for _, size in img.blobs) - by_size[0][1]


@pytest.mark.parametrize("oci", [False, True], ids=["docker-manifest-list", "oci-index"])
def test_index_all_platforms_and_platform_filter(replicator, src_registry, dst_registry, src_pusher, repo_name, oci):
    amd = src_pusher.image(repo_name, None, [MB, MB], seed=41, oci=oci, arch="amd64")
    arm = src_pusher.image(repo_name, None, [MB], seed=42, oci=oci, arch="arm64", variant="v8")
    index = src_pusher.index(repo_name, "multi", [(amd, {"os": "linux", "architecture": "amd64"}),
                                                  (arm, {"os": "linux", "architecture": "arm64", "variant": "v8"})],
                             oci=oci)
    src = f"{src_registry.address}/{repo_name}:multi"

    every = replicator.replicate(src, f"{dst_registry.address}/{repo_name}:multi")
    assert every.digest == index
    assert every.copied_blobs == 5  # 2 configs + 3 layers
    assert manifest_bytes(dst_registry, repo_name, "multi")[0] == manifest_bytes(src_registry, repo_name, "multi")[0]
    for child in (amd, arm):
        assert manifest_bytes(dst_registry, repo_name, child.digest)[0] == \
            manifest_bytes(src_registry, repo_name, child.digest)[0]

    filtered_repo = repo_name + "-arm"
    only_arm = replicator.replicate(src, f"{dst_registry.address}/{filtered_repo}:multi", platforms=["linux/arm64"])
    body, media = manifest_bytes(dst_registry, filtered_repo, "multi")
    doc = json.loads(body)
    assert media.startswith(doc["mediaType"])
    assert [m["digest"] for m in doc["manifests"]] == [arm.digest]  # the child keeps its digest
    assert only_arm.digest == "sha256:" + hashlib.sha256(body).hexdigest()
    assert only_arm.copied_blobs == 2
    assert not blob_present(dst_registry, filtered_repo, amd.layers[0][0])
    # the filtered copy is recognised as present on the next ensure (no copy, same digest)
    assert replicator.ensure(src, f"{dst_registry.address}/{filtered_repo}:multi", ["linux/arm64"]) == only_arm.digest

    with pytest.raises(NotFoundError, match="linux/s390x.*linux/amd64, linux/arm64/v8"):
        replicator.replicate(src, f"{dst_registry.address}/{repo_name}-none:multi", platforms=["linux/s390x"])


def test_same_registry_copy_mounts_blobs(replicator, src_registry, src_pusher, repo_name):
    img = src_pusher.image(repo_name, "v1", [2 * MB, MB], seed=51)
    result = replicator.replicate(f"{src_registry.address}/{repo_name}:v1", f"{src_registry.address}/{repo_name}-copy:v2")
    assert result.digest == img.digest
    assert (result.mounted_blobs, result.copied_blobs, result.bytes_copied) == (3, 0, 0)
    assert manifest_bytes(src_registry, repo_name + "-copy", "v2")[0] == manifest_bytes(src_registry, repo_name, "v1")[0]


def test_chunked_uploads_when_configured(src_registry, dst_registry, src_pusher, repo_name):
    img = src_pusher.image(repo_name, "v1", [3 * MB + 17], seed=61)
    r = Replicator(RegistryOptions(chunk_size=MB))  # 4 PATCH parts, the last one short
    try:
        result = r.replicate(f"{src_registry.address}/{repo_name}:v1", f"{dst_registry.address}/{repo_name}:v1")
    finally:
        r.close()
    assert result.digest == img.digest and result.copied_blobs == 2
    layer, size = img.layers[0]
    data = httpx.get(f"http://{dst_registry.address}/v2/{repo_name}/blobs/{layer}").content
    assert len(data) == size and "sha256:" + hashlib.sha256(data).hexdigest() == layer


@pytest.mark.parametrize("chunk_size", [None, MB], ids=["monolithic", "chunked"])
def test_corrupt_source_blob_is_detected_and_never_lands(src_registry, dst_registry, src_pusher, repo_name,
                                                         chunk_size):
    img = src_pusher.image(repo_name, "v1", [2 * MB], seed=71 if chunk_size is None else 72)
    layer, size = img.layers[0]
    path = src_registry.blob_path(layer)
    data = bytearray(path.read_bytes())
    data[size // 2] ^= 0xFF  # one flipped bit-pattern in the middle, same size: only the hash can tell
    path.write_bytes(bytes(data))

    r = Replicator(RegistryOptions(chunk_size=chunk_size, backoff=0.01))
    try:
        with pytest.raises(IntegrityError, match=layer):
            r.replicate(f"{src_registry.address}/{repo_name}:v1", f"{dst_registry.address}/{repo_name}:v1")
    finally:
        r.close()
    assert not blob_present(dst_registry, repo_name, layer)
    assert httpx.head(f"http://{dst_registry.address}/v2/{repo_name}/manifests/v1").status_code == 404


def test_missing_source_is_not_found(replicator, src_registry, dst_registry):
    with pytest.raises(NotFoundError, match=f"not found on {src_registry.address}"):
        replicator.replicate(f"{src_registry.address}/nope/never:1", f"{dst_registry.address}/nope/never:1")


def test_transient_source_failure_is_retried(tmp_path, dst_registry, repo_name):
    """A source registry that is down when the copy starts and comes back is waited for (backoff)."""
    import threading

    from lab.localregistry import LocalRegistry as Reg

    src = Reg(tmp_path / "flaky")
    pusher_reg = Reg(tmp_path / "flaky", port=src.port).start()
    pusher = ImagePusher(f"http://{pusher_reg.address}")
    img = pusher.image(repo_name, "v1", [MB], seed=81)
    pusher.close()
    pusher_reg.stop()  # down now; restarted 0.4 s into the copy
    restart = threading.Timer(0.4, src.start)
    restart.start()
    r = Replicator(RegistryOptions(retries=6, backoff=0.2))
    try:
        result = r.replicate(f"{src.address}/{repo_name}:v1", f"{dst_registry.address}/{repo_name}:v1")
    finally:
        r.close()
        restart.join()
        src.stop()
    assert result.digest == img.digest and result.copied_blobs == 2


def test_monolithic_upload_refused_as_too_large_falls_back_to_chunks(src_registry, dst_registry, src_pusher,
                                                                     repo_name, monkeypatch):
    """A registry behind a proxy with a body limit answers 413 to one big PUT: the copy goes on in PATCH
    parts. (The 413 is injected at the client; the parts then go to the real registry.)"""
    from controller.errors import PermanentError

    img = src_pusher.image(repo_name, "v1", [3 * MB], seed=91)
    r = Replicator(RegistryOptions(concurrency=1))
    refused = []

    def too_large(host, repo, location, digest, size, body):
        refused.append(digest)
        raise PermanentError(f"registry {host} refused upload: request too large", code="TOO_LARGE")

    monkeypatch.setattr(r.client, "put_blob", too_large)
    patches = []
    real_patch = r.client.patch_blob
    monkeypatch.setattr(r.client, "patch_blob", lambda *a: patches.append(a[3]) or real_patch(*a))
    try:
        result = r.replicate(f"{src_registry.address}/{repo_name}:v1", f"{dst_registry.address}/{repo_name}:v1")
    finally:
        r.close()
    assert result.digest == img.digest and result.copied_blobs == 2
    assert len(refused) == 1  # the first blob was refused once; the client remembered and chunked the rest
    assert patches == [0, 0]  # one part (offset 0) each: the 3 MB layer fits in a 16 MiB part, so does the config
    assert blob_present(dst_registry, repo_name, img.layers[0][0])
